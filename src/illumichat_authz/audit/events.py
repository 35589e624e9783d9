"""One decision as one log event: a fixed allow-list of fields, each scrubbed.

Redaction by construction: an event is built from the :class:`~illumichat_authz.Decision`
(route *template*, action, reason, status, the resource's kind and id, the principal's id
and credential kind) and two request headers (``x-request-id``, ``traceparent``), never
from a header, cookie, body, path or message as a whole. So a token, cookie, API key or
signature can only reach an event through a field a caller controls (a resource id in the
path, an ``x-request-id``), and every such string is checked against the shapes of our
credentials (:func:`scrub`): a JWT, JWS or JWE, an API key, a Twilio signature, a bearer
or cookie header, or anything longer than :data:`MAX_FIELD_CHARS`, is ``"[redacted]"``.

Pure: the decision log (``audit.log``) builds events off the request path.
"""

from __future__ import annotations

import re
import time
from typing import Any, Final, NamedTuple

from ..decision import Decision
from ..request import RequestFacts

__all__ = [
    "FIELDS",
    "MAX_FIELD_CHARS",
    "REDACTED",
    "DecisionEvent",
    "EventBuilder",
    "build_event",
    "scrub",
]

REDACTED: Final = "[redacted]"
MAX_FIELD_CHARS: Final = 200

#: Lower-case text whose presence marks a credential (or a header or cookie holding one).
_MARKERS = ("ick_", "session-token", "authjs.", "__secure-", "__host-")
#: ``Bearer``/``Basic`` then whitespace: a header's value.
_SCHEMES = re.compile(r"(?:bearer|basic)\s", re.IGNORECASE)
#: A Twilio signature: the base64 of a SHA-1 or SHA-256 HMAC.
_SIGNATURE = re.compile(r"[A-Za-z0-9+/]{27}=|[A-Za-z0-9+/]{43}=")
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}\Z")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


def scrub(value: Any) -> Any:
    """``value`` if it is safe to log; ``"[redacted]"`` if it is text shaped like a
    credential or longer than :data:`MAX_FIELD_CHARS`; non-text values pass as they are.

    Shaped like a credential: a compact JWS/JWT/JWE (``eyJ``, the base64url of ``{"``, and a
    dot after it; Auth.js cookies too), an API key (``ick_``), a Twilio signature, a
    ``Bearer``/``Basic`` header value, a session cookie's name. Plain substring tests
    first: most values are ids and cost a lower-casing and a few ``in`` tests."""
    if value is None or not isinstance(value, str):
        return value
    if len(value) > MAX_FIELD_CHARS:
        return REDACTED
    low = value.lower()
    jwt = low.find("eyj")
    if jwt >= 0 and "." in value[jwt:]:
        return REDACTED
    if any(marker in low for marker in _MARKERS):
        return REDACTED
    if ("bearer" in low or "basic" in low) and _SCHEMES.search(value):
        return REDACTED
    if len(value) in (28, 44) and _SIGNATURE.fullmatch(value):
        return REDACTED
    return value


class DecisionEvent(NamedTuple):
    """The fields of a decision log event, in order (also the SQL table's columns)."""

    decision_id: str
    #: When it was decided: RFC 3339, UTC, milliseconds.
    time: str
    request_id: str | None
    trace_id: str | None
    principal: str | None
    credential: str | None
    #: The credential's loggable id (an API key's id), never its secret.
    credential_id: str | None
    route: str | None
    action: str | None
    resource_kind: str | None
    resource_id: str | None
    workspace: str | None
    status: int
    reason: str
    policy_revision: str | None
    facts_revision: int | None
    latency_us: float

    def as_dict(self) -> dict[str, Any]:
        return dict(zip(FIELDS, self, strict=True))


FIELDS: Final = DecisionEvent._fields


def _ids(request: RequestFacts | None) -> tuple[str | None, str | None]:
    """The request's ``x-request-id`` (a sane one) and ``traceparent`` trace id, one pass."""
    if request is None:
        return None, None
    rid = trace = None
    for key, value in request.headers:
        if key == "x-request-id":
            rid = value
        elif key == "traceparent":
            trace = value
    if rid is not None and not _REQUEST_ID.match(rid):
        rid = None
    trace_id = None
    if trace is not None:
        found = _TRACEPARENT.fullmatch(trace.strip())
        if found is not None and found.group(1) != "0" * 32:
            trace_id = found.group(1)
    return rid, trace_id


class EventBuilder:
    """Builds events for a batch: the second's text and each scrubbed value computed once
    (a batch's events share their seconds, routes, principals and resources)."""

    __slots__ = ("_clean", "_second", "_stamp", "policy_revision")

    def __init__(self, policy_revision: str | None) -> None:
        self.policy_revision = policy_revision
        self._second = -1
        self._stamp = ""
        self._clean: dict[str, Any] = {}

    def _scrub(self, value: str | None) -> Any:
        if value is None:
            return None
        clean = self._clean
        found = clean.get(value)
        if found is None:
            if len(clean) >= 10_000:
                clean.clear()  # bounded: a flood of distinct ids starts over
            found = clean[value] = scrub(value)
        return found

    def build(
        self,
        decision: Decision,
        request: RequestFacts | None,
        *,
        decision_id: str,
        at_ns: int,
        latency_ns: int,
        trace_id: str | None = None,
    ) -> DecisionEvent:
        """The event for ``decision`` (of ``request``, where there was one).

        The route (a template), action, reason and credential kind come from our own
        tables; the rest may be a caller's text and is scrubbed. ``trace_id``: the
        tracer's own (``[telemetry] traces``), preferred to the request's ``traceparent``."""
        rid, header_trace = _ids(request)
        if trace_id is None:
            trace_id = header_trace
        principal = decision.principal
        resource = decision.resource
        workspace = resource.workspace if resource is not None else None
        if workspace is None and principal is not None:
            workspace = principal.workspace
        seconds, ns = divmod(at_ns, 1_000_000_000)
        if seconds != self._second:
            self._second = seconds
            self._stamp = time.strftime("%Y-%m-%dT%H:%M:%S.", time.gmtime(seconds))
        return DecisionEvent(
            decision_id,
            f"{self._stamp}{ns // 1_000_000:03d}Z",
            self._scrub(rid),
            trace_id,
            self._scrub(principal.user_id) if principal is not None else None,
            str(principal.kind) if principal is not None else None,
            self._scrub(principal.credential_id) if principal is not None else None,
            self._scrub(decision.route),
            decision.action,
            resource.kind if resource is not None else None,
            self._scrub(resource.id) if resource is not None else None,
            self._scrub(workspace),
            decision.status,
            str(decision.reason),
            decision.policy_revision or self.policy_revision,
            decision.facts_revision,
            round(latency_ns / 1000, 1),
        )


def build_event(
    decision: Decision,
    request: RequestFacts | None,
    *,
    decision_id: str,
    at_ns: int,
    latency_ns: int,
    policy_revision: str | None,
) -> DecisionEvent:
    """The event for one ``decision`` (a batch uses one :class:`EventBuilder`)."""
    return EventBuilder(policy_revision).build(
        decision, request, decision_id=decision_id, at_ns=at_ns, latency_ns=latency_ns
    )
