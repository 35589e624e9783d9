"""The sans-IO decision core: request facts and lookups in, a :class:`Decision` out.

Three questions, one plain function each, all over the same :class:`Lookups`:

- :func:`decide`: may this HTTP request pass?
- :func:`decide_access`: may this principal do this action on this resource?
- :func:`identify`: who is calling?

A synchronous host passes lookups that answer at once (its stores' own methods) and gets
the :class:`Decision` back. A lookup that cannot answer now raises :class:`Need`; the
driver answers it, remembers it in a :class:`Replay` and calls the function again
(``Authorizer.adecide``; :func:`flow` turns the same into a generator for hand-driving).
Each function has one ``try``: whatever goes wrong inside becomes a deny (``failure``),
never an allow. ``now`` is passed in: the core reads no clock.

Order of checks: method and headers -> canonical path -> CORS preflight -> route ->
rate limit -> (public: allow | webhook: signature | authenticated: credential ->
scopes -> resource and workspace -> membership -> casbin policy).
"""

from __future__ import annotations

from collections.abc import Callable, Generator
from typing import Any

from ..decision import Decision
from ..denials import SIGN_IN_MESSAGE, www_authenticate
from ..errors import DependencyUnavailableError
from ..net import client_ip, public_url, rate_limit_subject
from ..principal import Principal
from ..ratelimit import RateLimitSpec, rate_limit_headers
from ..reasons import Reason
from ..request import RequestFacts
from ..routes import RouteClass, RouteMatch
from .authn import Authenticators, CredentialSource, authenticate
from .compiled import Core
from .envelope import check_envelope
from .lookups import LOOKUPS, Lookups, Need, Query, Replay, propagates, unavailable
from .rules import WORKSPACE_ID, authorize
from .trace import Trace, failure, passed_uncounted

__all__ = [
    "LOOKUPS",
    "Authenticators",
    "Core",
    "CredentialSource",
    "Lookups",
    "Need",
    "Query",
    "Replay",
    "decide",
    "decide_access",
    "flow",
    "identify",
    "run_flow",
]

_PUBLIC = RouteClass.PUBLIC
_AUTHENTICATED = RouteClass.AUTHENTICATED
_WEBHOOK_TWILIO = RouteClass.WEBHOOK_TWILIO
_NO_REQUEST = RequestFacts(method="ACCESS", path="/")


def decide(
    request: RequestFacts,
    core: Core,
    *,
    now: float,
    lookups: Lookups,
    principal: Principal | None = None,
) -> Decision:
    """Decide ``request``. ``principal``: a caller the host has already authenticated."""
    trace = Trace(revision=core.policy_revision)
    try:
        check_envelope(request, core.routes.methods)
        method = request.method
        # Raises 400 for a non-canonical path, before anything else looks at it.
        match = core.routes.classify(method, request.path, core.max_path_length)
        if (
            core.allow_preflight
            and method == "OPTIONS"
            and request.header("access-control-request-method") is not None
        ):
            return trace.decision(Reason.PREFLIGHT, "CORS preflight passes through unauthenticated")
        if match is not None:
            route = trace.route = match.route
            trace.params = match.params
            if route.route_class is not _AUTHENTICATED or route.id in core.rate_limits:
                early = _before_credentials(request, core, match, lookups, trace)
                if early is not None:
                    return early
        if principal is None:
            principal = authenticate(request, core.authenticators, lookups, now)
        if principal is None:
            return _sign_in(
                trace, Reason.AUTHENTICATION_REQUIRED if match else Reason.UNDECLARED_ROUTE
            )
        trace.principal = principal
        if match is None:
            if core.undeclared == "authenticated":
                return trace.decision(
                    Reason.ALLOWED, "undeclared route; any authenticated caller may use it"
                )
            return trace.decision(
                Reason.UNDECLARED_ROUTE, "this endpoint is not declared", status=403
            )
        return authorize(request, core, match.route, match.params, principal, trace, lookups)
    except Need as need:
        need.principal = principal  # verified by now, or None: a replay starts from it
        raise
    except BaseException as exc:
        return failure(exc, trace)


def identify(
    request: RequestFacts,
    core: Core,
    *,
    now: float,
    lookups: Lookups,
    principal: Principal | None = None,
) -> Decision:
    """Only who is calling, for endpoints that name their resource themselves.

    200 ``allowed`` ("authenticated") with the principal; 401 with a challenge when no
    credential or a bad one was presented; 400 for a malformed request. No route, no
    policy: follow it with :func:`decide_access`. (``principal``: already verified.)
    """
    trace = Trace(revision=core.policy_revision)
    try:
        check_envelope(request, core.routes.methods)
        if principal is None:
            principal = authenticate(request, core.authenticators, lookups, now)
        if principal is None:
            return _sign_in(trace, Reason.AUTHENTICATION_REQUIRED)
        trace.principal = principal
        return trace.decision(Reason.ALLOWED, "authenticated")
    except Need as need:
        need.principal = principal  # verified by now, or None: a replay starts from it
        raise
    except BaseException as exc:
        return failure(exc, trace)


