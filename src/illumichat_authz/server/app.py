"""The forward-auth server: a small Starlette app deciding requests for a reverse proxy.

``/auth`` (any method) answers the proxy's sub-request: 200 with identity headers when the
original request may pass, else the deny status with the problem+json body and headers
(``WWW-Authenticate``, ``Retry-After``...). The original request is read from the headers
the usual proxies send:

* nginx ``auth_request``: ``X-Original-Method`` and ``X-Original-URI`` (set in the config);
* Traefik ForwardAuth: ``X-Forwarded-Method``, ``X-Forwarded-Uri`` (and ``-Host``,
  ``-Proto``, ``-For``, which the core believes only from ``[proxies] trusted`` peers);
* Envoy ext_authz (HTTP service): "the original request path is appended to the path
  prefix", so ``/auth/api/assistants?x=1`` checks ``/api/assistants?x=1``, and the check
  request keeps the original method.

A proxy's auth sub-request carries no body, so Twilio webhooks cannot be verified here:
they are denied (403 ``invalid_signature``, saying so) and must be verified in-process by
the service (``AuthzMiddleware``). ``/healthz`` is liveness, ``/readyz`` readiness (policy
compiled, stores answering; the policy and facts revisions and the facts' lag), ``/metrics``
Prometheus's scrape with ``[telemetry] metrics``. ``/access/v1/evaluation(s)`` is the
AuthZEN API, with its metadata at ``/.well-known/authzen-configuration``, served only when
a bearer token is configured.
"""

from __future__ import annotations

import asyncio
import contextlib
import hmac
import inspect
import logging
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Sequence
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from .. import net
from ..authorizer import Authorizer
from ..credentials._claims import strict_json
from ..decision import Decision
from ..denials import internal_error
from ..errors import BadRequestError, SignatureError
from ..integrations import check_host, read_bounded, render, request_id, request_target
from ..integrations.asgi import Receive, Scope, Send
from ..net import IPNetwork, is_trusted_peer
from ..reasons import Reason
from ..render import POLICY_REVISION_HEADER, REVISION_HEADER, identity_headers
from ..request import RequestFacts
from . import authzen

__all__ = ["AUTH_PREFIX", "create_app", "forwarded_request"]

_log = logging.getLogger("illumichat_authz.server")

AUTH_PREFIX = "/auth"
#: Longest original URI we accept from a proxy header (the core caps the path again).
MAX_URI_CHARS = 8 * 1024
#: Headers that describe the forwarding itself, or the hop to us: not the original request's.
_META = frozenset(
    {
        "x-original-method",
        "x-original-uri",
        "x-forwarded-method",
        "x-forwarded-uri",
        "x-forwarded-prefix",
        "content-length",
        "transfer-encoding",
        "connection",
        "keep-alive",
    }
)


def _single(pairs: list[tuple[str, str]], *names: str, extra: str | None = None) -> str | None:
    """The one value that ``names`` (and ``extra``, another source) agree on, if any.

    Proxies differ in which header they set (nginx: X-Original-*, Traefik:
    X-Forwarded-*), and each passes the client's other headers through: a client can
    add the family its proxy does not set. So when two sources disagree, nobody can
    know which one the proxy wrote: 400, never a guess (a guess is an auth bypass).
    """
    found: dict[str, str] = {}
    for name in names:
        values = [v for k, v in pairs if k == name]
        if len(values) > 1:
            raise BadRequestError(f"more than one {name} header", reason=Reason.BAD_HEADER)
        if values:
            found[name] = values[0].strip()
    if extra is not None:
        found["the path after the check prefix"] = extra
    if len(set(found.values())) > 1:
        raise BadRequestError(
            f"conflicting original request: {' and '.join(found)} disagree",
            reason=Reason.BAD_HEADER,
        )
    return next(iter(found.values()), None)


