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

__all__ = ["FIELDS", "MAX_FIELD_CHARS", "REDACTED", "DecisionEvent", "build_event", "scrub"]

REDACTED: Final = "[redacted]"
MAX_FIELD_CHARS: Final = 200

_SECRET_SHAPES = re.compile(
    r"eyJ[A-Za-z0-9_-]*\."  # a JWS/JWT/JWE: base64url of '{"' then a dot (Auth.js cookies too)
    r"|ick_[A-Za-z0-9]"  # an IllumiChat API key
    r"|\A[A-Za-z0-9+/]{27}=\Z|\A[A-Za-z0-9+/]{43}=\Z"  # a Twilio signature (SHA-1 / SHA-256)
    r"|bearer\s|basic\s|session-token|authjs\.|__secure-|__host-",  # header and cookie text
    re.IGNORECASE,
)
_REQUEST_ID = re.compile(r"[A-Za-z0-9._:\-]{1,128}\Z")
_TRACEPARENT = re.compile(r"[0-9a-f]{2}-([0-9a-f]{32})-[0-9a-f]{16}-[0-9a-f]{2}")


def scrub(value: Any) -> Any:
    """``value`` if it is safe to log; ``"[redacted]"`` if it is text shaped like a
    credential or longer than :data:`MAX_FIELD_CHARS`; non-text values pass as they are."""
    if value is None or not isinstance(value, str):
        return value
    if len(value) > MAX_FIELD_CHARS or _SECRET_SHAPES.search(value):
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


def _header(request: RequestFacts | None, name: str) -> str | None:
    if request is None:
        return None
    for key, value in request.headers:
        if key == name:
            return value
    return None


def build_event(
    decision: Decision,
    request: RequestFacts | None,
    *,
    decision_id: str,
    at_ns: int,
    latency_ns: int,
    policy_revision: str | None,
) -> DecisionEvent:
    """The event for ``decision`` (of ``request``, where there was one)."""
    rid = _header(request, "x-request-id")
    trace = _header(request, "traceparent")
    found = _TRACEPARENT.fullmatch(trace.strip()) if trace is not None else None
    trace_id = found.group(1) if found is not None and found.group(1) != "0" * 32 else None
    principal = decision.principal
    resource = decision.resource
    workspace = resource.workspace if resource is not None else None
    if workspace is None and principal is not None:
        workspace = principal.workspace
    seconds, ns = divmod(at_ns, 1_000_000_000)
    stamp = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{ns // 1_000_000:03d}Z"
    return DecisionEvent(
        decision_id=decision_id,
        time=stamp,
        request_id=scrub(rid) if rid is not None and _REQUEST_ID.match(rid) else None,
        trace_id=trace_id,
        principal=scrub(principal.user_id) if principal is not None else None,
        credential=str(principal.kind) if principal is not None else None,
        credential_id=scrub(principal.credential_id) if principal is not None else None,
        route=scrub(decision.route),
        action=scrub(decision.action),
        resource_kind=scrub(resource.kind) if resource is not None else None,
        resource_id=scrub(resource.id) if resource is not None else None,
        workspace=scrub(workspace),
        status=decision.status,
        reason=str(decision.reason),
        policy_revision=policy_revision,
        facts_revision=decision.facts_revision,
        latency_us=round(latency_ns / 1000, 1),
    )