def decide_access(
    core: Core,
    *,
    principal: Principal,
    action: str,
    resource_kind: str | None = None,
    resource_id: str | None = None,
    workspace: str | None = None,
    lookups: Lookups,
) -> Decision:
    """Decide ``action`` on a resource for an already-verified ``principal``.

    For callers without an HTTP request: the AuthZEN endpoint, DRF object permissions.
    The same rules as :func:`decide` apply (scopes, workspace binding, membership,
    casbin). ``resource_kind`` must be a kind ``routes.toml`` declares (or ``workspace``
    / ``member``); ``workspace`` is needed for list/create actions and member resources.
    """
    trace = Trace(principal, core.policy_revision)
    try:
        route = core.access_routes.get((action, resource_kind))
        if route is None:  # not one of the policy's actions, or not a declared kind
            if action not in core.policy.actions:
                return trace.decision(Reason.POLICY_DENIED, f"unknown action {action!r}")
            return trace.decision(Reason.POLICY_DENIED, f"unknown resource type {resource_kind!r}")
        trace.route = route
        params: dict[str, str] = {}
        if resource_kind is not None:
            if not resource_id or not WORKSPACE_ID.match(resource_id):
                return trace.decision(Reason.BAD_HEADER, "resource id missing or malformed")
            params["id"] = resource_id
        if workspace is not None:
            params["workspace"] = workspace
        return authorize(_NO_REQUEST, core, route, params, principal, trace, lookups)
    except Need as need:
        need.principal = principal
        raise
    except BaseException as exc:  # e.g. arguments of the wrong type from a host: a 500
        return failure(exc, trace)


def _sign_in(trace: Trace, reason: Reason) -> Decision:
    """No credential at all: 401 with the bare challenge (RFC 6750 §3)."""
    return trace.decision(reason, SIGN_IN_MESSAGE, status=401, headers=www_authenticate(None))


def _before_credentials(
    request: RequestFacts, core: Core, match: RouteMatch, lookups: Lookups, trace: Trace
) -> Decision | None:
    """The steps of a rate-limited, public or webhook route that come before (or instead
    of) a credential; ``None``: go on to authenticate."""
    route = match.route
    spec = core.rate_limits.get(route.id)
    if spec is not None:
        limited = _rate_limit(request, core, route.id, spec, lookups, trace)
        if limited is not None:
            return trace.decision(
                Reason.RATE_LIMITED, "too many requests; retry later", headers=limited
            )
    route_class = route.route_class
    if route_class is _PUBLIC:
        return trace.decision(Reason.PUBLIC, "public endpoint")
    if route_class is _WEBHOOK_TWILIO:
        return _twilio_webhook(request, core, match, lookups, trace)
    return None


def _rate_limit(
    request: RequestFacts,
    core: Core,
    route_id: str,
    spec: RateLimitSpec,
    lookups: Lookups,
    trace: Trace,
) -> tuple[tuple[str, str], ...] | None:
    ip = client_ip(peer=request.peer, headers=request.headers, trusted=core.trusted_proxies)
    try:
        outcome = lookups.rate_limit_hit(f"{route_id}|{rate_limit_subject(ip)}", spec)
    except BaseException as exc:
        error = unavailable("rate_limit_hit", exc)
        if spec.when_unavailable == "pass" and isinstance(error, DependencyUnavailableError):
            passed_uncounted(trace)
            return None
        raise error from None
    if outcome.allowed:
        return None
    return tuple(rate_limit_headers(outcome, spec))


def _twilio_webhook(
    request: RequestFacts, core: Core, match: RouteMatch, lookups: Lookups, trace: Trace
) -> Decision:
    if core.twilio is None:
        return trace.decision(Reason.INVALID_SIGNATURE, "no Twilio auth token is configured")
    body = request.body
    if body is None:
        try:
            body = lookups.body(core.max_body_bytes)
        except BaseException as exc:
            raise unavailable("body", exc) from None
    if body is None or len(body) > core.max_body_bytes:
        return trace.decision(Reason.BODY_TOO_LARGE, "request body too large for a webhook")
    signatures = request.header_values("x-twilio-signature")
    if len(signatures) > 1:
        return trace.decision(Reason.INVALID_SIGNATURE, "more than one X-Twilio-Signature header")
    url = public_url(
        scheme=request.scheme,
        host_header=request.header("host"),
        # Twilio signed the URL it called: the mount's prefix is part of it.
        path=request.mount + request.path,
        query=request.query,
        headers=request.headers,
        peer=request.peer,
        trusted=core.trusted_proxies,
        public_base_url=core.public_base_url,
    )
    signer = match.route.signer
    core.twilio.verify(
        assistant_id=match.params.get(signer) if signer else None,
        url=url,
        signature=signatures[0] if signatures else None,
        body=body,
        content_type=request.header("content-type"),
    )
    return trace.decision(Reason.WEBHOOK_VERIFIED, "Twilio signature verified")


Flow = Generator[Query, Any, Decision]


def flow(question: Callable[..., Decision], *args: Any, **kwargs: Any) -> Flow:
    """``question`` (``decide``, ``decide_access`` or ``identify``) as a generator that
    yields every lookup as a :class:`Query` and is sent the answer (or has the lookup's
    exception thrown in); it returns the :class:`Decision`. For hand-driving: tests, the
    CLI, a host with its own event loop. Pass the arguments but ``lookups``.
    """
    replay = Replay()
    while True:
        try:
            return question(*args, lookups=replay, **kwargs)
        except Need as need:
            if need.principal is not None:
                kwargs["principal"] = need.principal
            try:
                replay.answer(need.query, (yield need.query))
            except BaseException as exc:  # the lookup failed: the decision makes it a deny
                if propagates(exc):  # closing the generator, cancellation, exit
                    raise
                replay.fail(need.query, exc)


def run_flow(steps: Flow, answer: Callable[[Query], Any]) -> Decision:
    """Drive a :func:`flow` to its decision, answering each query with ``answer``."""
    try:
        query = next(steps)
        while True:
            try:
                value = answer(query)
            except BaseException as exc:  # a host's own BaseException too: the flow denies
                if propagates(exc):
                    raise
                query = steps.throw(exc)
            else:
                query = steps.send(value)
    except StopIteration as done:
        decision: Decision = done.value
        return decision