def forwarded_request(
    *,
    method: str,
    raw_path: str,
    query: str,
    headers: Iterable[tuple[str, str]],
    peer: str | None,
    prefix: str = AUTH_PREFIX,
    trusted: Sequence[IPNetwork] | None = None,
) -> RequestFacts:
    """The original request, as the core must see it, from a proxy's auth sub-request.

    ``raw_path``/``query`` are the sub-request's own; ``headers`` lower-cased pairs.
    ``trusted``: the proxies whose ``X-Forwarded-Prefix`` is believed (``[proxies]
    trusted`` with ``forwarded_prefix = true``; ``None``: nobody's). Raises
    :class:`BadRequestError` when the original request cannot be known.
    """
    pairs = [(k.lower(), v) for k, v in headers]
    original_method = _single(pairs, "x-original-method", "x-forwarded-method") or method
    # Envoy: the original path follows the check path prefix.
    rest = raw_path[len(prefix) :] if raw_path.startswith(prefix) else ""
    envoy = rest + (f"?{query}" if query else "") if rest else None
    uri = _single(pairs, "x-original-uri", "x-forwarded-uri", extra=envoy)
    if uri is None:
        raise BadRequestError(
            "no original URI: send X-Original-URI (nginx), X-Forwarded-Uri (Traefik) "
            f"or append the path to {prefix} (Envoy)",
            reason=Reason.BAD_HEADER,
        )
    if len(uri) > MAX_URI_CHARS:
        raise BadRequestError("original URI too long", reason=Reason.NON_CANONICAL_PATH)
    stripped = _forwarded_prefix(pairs, peer, trusted)
    mount, path, query = request_target([uri.partition("#")[0]], stripped, None)
    return RequestFacts.build(
        method=original_method,
        path=path,
        query=query,
        headers=[(k, v) for k, v in pairs if k not in _META],
        body=None,
        peer=peer,
        scheme="http",
        mount=mount,
    )


def _forwarded_prefix(
    pairs: list[tuple[str, str]], peer: str | None, trusted: Sequence[IPNetwork] | None
) -> str:
    """The prefix a trusted proxy stripped before the service (``X-Forwarded-Prefix``).

    The service routes the URI below it, so that is what is decided (``below_mount``: a
    URI not under it is a 400). Where it is not believed (not enabled, or not from a
    trusted proxy) it is refused, not ignored: ignoring it would decide ``/svc/api/...``
    while the service runs ``/api/...``. Opt-in, because nginx and Caddy pass a client's
    copy through unless told otherwise.
    """
    values = [v.strip() for k, v in pairs if k == "x-forwarded-prefix"]
    if not values:
        return ""
    if len(values) > 1:
        raise BadRequestError("more than one X-Forwarded-Prefix header", reason=Reason.BAD_HEADER)
    if trusted is None:
        raise BadRequestError(
            "X-Forwarded-Prefix is not enabled ([proxies] forwarded_prefix)",
            reason=Reason.BAD_HEADER,
        )
    if not is_trusted_peer(peer, trusted):
        raise BadRequestError(
            "X-Forwarded-Prefix from a peer that is not a trusted proxy ([proxies] trusted)",
            reason=Reason.BAD_HEADER,
        )
    if values[0] and not values[0].startswith("/"):
        raise BadRequestError("X-Forwarded-Prefix is not a path", reason=Reason.BAD_HEADER)
    return values[0].rstrip("/")


async def _no_body(max_bytes: int) -> bytes | None:
    # Called only for webhook routes: a proxy's auth sub-request has no body to verify.
    raise SignatureError(
        "webhook signatures cannot be verified by forward auth (the proxy does not send the "
        "body); verify Twilio webhooks in the service itself",
        reason=Reason.INVALID_SIGNATURE,
    )


def _raw(request: Request) -> tuple[str, str, list[tuple[str, str]], str | None]:
    scope = request.scope
    raw = scope.get("raw_path")
    if isinstance(raw, bytes | bytearray):
        path = bytes(raw).split(b"?", 1)[0].decode("latin-1")
    else:
        path = str(scope.get("path", ""))
    query = bytes(scope.get("query_string", b"")).decode("latin-1")
    headers = [(k.decode("latin-1"), v.decode("latin-1")) for k, v in request.headers.raw]
    client = request.client
    return path, query, headers, client.host if client else None


