"""The sans-IO decision core: request facts in, a :class:`Decision` out.

``decide`` is a generator. It never touches a socket, a file, a clock or the
environment: when it needs a fact (a membership, an assistant, an API key row, a JWKS
key, the body, a rate-limit count) it yields a query from ``queries`` and the driver
sends back the answer (``Authorizer`` does this for sync and async hosts alike, so the
rules are written once). ``now`` is passed in. Every exception inside becomes a deny:
our own errors carry their status; anything else is a logged 500, never an allow.

The role and visibility rules live in ``rules``: a plain function of their facts, called
directly with a synchronous store (no generator at all: ``access_decision``) and replayed
as the driver answers otherwise.

Order of checks: method and headers -> canonical path -> CORS preflight -> route ->
rate limit -> (public: allow | webhook: signature | authenticated: credential ->
scopes -> resource and workspace -> membership -> casbin policy).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any, Literal

from ._trace import Trace, failure
from .authn import Authenticators, Presented, authenticate, cached, presented, verify
from .credentials.twilio import TwilioSignatureVerifier
from .decision import Decision
from .denials import SIGN_IN_MESSAGE, www_authenticate
from .errors import BadRequestError
from .facts import Facts
from .net import IPNetwork, client_ip, public_url, rate_limit_subject
from .policy import Policy
from .principal import Principal
from .queries import (
    NeedBody,
    NeedRateLimit,
    Query,
)
from .ratelimit import RateLimitOutcome, RateLimitSpec, rate_limit_headers
from .reasons import Reason
from .request import MAX_HEADER_BYTES, RequestFacts
from .routes import (
    FROM_PRINCIPAL,
    FROM_RESOURCE,
    ResourceSpec,
    Route,
    RouteClass,
    RouteMatch,
    RouteTable,
    WorkspaceFrom,
    WorkspaceSource,
)
from .rules import WORKSPACE_ID, authorize, replayed, rules
from .vocab import ResourceKind

__all__ = [
    "Core",
    "Flow",
    "access_decision",
    "decide",
    "decide_access",
    "identify",
    "request_decision",
]

_log = logging.getLogger("illumichat_authz")

Flow = Generator[Query, Any, Decision]

# RFC 9110 §5.6.2 token (what a method must look like at all).
_METHOD = re.compile(r"[!#$%&'*+\-.^_`|~0-9A-Za-z]{1,32}\Z")
_HEADER_NAME = re.compile(r"[!#$%&'*+\-.^_`|~0-9a-z]{1,256}\Z")
# Controls (but tab), DEL, and lone surrogates (no UTF-8 form: they cannot be logged,
# compared or sent on, so nothing downstream could agree on what they were).
_HEADER_VALUE_BAD = re.compile(r"[\x00-\x08\x0a-\x1f\x7f\ud800-\udfff]")
_PUBLIC = RouteClass.PUBLIC
_AUTHENTICATED = RouteClass.AUTHENTICATED
_WEBHOOK_TWILIO = RouteClass.WEBHOOK_TWILIO


@dataclass(frozen=True, slots=True, kw_only=True)
class Core:
    """Everything a decision depends on except the request, the facts and the time.

    Built once at start-up (``Authorizer.from_settings``); immutable and shareable.
    """

    routes: RouteTable
    policy: Policy
    authenticators: Authenticators = field(default_factory=Authenticators)
    twilio: TwilioSignatureVerifier | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    #: Forward auth believes X-Forwarded-Prefix from ``trusted_proxies`` (``[proxies]``).
    forwarded_prefix: bool = False
    public_base_url: str | None = None
    undeclared: Literal["deny", "authenticated"] = "deny"
    allow_preflight: bool = True
    conceal_hidden: bool = False
    max_path_length: int = 2048
    max_body_bytes: int = 64 * 1024
    rate_limits: Mapping[str, RateLimitSpec] = field(default_factory=dict)
    #: What the adapters do at start-up with framework routes the table does not classify
    #: (``[routes] check_app``); not a decision input.
    check_app: Literal["warn", "error", "off"] = "warn"
    #: (action, resource kind or None) -> the synthetic route ``decide_access`` evaluates,
    #: for every action of the policy: one lookup both validates and finds it.
    access_routes: Mapping[tuple[str, str | None], Route] = field(
        init=False, default_factory=dict, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        routes = {
            (action, kind): _access_route(action, kind)
            for action in self.policy.actions
            for kind in (None, *_KINDS)
        }
        object.__setattr__(self, "access_routes", MappingProxyType(routes))


def decide(
    request: RequestFacts,
    core: Core,
    *,
    now: float,
    principal: Principal | None = None,
    facts: Facts | None = None,
) -> Flow:
    """Decide ``request``. ``principal``: a caller the host has already authenticated.

    The generator yields queries; the value it returns is the :class:`Decision`.
    ``facts``: a synchronous store to call directly instead of yielding facts queries
    (in-memory facts answer in well under a microsecond: a generator round trip per
    lookup would cost more than the lookup). It must report an outage as an
    ``AuthzError`` (``Authorizer`` wraps stores in ``GuardedFacts`` for that); any other
    exception is a 500. Either way a deny.
    """
    decided = request_decision(request, core, now=now, principal=principal, facts=facts)
    if isinstance(decided, Decision):
        return decided
    return (yield from decided)


def request_decision(
    request: RequestFacts,
    core: Core,
    *,
    now: float,
    principal: Principal | None = None,
    facts: Facts | None = None,
) -> Decision | Flow:
    """:func:`decide`, with no flow where none is needed: the :class:`Decision` itself
    when nothing must be asked of the driver (a cached credential and synchronous facts:
    most requests), else the flow that asks, from the first question on."""
    trace = Trace()
    try:
        _check_envelope(request, core)
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
                return _asking(request, core, match, principal, None, facts, now, trace)

        if principal is None:
            # authenticate(), unrolled so that a cached credential costs no generator.
            authn = core.authenticators
            found = presented(request, authn)
            if found is not None:
                principal = cached(found, authn, now=now)
                if principal is None:
                    return _asking(request, core, match, None, found, facts, now, trace)
        return _authorized(request, core, match, principal, trace, facts)
    except Exception as exc:
        return failure(exc, trace)


def _asking(
    request: RequestFacts,
    core: Core,
    match: RouteMatch | None,
    principal: Principal | None,
    found: Presented | None,
    facts: Facts | None,
    now: float,
    trace: Trace,
) -> Flow:
    """The rest of a decision that must ask the driver something: a rate-limited, public
    or webhook route, or a credential that is not cached (``found``) to verify."""
    try:
        if match is not None:
            route = match.route
            spec = core.rate_limits.get(route.id)
            if spec is not None:
                limited = yield from _rate_limit(request, core, route, spec)
                if limited is not None:
                    return trace.decision(
                        Reason.RATE_LIMITED, "too many requests; retry later", headers=limited
                    )
            route_class = route.route_class
            if route_class is _PUBLIC:
                return trace.decision(Reason.PUBLIC, "public endpoint")
            if route_class is _WEBHOOK_TWILIO:
                return (yield from _twilio_webhook(request, core, match, trace))
        if principal is None:
            authn = core.authenticators
            if found is not None:
                principal = yield from verify(found, authn, now=now)
            else:
                principal = yield from authenticate(request, authn, now=now)
        decided = _authorized(request, core, match, principal, trace, facts)
        return decided if isinstance(decided, Decision) else (yield from decided)
    except Exception as exc:
        return failure(exc, trace)


def _authorized(
    request: RequestFacts,
    core: Core,
    match: RouteMatch | None,
    principal: Principal | None,
    trace: Trace,
    facts: Facts | None,
) -> Decision | Flow:
    """Once the caller is known (or known to be nobody): the route's rules."""
    if principal is None:
        reason = Reason.AUTHENTICATION_REQUIRED if match else Reason.UNDECLARED_ROUTE
        return _sign_in(trace, reason)
    trace.principal = principal
    if match is None:
        if core.undeclared == "authenticated":
            return trace.decision(
                Reason.ALLOWED, "undeclared route; any authenticated caller may use it"
            )
        return trace.decision(Reason.UNDECLARED_ROUTE, "this endpoint is not declared", status=403)
    return authorize(request, core, match.route, match.params, principal, trace, facts)


