"""Pure ASGI middleware: decide every HTTP request and websocket before the app runs.

On allow the request goes on untouched, with ``scope["user"]`` (the Principal, or
``ANONYMOUS`` on public and webhook routes), ``scope["auth"]`` (the Decision) and the
same two under ``scope["state"]`` (``principal``, ``authz_decision``). On deny the
response comes from ``render_denial`` and the app is never called. Needs no framework.
"""

from __future__ import annotations

from collections.abc import AsyncGenerator, Awaitable, Callable, MutableMapping
from typing import Any

from ..authorizer import Authorizer
from ..decision import Decision
from ..errors import BadRequestError
from ..render import REVISION_HEADER, revision_headers
from ..request import RequestFacts
from ._common import (
    ANONYMOUS,
    answers_itself,
    below_mount,
    check_host,
    internal_error,
    log,
    quote_path,
    read_bounded,
    render,
    request_id,
)
from .route_check import check_asgi

__all__ = ["AuthzMiddleware", "facts_from_scope"]

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


def facts_from_scope(scope: Scope) -> RequestFacts:
    """The core's view of an ASGI ``http`` or ``websocket`` scope."""
    raw = scope.get("raw_path")
    if type(raw) is bytes or isinstance(raw, bytearray):
        # ASGI: raw_path is "the original HTTP path component, unmodified from the bytes
        # that were received"; some servers leave the query on it.
        path = (raw if b"?" not in raw else raw.split(b"?", 1)[0]).decode("latin-1")
    else:
        path = quote_path(str(scope.get("path", "")))
    mount = ""
    root = scope.get("root_path")
    if root:  # mounted: the app routes what follows root_path (one check when not)
        mount, path = _below_root(path, str(root), str(scope.get("path", "")))
    websocket = scope["type"] == "websocket"
    scheme = scope.get("scheme") or ("ws" if websocket else "http")
    client = scope.get("client")
    query = scope.get("query_string")
    method = "GET" if websocket else scope.get("method", "")
    # ASGI header names are lower-cased bytes already; lower() again for lax servers.
    headers = tuple(
        [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in scope.get("headers", ())]
    )
    # tuple.__new__: the fields in order, without the NamedTuple's Python-level __new__.
    return _new_tuple(
        RequestFacts,
        (
            # A websocket handshake is a GET and is classified like one.
            method if type(method) is str else str(method),
            path,
            query.decode("latin-1") if query else "",
            headers,
            None,
            str(client[0]) if client else None,
            _SCHEMES.get(scheme, scheme) if type(scheme) is str else str(scheme),
            mount,
        ),
    )


def _below_root(raw: str, root: str, path: str) -> tuple[str, str]:
    """The mount and the raw path the app routes, from ``root_path`` (else a 400).

    ASGI puts ``root_path`` in ``path`` too (uvicorn ``--root-path`` prepends it to what the
    proxy sent, Starlette's ``Mount`` leaves ``path`` whole). The app routes what follows
    it on a segment boundary, and a path outside it whole: Starlette's ``get_route_path``.
    """
    if path == root:
        routed = ""
    elif path.startswith(root) and path[len(root)] == "/":
        routed = path[len(root) :]
    else:
        routed = path
    return below_mount(raw, root, routed.encode("utf-8", "surrogatepass"))


_new_tuple = tuple.__new__
_SCHEMES = {"ws": "http", "wss": "https"}


class _ClientGone(Exception):
    """The client disconnected while we read the body."""


class _Body:
    """Reads the body only if the core asks (webhooks), then replays it to the app."""

    __slots__ = ("_facts", "_receive", "_replayed", "body", "disconnected")

    def __init__(self, receive: Receive, facts: RequestFacts) -> None:
        self._receive = receive
        self._facts = facts
        self.body: bytes | None = None
        self.disconnected = False
        self._replayed = False

    async def read(self, max_bytes: int) -> bytes | None:
        declared = self._facts.header("content-length")
        self.body = await read_bounded(declared, self._chunks(), max_bytes)
        return self.body

    async def _chunks(self) -> AsyncGenerator[bytes, None]:
        while True:
            message = await self._receive()
            if message["type"] == "http.disconnect":
                self.disconnected = True
                raise _ClientGone
            yield bytes(message.get("body", b""))
            if not message.get("more_body", False):
                return

    async def replay(self) -> Message:
        # Byte for byte what we read, in one message; then the real channel (disconnect).
        if not self._replayed and self.body is not None:
            self._replayed = True
            return {"type": "http.request", "body": self.body, "more_body": False}
        return await self._receive()