# A 2xx would let the proxy pass the preflight on to the service, where a handler that
# ignores the method runs without credentials; forward auth cannot answer it for the
# proxy either (a 2xx *is* "pass"). So the proxy answers preflights before its auth check
# (docs/forward-auth.md), and one that reaches us is refused.
_PREFLIGHT_REFUSED = Decision.of(
    Reason.POLICY_DENIED,
    "CORS preflights must be answered by the proxy before forward auth (docs/forward-auth.md)",
)


def _deny(decision: Decision, rid: str) -> Response:
    rendered = render(decision, rid)
    headers = [(k, v) for k, v in rendered.headers if k.lower() != "content-length"]
    response = Response(rendered.body, status_code=rendered.status)
    for name, value in headers:
        response.headers.append(name, value)
    # nginx auth_request drops the sub-request's body; the same problem document in a
    # header lets its error_page answer with it (auth_request_set ... $upstream_http_...).
    # json.dumps escapes non-ASCII and control characters, so the value is header-safe.
    response.headers["x-authz-problem"] = rendered.body.decode("ascii")
    return response


class _ForwardAuth:
    """An ASGI endpoint (so Starlette routes every method to it)."""

    def __init__(self, authorizer: Authorizer) -> None:
        self.authorizer = authorizer

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        request = Request(scope, receive)
        response = await self.decide(request)
        await response(scope, receive, send)

    async def decide(self, request: Request) -> Response:
        path, query, headers, peer = _raw(request)
        rid = request_id([(k.lower(), v) for k, v in headers])
        core = self.authorizer.core
        try:
            facts = forwarded_request(
                method=request.method,
                raw_path=path,
                query=query,
                headers=headers,
                peer=peer,
                trusted=core.trusted_proxies if core.forwarded_prefix else None,
            )
            decision = check_host(facts, http_version=request.scope.get("http_version"))
            if decision is None:
                decision = await self.authorizer.adecide(facts, read_body=_no_body)
            if decision.reason is Reason.PREFLIGHT:
                decision = _PREFLIGHT_REFUSED
        except BadRequestError as exc:
            decision = Decision.of(exc.reason, exc.message)
        except Exception:
            _log.exception("forward auth failed; request %s denied", rid)
            decision = internal_error()
        if not decision.allowed:
            return _deny(decision, rid)
        response = Response(b"", status_code=200)
        for name, value in (*identity_headers(decision), ("x-request-id", rid)):
            response.headers.append(name, value)
        # Always present, empty without [database]: a proxy that copies it (Caddy's
        # copy_headers) then never passes on a client's copy or its own placeholder.
        revision = decision.facts_revision
        response.headers[REVISION_HEADER] = "" if revision is None else str(revision)
        response.headers[POLICY_REVISION_HEADER] = decision.policy_revision or ""
        response.headers["cache-control"] = "no-store"
        return response


def _bearer_ok(request: Request, token: bytes) -> bool:
    values = request.headers.getlist("authorization")
    if len(values) != 1:
        return False
    scheme, _, given = values[0].strip().partition(" ")
    if scheme.lower() != "bearer" or len(given) > 4096:
        return False
    # Constant time: the comparison must not reveal how much of the token matched.
    return hmac.compare_digest(given.strip().encode("utf-8", "replace"), token)


def _authzen_error(status: int, message: str, rid: str) -> JSONResponse:
    headers = {"x-request-id": rid, "cache-control": "no-store"}
    if status == 401:
        headers["www-authenticate"] = 'Bearer realm="illumichat-authzen"'
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def _authzen_request_id(request: Request) -> str:
    # The PEP's X-Request-ID as it came (authzen.response_request_id): for the response
    # header only; a log line gets request_id()'s sanitised form.
    return authzen.response_request_id(
        [v.decode("latin-1") for k, v in request.headers.raw if k.lower() == b"x-request-id"]
    )