def identify(request: RequestFacts, core: Core, *, now: float) -> Flow:
    """Only who is calling, for endpoints that name their resource themselves.

    200 ``allowed`` ("authenticated") with the principal; 401 with a challenge when no
    credential or a bad one was presented; 400 for a malformed request. No route, no
    policy: follow it with :func:`decide_access`.
    """
    trace = Trace()
    try:
        _check_envelope(request, core)
        principal = yield from authenticate(request, core.authenticators, now=now)
        if principal is None:
            return _sign_in(trace, Reason.AUTHENTICATION_REQUIRED)
        trace.principal = principal
        return trace.decision(Reason.ALLOWED, "authenticated")
    except Exception as exc:
        return failure(exc, trace)


def _sign_in(trace: Trace, reason: Reason) -> Decision:
    """No credential at all: 401 with the bare challenge (RFC 6750 §3)."""
    return trace.decision(
        reason,
        SIGN_IN_MESSAGE,
        status=401,
        headers=www_authenticate(None),
    )


def decide_access(
    core: Core,
    *,
    principal: Principal,
    action: str,
    resource_kind: str | None = None,
    resource_id: str | None = None,
    workspace: str | None = None,
    facts: Facts | None = None,
) -> Flow:
    """Decide ``action`` on a resource for an already-verified ``principal``.

    For callers without an HTTP request: the AuthZEN endpoint, DRF object permissions.
    The same rules as ``decide`` apply (scopes, workspace binding, membership, casbin);
    ``workspace`` is needed for list/create actions and member resources; ``facts`` as
    for :func:`decide`.
    """
    decided = access_decision(
        core,
        principal=principal,
        action=action,
        resource_kind=resource_kind,
        resource_id=resource_id,
        workspace=workspace,
        facts=facts,
    )
    return _finished(decided) if isinstance(decided, Decision) else decided


