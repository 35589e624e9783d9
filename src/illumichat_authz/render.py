"""One renderer from a :class:`Decision` to an HTTP answer; every adapter uses it.

Denials are RFC 9457 ``application/problem+json`` documents. The body carries the
reason code and the human message, never exception text or credential bytes. 401s tell
the caller to sign in again rather than retry, as the IllumiChat page asks.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from http import HTTPStatus

from .decision import Decision
from .reasons import Reason

__all__ = ["PROBLEM_CONTENT_TYPE", "Rendered", "identity_headers", "render_denial"]

PROBLEM_CONTENT_TYPE = "application/problem+json"
_TYPE_BASE = "https://docs.illumichat.com/errors/"

_ADVICE = {
    401: "Sign in again (redirect the user to login); do not retry with the same credential.",
    403: "You are signed in but may not do this; check the workspace role.",
    429: "Too many requests; wait for Retry-After seconds.",
    503: "A dependency is unavailable; retry later.",
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
    advice = _ADVICE.get(status)
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
    return Rendered(status, headers, body)


def identity_headers(decision: Decision) -> tuple[tuple[str, str], ...]:
    """Headers a forward-auth server adds on allow, for upstreams in any language."""
    out: list[tuple[str, str]] = [("x-authz-reason", decision.reason.value)]
    if decision.route:
        out.append(("x-authz-route", decision.route))
    if decision.action:
        out.append(("x-authz-action", decision.action))
    p = decision.principal
    if p is not None and decision.reason is not Reason.PUBLIC:
        out.append(("x-authz-user-id", p.user_id))
        out.append(("x-authz-credential", p.kind.value))
        if decision.resource and decision.resource.workspace:
            out.append(("x-authz-workspace", decision.resource.workspace))
        elif p.workspace:
            out.append(("x-authz-workspace", p.workspace))
        if decision.role:
            out.append(("x-authz-role", decision.role))
    return tuple(out)