def _authzen_endpoint(
    authorizer: Authorizer, token: bytes, *, batch: bool
) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        rid = _authzen_request_id(request)
        if not _bearer_ok(request, token):
            return _authzen_error(401, "a valid bearer token is required", rid)
        declared = request.headers.get("content-length")
        body = await read_bounded(declared, request.stream(), authzen.MAX_BODY_BYTES)
        if body is None:
            return _authzen_error(413, "request body too large", rid)
        try:
            doc = strict_json(body)  # NaN, duplicate members: one request, one meaning
        except (ValueError, UnicodeDecodeError, RecursionError):
            return _authzen_error(400, "the body is not JSON", rid)
        if not isinstance(doc, dict):
            return _authzen_error(400, "the body must be a JSON object", rid)
        try:
            if batch:
                answer = await authzen.evaluate_batch(authorizer, doc)
            else:
                answer = await authzen.evaluate(authorizer, authzen.parse_evaluation(doc))
        except authzen.AuthzenRequestError as exc:
            return _authzen_error(400, str(exc), rid)
        except Exception:
            logged = request_id([("x-request-id", rid)])
            _log.exception("AuthZEN evaluation failed; request %s denied", logged)
            return _authzen_error(500, "internal error; no decision was made", rid)
        return JSONResponse(answer, headers={"x-request-id": rid, "cache-control": "no-store"})

    return endpoint


def _authzen_metadata(
    authorizer: Authorizer, pdp_url: str | None
) -> Callable[[Request], Awaitable[Response]]:
    """The PDP metadata. Its URLs are absolute, so they name a host: the configured public
    URL, else the request's own Host (X-Forwarded-Host and -Proto believed only from
    ``[proxies] trusted`` peers, as for Twilio's URL). A client choosing its Host then only
    misleads itself, so the derived answer is ``no-store``: no shared cache keeps it."""

    async def endpoint(request: Request) -> Response:
        rid = _authzen_request_id(request)
        headers = {"x-request-id": rid, "cache-control": "max-age=300"}
        pdp = pdp_url
        if pdp is None:
            hosts = request.headers.getlist("host")
            _, _, pairs, peer = _raw(request)
            try:
                pdp = net.public_url(
                    scheme=str(request.scope.get("scheme", "http")),
                    host_header=hosts[0] if len(hosts) == 1 else None,
                    path="",
                    query="",
                    headers=[(k.lower(), v) for k, v in pairs],
                    peer=peer,
                    trusted=authorizer.core.trusted_proxies,
                    public_base_url=None,
                )
            except BadRequestError as exc:
                return _authzen_error(400, exc.message, rid)
            headers["cache-control"] = "no-store"
        return JSONResponse(authzen.metadata(pdp), headers=headers)

    return endpoint


async def _probe(name: str, call: Callable[[], Any]) -> tuple[str, bool]:
    try:
        result = call()
        if inspect.isawaitable(result):
            result = await result
        return name, result is not False
    except Exception as exc:
        _log.warning("readiness check %s failed: %s", name, type(exc).__name__)
        return name, False


def _readiness(authorizer: Authorizer) -> Callable[[Request], Awaitable[Response]]:
    async def readyz(request: Request) -> Response:
        probe_id = "readyz-probe"
        facts = authorizer.facts
        checks: list[tuple[str, Callable[[], Any]]] = [
            ("policy", lambda: bool(authorizer.core.routes.routes)),
            ("facts", lambda: facts.membership(probe_id, probe_id)),
            ("rate_limits", lambda: asyncio.to_thread(authorizer.rate_limiter.storage.check)),
        ]
        api_keys = authorizer.api_keys
        if api_keys is not None:
            checks.append(("api_keys", lambda: asyncio.to_thread(api_keys.get, probe_id)))
        database = authorizer.database
        if database is not None:
            # Fresh facts: the change feed has confirmed the cache within the bound.
            bound = database.settings.max_staleness_s
            checks.append(("database", lambda: database.feed.status().age_s < bound))
        results = dict([await _probe(name, call) for name, call in checks])
        ready = all(results.values())
        body: dict[str, Any] = {
            "status": "ready" if ready else "unavailable",
            "checks": results,
            "policy": _policy_state(authorizer),
        }
        if database is not None:
            feed = database.feed.status()
            body["facts"] = {
                "revision": feed.applied,
                "database_revision": feed.database,
                "lag_s": round(feed.age_s, 3) if feed.age_s != float("inf") else None,
                "listening": feed.listening,
                "error": feed.error,
            }
        return JSONResponse(body, status_code=200 if ready else 503)

    return readyz