def access_decision(
    core: Core,
    *,
    principal: Principal,
    action: str,
    resource_kind: str | None = None,
    resource_id: str | None = None,
    workspace: str | None = None,
    facts: Facts | None = None,
) -> Decision | Flow:
    """:func:`decide_access`, with no flow where none is needed: given synchronous
    ``facts`` it returns the :class:`Decision` itself (a generator would cost more than
    the decision); otherwise the flow that asks the driver for the facts."""
    trace = Trace(principal)
    try:
        route = core.access_routes.get((action, resource_kind))
        if route is None:  # not one of the policy's actions, or not a resource kind
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
    except Exception as exc:  # e.g. arguments of the wrong type from a host: a 500, logged
        return failure(exc, trace)
    if facts is not None:
        return rules(_NO_REQUEST, core, route, params, principal, trace, facts)
    return replayed(_NO_REQUEST, core, route, params, principal, trace)


def _finished(decision: Decision) -> Flow:
    """A flow that asks nothing: the decision is already known."""
    yield from ()
    return decision


_KINDS = frozenset(k.value for k in ResourceKind)
_NO_REQUEST = RequestFacts(method="ACCESS", path="/")
_FROM_WORKSPACE_PARAM = WorkspaceSource(WorkspaceFrom.PARAM, "workspace")


def _access_route(action: str, resource_kind: str | None) -> Route:
    """The synthetic route ``decide_access`` evaluates (``Core.access_routes``)."""
    spec = ResourceSpec(ResourceKind(resource_kind), "id") if resource_kind else None
    sources: tuple[WorkspaceSource, ...] = (_FROM_WORKSPACE_PARAM, FROM_PRINCIPAL)
    if spec is not None and spec.kind is ResourceKind.MEMBER:
        sources = (_FROM_WORKSPACE_PARAM,)
    elif spec is not None:
        sources = (FROM_RESOURCE,)
    return Route(
        method="ACCESS",
        template=f"/{resource_kind or 'workspace'}",
        route_class=RouteClass.AUTHENTICATED,
        action=action,
        resource=spec,
        workspace=sources,
        origin="decide_access",
    )


