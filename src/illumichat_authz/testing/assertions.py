"""``assert_decision``: one assertion for decisions, rendered answers and HTTP responses.

A failing assertion prints what was decided (status, reason, message, route, action) so
a test failure reads like the log line a service would write.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from illumichat_authz.authorizer import Authorizer

__all__ = ["Observed", "assert_decision", "make_request", "observe"]


class Observed:
    """The comparable part of an outcome: status and reason (and what else is known)."""

    __slots__ = ("detail", "reason", "status")

    def __init__(self, *, status: int, reason: str | None, detail: str) -> None:
        self.status = status
        self.reason = reason
        self.detail = detail


def _reason_from_body(body: bytes, headers: Mapping[str, str]) -> str | None:
    reason = headers.get("x-authz-reason")
    if reason:
        return reason
    try:
        doc = json.loads(body)
    except (ValueError, UnicodeDecodeError):
        return None
    if isinstance(doc, dict):
        value = doc.get("reason")
        if isinstance(value, str):
            return value
        context = doc.get("context")
        if isinstance(context, dict) and isinstance(context.get("reason"), str):
            return str(context["reason"])
    return None


def observe(outcome: Any, *, authorizer: Authorizer | None = None) -> Observed:
    """Turn a Decision, a RequestFacts (decided with ``authorizer``), a ``Rendered``, or an
    HTTP response (httpx, requests, Starlette/Django/Flask test clients) into status+reason."""
    from illumichat_authz.decision import Decision
    from illumichat_authz.render import Rendered
    from illumichat_authz.request import RequestFacts

    if isinstance(outcome, RequestFacts):
        if authorizer is None:
            raise TypeError("assert_decision(request) needs authorizer=...")
        outcome = authorizer.decide(outcome)
    if isinstance(outcome, Decision):
        return Observed(
            status=outcome.status,
            reason=outcome.reason.value,
            detail=f"{outcome.status} {outcome.reason.value}: {outcome.message} "
            f"(route={outcome.route}, action={outcome.action}, role={outcome.role})",
        )
    if isinstance(outcome, Rendered):
        headers = {k.lower(): v for k, v in outcome.headers}
        reason = _reason_from_body(outcome.body, headers)
        return Observed(status=outcome.status, reason=reason, detail=f"{outcome.status} {reason}")
    status = getattr(outcome, "status_code", None)
    if isinstance(status, int):
        raw_headers = getattr(outcome, "headers", {}) or {}
        headers = {str(k).lower(): str(v) for k, v in dict(raw_headers).items()}
        body = getattr(outcome, "content", None)
        if body is None:  # Django's HttpResponse and Flask's Response
            body = getattr(outcome, "data", b"") or b""
        if isinstance(body, str):
            body = body.encode()
        reason = _reason_from_body(body, headers)
        text = body[:300].decode("utf-8", "replace")
        return Observed(status=status, reason=reason, detail=f"{status} {reason}: {text}")
    raise TypeError(f"cannot assert a decision on {type(outcome).__name__}")


def assert_decision(
    outcome: Any,
    status: int | None = None,
    reason: str | None = None,
    *,
    authorizer: Authorizer | None = None,
) -> None:
    """Assert the status and/or reason code of ``outcome``.

    ``assert_decision(decision, status=403, reason="not_visible")``,
    ``assert_decision(response, 401)``, ``assert_decision(request, 200, authorizer=authz)``.
    ``reason`` accepts a :class:`~illumichat_authz.reasons.Reason` or its string value.
    """
    if status is None and reason is None:
        raise TypeError("assert_decision needs status=, reason= or both")
    seen = observe(outcome, authorizer=authorizer)
    expected_reason = None if reason is None else str(getattr(reason, "value", reason))
    problems = []
    if status is not None and seen.status != status:
        problems.append(f"status {seen.status} != expected {status}")
    if expected_reason is not None and seen.reason != expected_reason:
        problems.append(f"reason {seen.reason!r} != expected {expected_reason!r}")
    if problems:
        raise AssertionError("; ".join(problems) + f"\n  decided: {seen.detail}")


def make_request(
    method: str,
    path: str,
    *,
    query: str = "",
    cookie: str | None = None,
    bearer: str | None = None,
    workspace: str | None = None,
    headers: Mapping[str, str] | None = None,
    body: bytes | None = None,
    peer: str = "203.0.113.10",
    scheme: str = "https",
    host: str = "api.illumichat.test",
) -> Any:
    """A :class:`~illumichat_authz.request.RequestFacts` as an adapter would build it.

    ``cookie`` is a whole Cookie value (what ``mint_session`` returns), ``bearer`` a token
    or API key, ``workspace`` sets ``X-Workspace-Id``.
    """
    from illumichat_authz.request import RequestFacts

    pairs: list[tuple[str, str]] = [("host", host)]
    if cookie is not None:
        pairs.append(("cookie", cookie))
    if bearer is not None:
        pairs.append(("authorization", f"Bearer {bearer}"))
    if workspace is not None:
        pairs.append(("x-workspace-id", workspace))
    pairs.extend((headers or {}).items())
    return RequestFacts.build(
        method=method,
        path=path,
        query=query,
        headers=pairs,
        body=body,
        peer=peer,
        scheme=scheme,
    )