def _policy_state(authorizer: Authorizer) -> dict[str, Any]:
    """The live policy's revision, and the rollout's word on it (``policy status``)."""
    rollout = authorizer.rollout
    if rollout is None:
        return {"source": "files", "revision": authorizer.core.policy_revision, "version": None}
    status = rollout.status()
    return {
        "source": status.source,
        "revision": status.revision,
        "version": status.version,
        "refused": status.refused,
        "error": status.error,
    }


def _metrics(authorizer: Authorizer) -> Callable[[Request], Awaitable[Response]]:
    from ..telemetry.prometheus import CONTENT_TYPE_LATEST, exposition, registry_for

    registry = registry_for(authorizer)

    async def metrics(request: Request) -> Response:
        body = await asyncio.to_thread(exposition, registry)  # a scrape reads the stores
        return Response(body, media_type=CONTENT_TYPE_LATEST, headers={"cache-control": "no-store"})

    return metrics


async def _healthz(request: Request) -> Response:
    return JSONResponse({"status": "ok"})


def create_app(
    *,
    authorizer: Authorizer,
    authzen_token: str | None = None,
    public_url: str | None = None,
    metrics: bool | None = None,
) -> Starlette:
    """The forward-auth app. AuthZEN routes exist only when ``authzen_token`` is set
    (without one they are 404: an unprotected decision API must not be served).
    ``/metrics`` (Prometheus) exists when ``metrics`` is true; ``None``: when the
    authorizer counts decisions (``[telemetry] metrics``).

    ``public_url`` is this server's base URL as AuthZEN clients reach it
    (``https://pdp.example.com``), the PDP identifier in its metadata; without it the
    metadata is built from each request's Host. Raises ``ConfigurationError`` if malformed.
    """
    pdp_url = authzen.check_pdp_url(public_url) if public_url else None
    forward = _ForwardAuth(authorizer)
    routes = [
        Route("/healthz", _healthz, methods=["GET"]),
        Route("/readyz", _readiness(authorizer), methods=["GET"]),
        Route(AUTH_PREFIX, forward),
        Route(AUTH_PREFIX + "/{original:path}", forward),
    ]
    if metrics is None:
        from ..telemetry.counts import DecisionMetrics

        metrics = any(isinstance(o, DecisionMetrics) for o in authorizer.observers)
    if metrics:
        routes.append(Route("/metrics", _metrics(authorizer), methods=["GET"]))
    if authzen_token:
        token = authzen_token.encode("utf-8")
        routes += [
            Route(
                authzen.EVALUATION_PATH,
                _authzen_endpoint(authorizer, token, batch=False),
                methods=["POST"],
            ),
            Route(
                authzen.EVALUATIONS_PATH,
                _authzen_endpoint(authorizer, token, batch=True),
                methods=["POST"],
            ),
            Route(authzen.METADATA_PATH, _authzen_metadata(authorizer, pdp_url), methods=["GET"]),
        ]

    @contextlib.asynccontextmanager
    async def lifespan(_app: Starlette) -> AsyncIterator[None]:
        yield
        await authorizer.aclose()  # the loop's async database connections, before it ends
        if authorizer.decision_log is not None:  # a worker process may end right after
            await asyncio.to_thread(authorizer.decision_log.flush)

    return Starlette(routes=routes, lifespan=lifespan)