class AuthzMiddleware:
    """``AuthzMiddleware(app, authorizer=...)``: wrap any ASGI app (Starlette, FastAPI...)."""

    def __init__(self, app: ASGIApp, *, authorizer: Authorizer) -> None:
        self.app = app
        self.authorizer = authorizer
        check_asgi(app, authorizer)  # [routes] check_app, for a Starlette or FastAPI app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] not in ("http", "websocket"):
            await self.app(scope, receive, send)  # lifespan and anything else
            return
        facts: RequestFacts | None = None
        body: _Body | None = None
        try:
            facts = facts_from_scope(scope)
            decision = check_host(facts, http_version=scope.get("http_version"))
            if decision is None:
                # The body is read only if the core asks for it (webhooks).
                body = _Body(receive, facts)
                read_body = body.read if scope["type"] == "http" else None
                decision = await self.authorizer.adecide(facts, read_body=read_body)
            if decision.allowed:
                # Inside the try: a scope we cannot extend (a "state" that is not a
                # mapping) is our 500, not the server's.
                _add_auth(scope, decision)
        except BadRequestError as exc:  # the target and root_path disagree (facts_from_scope)
            await self._deny(scope, send, Decision.of(exc.reason, exc.message), request_id([]))
            return
        except Exception:
            rid = request_id(facts.headers if facts is not None else [])
            log.exception("authorization middleware failed; request %s denied", rid)
            await self._deny(scope, send, internal_error(), rid)
            return
        if body is not None and body.disconnected:
            return  # nobody to answer, and the app never sees a half request
        if answers_itself(decision):
            # The request id is only needed when we answer ourselves.
            await self._deny(scope, send, decision, request_id(facts.headers))
            return
        # Only a body we read must be replayed; otherwise the app reads the real channel.
        if body is not None and body.body is not None:
            receive = body.replay
        if scope["type"] == "http":
            send = _with_request_id(send, request_id(facts.headers), decision)
        await self.app(scope, receive, send)

    async def _deny(self, scope: Scope, send: Send, decision: Decision, rid: str) -> None:
        rendered = render(decision, rid)
        headers = [(k.lower().encode("latin-1"), v.encode("latin-1")) for k, v in rendered.headers]
        if scope["type"] == "http":
            await send(
                {"type": "http.response.start", "status": rendered.status, "headers": headers}
            )
            await send({"type": "http.response.body", "body": rendered.body})
        elif "websocket.http.response" in (scope.get("extensions") or {}):
            start = {"type": "websocket.http.response.start", "status": rendered.status}
            await send({**start, "headers": headers})
            await send({"type": "websocket.http.response.body", "body": rendered.body})
        else:
            # RFC 6455 §7.4.1: 1008 "policy violation"; 1011 when we failed ourselves.
            code = 1011 if decision.status >= 500 else 1008
            await send({"type": "websocket.close", "code": code, "reason": decision.reason.value})


_REQUEST_ID = b"x-request-id"
_REVISION = REVISION_HEADER.encode("ascii")


def _with_request_id(send: Send, rid: str, decision: Decision) -> Send:
    """``send``, adding ``x-request-id`` to the app's response unless it set one: an
    allowed response carries the id too, as every denial does. With ``[database]``, also
    the facts revision the decision saw (``x-authz-revision``) and the policy's."""
    value = rid.encode("latin-1")
    extra = tuple(
        (name.encode("ascii"), v.encode("ascii")) for name, v in revision_headers(decision)
    )

    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            headers = message.get("headers") or ()
            has_id = has_revision = False
            for name, _ in headers:
                lowered = name.lower()
                has_id = has_id or lowered == _REQUEST_ID
                has_revision = has_revision or lowered == _REVISION
            ours = [] if has_id else [(_REQUEST_ID, value)]
            if extra and not has_revision:
                ours += extra
            if ours:  # a new list: the app's own may be a tuple, or shared
                message["headers"] = [*headers, *ours]
        await send(message)

    return sending


def _add_auth(scope: Scope, decision: Decision) -> None:
    # The scope is this request's own (ASGI), so it is extended in place, as Starlette's
    # AuthenticationMiddleware does; "state" is copied first, in case a server shares one.
    state = scope.get("state")
    scope["state"] = {
        **(state or {}),
        "principal": decision.principal,
        "authz_decision": decision,
    }
    scope["user"] = decision.principal or ANONYMOUS
    scope["auth"] = decision
