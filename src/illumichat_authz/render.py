"""One renderer from a :class:`Decision` to an HTTP answer; every adapter uses it.

Denials are RFC 9457 ``application/problem+json`` documents. The body carries the
reason code and the human message, never exception text or credential bytes. 401s tell
the caller to sign in again rather than retry, as the IllumiChat page asks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus
from urllib.parse import quote

from .decision import Decision
from .reasons import Reason

__all__ = [
    "IDENTITY_HEADERS",
    "PROBLEM_CONTENT_TYPE",
    "REVISION_HEADER",
    "Rendered",
    "identity_headers",
    "render_denial",
]

PROBLEM_CONTENT_TYPE = "application/problem+json"
_TYPE_BASE = "https://docs.illumichat.com/errors/"

_ADVICE = {
    401: "Sign in again (redirect the user to login); do not retry with the same credential.",
    403: "You are signed in but may not do this; check the workspace role.",
    429: "Too many requests; wait for Retry-After seconds.",
    503: "A dependency is unavailable; retry later.",
}
#: Where a reason's advice is not its status's: a signed-in caller on an undeclared route
#: has nothing to fix in a workspace role (no role can use a route that does not exist).
_REASON_ADVICE = {
    (Reason.UNDECLARED_ROUTE, 403): (
        "This service declares no such endpoint for this method; check the method and path."
    ),
}


@dataclass(frozen=True, slots=True)
class Rendered:
    status: int
    headers: tuple[tuple[str, str], ...]
    body: bytes


def render_denial(decision: Decision, *, request_id: str | None = None) -> Rendered:
    """The response for a denied decision (status, headers, problem+json body)."""
    status = decision.status
    try:
        title = HTTPStatus(status).phrase
    except ValueError:
        title = "Error"
    problem: dict[str, object] = {
        "type": _TYPE_BASE + decision.reason.value.replace("_", "-"),
        "title": title,
        "status": status,
        "detail": decision.message,
        "reason": decision.reason.value,
    }
    advice = _REASON_ADVICE.get((decision.reason, status)) or _ADVICE.get(status)
    if advice:
        problem["action"] = advice
    if request_id:
        problem["request_id"] = request_id
    body = json.dumps(problem, separators=(",", ":")).encode()
    headers = (
        ("content-type", PROBLEM_CONTENT_TYPE),
        ("content-length", str(len(body))),
        ("cache-control", "no-store"),
        *decision.headers,
    )
    if status == 503 and not any(k.lower() == "retry-after" for k, _ in decision.headers):
        headers = (*headers, ("retry-after", "5"))
    if decision.facts_revision is not None:
        headers = (*headers, *revision_headers(decision))
    return Rendered(status, headers, body)


#: The facts revision a decision saw (responses), or the one a client needs (requests).
REVISION_HEADER = "x-authz-revision"
#: The revision of the policy that decided (responses, beside ``x-authz-revision``).
POLICY_REVISION_HEADER = "x-authz-policy-revision"


def revision_headers(decision: Decision) -> tuple[tuple[str, str], ...]:
    """With ``[database]``: the facts revision the decision saw and the policy revision
    that decided, so a client (or a soak's oracle) knows what each answer was made of."""
    facts = decision.facts_revision
    if facts is None:
        return ()
    if decision.policy_revision:
        return ((REVISION_HEADER, str(facts)), (POLICY_REVISION_HEADER, decision.policy_revision))
    return ((REVISION_HEADER, str(facts)),)


def identity_headers(decision: Decision) -> tuple[tuple[str, str], ...]:
    """Headers a forward-auth server adds on allow, for upstreams in any language.

    All of :data:`IDENTITY_HEADERS`, always, empty where nothing applies (a public route
    names nobody): a proxy that copies a header only when the answer has it would
    otherwise leave the client's own copy in place, or, like Caddy 2.6, send the
    unresolved placeholder ``{http.reverse_proxy.header.X-Authz-User-Id}`` on.

    Ids may be any Unicode (a workspace ``ws_日本``), but a header value is Latin-1 on
    the wire and must hold no control characters: values are percent-encoded UTF-8
    wherever they contain ``%``, a control character or anything outside printable ASCII
    (``unquote`` restores them); plain ids such as ``auth0|abc`` go as they are.
    """
    user = credential = workspace = role = ""
    p = decision.principal
    if p is not None and decision.reason is not Reason.PUBLIC:
        user = header_safe(p.user_id)
        credential = p.kind.value
        if decision.resource and decision.resource.workspace:
            workspace = header_safe(decision.resource.workspace)
        elif p.workspace:
            workspace = header_safe(p.workspace)
        role = header_safe(decision.role) if decision.role else ""
    values = (
        decision.reason.value,
        header_safe(decision.route) if decision.route else "",
        header_safe(decision.action) if decision.action else "",
        user,
        credential,
        workspace,
        role,
    )
    return tuple(zip(IDENTITY_HEADERS, values, strict=True))


#: Every header :func:`identity_headers` sets, in order: list them all in a proxy's copy list.
IDENTITY_HEADERS = (
    "x-authz-reason",
    "x-authz-route",
    "x-authz-action",
    "x-authz-user-id",
    "x-authz-credential",
    "x-authz-workspace",
    "x-authz-role",
)


# Printable ASCII less '%' (the escape character itself) stays as it is.
_HEADER_SAFE = "".join(chr(c) for c in range(0x20, 0x7F) if chr(c) != "%")


def header_safe(value: str) -> str:
    """``value`` as a header value: percent-encoded UTF-8 where it is not plain ASCII."""
    if value.isascii() and value.isprintable() and "%" not in value:
        return value
    return quote(value, safe=_HEADER_SAFE, errors="surrogatepass")