def _check_envelope(request: RequestFacts, core: Core) -> None:
    method = request.method
    if method not in _STANDARD_METHODS and method not in core.routes.methods:
        if not _METHOD.match(method):
            raise BadRequestError("malformed request method", reason=Reason.BAD_METHOD)
        # Methods are case-sensitive (RFC 9110 §9.1): "get" or "BREW" is no method of ours.
        raise BadRequestError(f"unknown request method {method!r}", reason=Reason.BAD_METHOD)
    headers = request.headers
    total = 0
    for name, value in headers:
        total += len(name) + len(value)
        if name not in _COMMON_HEADER_NAMES and not _HEADER_NAME.match(name):
            raise BadRequestError("malformed request header", reason=Reason.BAD_HEADER)
    if total > MAX_HEADER_BYTES:
        raise BadRequestError("request headers too large", reason=Reason.BAD_HEADER)
    # All values at once, joined by a tab (which a value may hold): most are Latin-1 (ASGI
    # and WSGI decode them so), and deleting the refused bytes in C is several times
    # faster than a regex scan, or than one encode per header.
    values = "\t".join([value for _, value in headers])
    try:
        raw = values.encode("latin-1")
    except UnicodeEncodeError:
        if _HEADER_VALUE_BAD.search(values) is not None:
            raise BadRequestError("malformed request header", reason=Reason.BAD_HEADER) from None
    else:
        if len(raw.translate(None, _BAD_VALUE_BYTES)) != len(raw):
            raise BadRequestError("malformed request header", reason=Reason.BAD_HEADER)


# RFC 9110 §9.3 and RFC 5789 (PATCH); a route table may declare others (e.g. WebDAV).
_STANDARD_METHODS = frozenset(
    {"GET", "HEAD", "POST", "PUT", "DELETE", "CONNECT", "OPTIONS", "TRACE", "PATCH"}
)
# Names browsers, proxies and tracers send: a set lookup instead of a regex match for each
# (tests/test_paths_properties.py checks that every one is a valid lower-case token).
_COMMON_HEADER_NAMES = frozenset(
    {
        "access-control-request-headers",
        "access-control-request-method",
        "accept-charset",
        "content-encoding",
        "dnt",
        "forwarded",
        "if-modified-since",
        "if-none-match",
        "priority",
        "sec-ch-ua",
        "sec-ch-ua-mobile",
        "sec-ch-ua-platform",
        "sec-fetch-dest",
        "sec-fetch-mode",
        "sec-fetch-site",
        "sec-fetch-user",
        "sec-websocket-extensions",
        "sec-websocket-key",
        "sec-websocket-protocol",
        "sec-websocket-version",
        "te",
        "traceparent",
        "tracestate",
        "upgrade",
        "upgrade-insecure-requests",
        "via",
        "x-forwarded-method",
        "x-forwarded-uri",
        "x-original-method",
        "x-original-uri",
        "x-real-ip",
        "x-requested-with",
        "accept",
        "accept-encoding",
        "accept-language",
        "authorization",
        "cache-control",
        "connection",
        "content-length",
        "content-type",
        "cookie",
        "host",
        "origin",
        "pragma",
        "referer",
        "user-agent",
        "x-forwarded-for",
        "x-forwarded-host",
        "x-forwarded-proto",
        "x-request-id",
        "x-twilio-signature",
        "x-workspace-id",
    }
)
# The bytes _HEADER_VALUE_BAD refuses, for the Latin-1 fast path in _check_envelope.
_BAD_VALUE_BYTES = bytes([*range(0x00, 0x09), *range(0x0A, 0x20), 0x7F])


def _rate_limit(
    request: RequestFacts, core: Core, route: Route, spec: RateLimitSpec
) -> Generator[Query, Any, tuple[tuple[str, str], ...] | None]:
    ip = client_ip(peer=request.peer, headers=request.headers, trusted=core.trusted_proxies)
    outcome: RateLimitOutcome = yield NeedRateLimit(f"{route.id}|{rate_limit_subject(ip)}", spec)
    if outcome.allowed:
        return None
    return tuple(rate_limit_headers(outcome, spec))


def _twilio_webhook(request: RequestFacts, core: Core, match: RouteMatch, trace: Trace) -> Flow:
    if core.twilio is None:
        return trace.decision(Reason.INVALID_SIGNATURE, "no Twilio auth token is configured")
    body = request.body
    if body is None:
        body = yield NeedBody(core.max_body_bytes)
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
