"""Send a :class:`~illumichat_authz.request.RequestFacts` to your own ASGI or WSGI app.

HTTP clients normalize what they send (httpx resolves ``..``, re-encodes paths, refuses odd
header bytes), so a fuzzed request would not reach your app as drawn. These helpers build
the ASGI scope or WSGI environ a server would, byte for byte, call the app in-process, and
return a :class:`Response` that ``assert_decision`` understands::

    response = call_wsgi(app, make_request("GET", "/api/assistants/a1", cookie=cookie))
    assert_decision(response, 200)

With the strategies (``illumichat_authz.testing.strategies.requests()``) this fuzzes the
endpoints themselves, middleware, framework and all. Nothing here needs a framework.
``serve_asgi`` is the other way round: a real uvicorn on loopback, for the test that must
go through a server once.
"""

from __future__ import annotations

import asyncio
import io
from collections.abc import Awaitable, Callable, Iterable, Iterator, MutableMapping
from contextlib import contextmanager
from typing import Any, NamedTuple
from urllib.parse import unquote, unquote_to_bytes

from illumichat_authz.request import RequestFacts

__all__ = [
    "Response",
    "asgi_scope",
    "call_asgi",
    "call_asgi_sync",
    "call_wsgi",
    "serve_asgi",
    "wsgi_environ",
]

AsgiApp = Callable[
    [
        MutableMapping[str, Any],
        Callable[[], Awaitable[MutableMapping[str, Any]]],
        Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ],
    Awaitable[None],
]
WsgiApp = Callable[[dict[str, Any], Callable[..., Any]], Iterable[bytes]]


class Response(NamedTuple):
    """What the app answered; the attribute names are httpx's, so ``assert_decision``
    reads it like any test client's response."""

    status_code: int
    #: Lower-cased names; a repeated header's values joined by ", ".
    headers: dict[str, str]
    content: bytes


def _latin1(text: str) -> bytes:
    # HTTP headers are bytes: what a str cannot say in Latin-1 goes as UTF-8, as a client
    # that sent those bytes would have.
    try:
        return text.encode("latin-1")
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass")


def asgi_scope(
    request: RequestFacts, *, http_version: str = "1.1", port: int = 4000
) -> dict[str, Any]:
    """The ASGI ``http`` scope a server would build for ``request`` (raw path kept)."""
    return {
        "type": "http",
        "asgi": {"version": "3.0", "spec_version": "2.3"},
        "http_version": http_version,
        "method": request.method,
        "scheme": request.scheme,
        # Decoded, as servers do (frameworks route on it); raw_path is what the middleware
        # and the core look at.
        "path": unquote(request.path),
        "raw_path": _latin1(request.path),
        "query_string": _latin1(request.query),
        "root_path": "",
        "headers": [(_latin1(name), _latin1(value)) for name, value in request.headers],
        "client": (request.peer, port) if request.peer else None,
        "server": ("127.0.0.1", 443 if request.scheme == "https" else 80),
        "state": {},
    }


async def call_asgi(app: AsgiApp, request: RequestFacts, *, http_version: str = "1.1") -> Response:
    """Call ``app`` with ``request`` (its ``body`` as one message) and collect the answer."""
    body = request.body or b""
    messages = [{"type": "http.request", "body": body, "more_body": False}]
    status = 0
    headers: dict[str, str] = {}
    chunks: list[bytes] = []

    async def receive() -> MutableMapping[str, Any]:
        if messages:
            return messages.pop()
        return {"type": "http.disconnect"}

    async def send(message: MutableMapping[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            if status:
                raise AssertionError("the app started two responses")
            status = int(message["status"])
            for name, value in message.get("headers", ()):
                key = bytes(name).decode("latin-1").lower()
                text = bytes(value).decode("latin-1")
                headers[key] = f"{headers[key]}, {text}" if key in headers else text
        elif message["type"] == "http.response.body":
            chunks.append(bytes(message.get("body", b"")))

    await app(asgi_scope(request, http_version=http_version), receive, send)
    if not status:
        raise AssertionError("the app answered nothing")
    return Response(status, headers, b"".join(chunks))


def call_asgi_sync(app: AsgiApp, request: RequestFacts, *, http_version: str = "1.1") -> Response:
    """:func:`call_asgi` from synchronous code (a hypothesis test, say)."""
    return asyncio.run(call_asgi(app, request, http_version=http_version))


def wsgi_environ(request: RequestFacts) -> dict[str, Any]:
    """The PEP 3333 environ a server would build for ``request``.

    ``REQUEST_URI`` carries the raw path (as gunicorn's ``RAW_URI`` and uwsgi's do);
    repeated headers are joined with a comma, as servers do.
    """
    body = request.body or b""
    target = request.path + (f"?{request.query}" if request.query else "")
    environ: dict[str, Any] = {
        "REQUEST_METHOD": request.method,
        "SCRIPT_NAME": "",
        # PEP 3333: the decoded path's bytes as Latin-1 characters (frameworks route on it).
        "PATH_INFO": unquote_to_bytes(request.path).decode("latin-1"),
        "REQUEST_URI": target,
        "QUERY_STRING": request.query,
        "SERVER_NAME": "testserver",
        "SERVER_PORT": "443" if request.scheme == "https" else "80",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "REMOTE_ADDR": request.peer or "",
        "wsgi.version": (1, 0),
        "wsgi.url_scheme": request.scheme,
        "wsgi.input": io.BytesIO(body),
        "wsgi.errors": io.StringIO(),
        "wsgi.multithread": False,
        "wsgi.multiprocess": False,
        "wsgi.run_once": False,
    }
    for name, value in request.headers:
        text = _latin1(value).decode("latin-1")  # PEP 3333: bytes as Latin-1 characters
        if name == "content-type":
            environ["CONTENT_TYPE"] = text
            continue
        if name == "content-length":
            environ["CONTENT_LENGTH"] = text
            continue
        key = "HTTP_" + name.upper().replace("-", "_")
        environ[key] = f"{environ[key]},{text}" if key in environ else text
    if body and "CONTENT_LENGTH" not in environ:
        environ["CONTENT_LENGTH"] = str(len(body))
    return environ


def call_wsgi(app: WsgiApp, request: RequestFacts) -> Response:
    """Call ``app`` with ``request`` and collect the answer."""
    started: list[tuple[str, list[tuple[str, str]]]] = []

    def start_response(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        started.append((status, headers))
        return lambda data: None

    result = app(wsgi_environ(request), start_response)
    try:
        content = b"".join(result)
    finally:
        close = getattr(result, "close", None)
        if close is not None:
            close()
    if len(started) != 1:
        raise AssertionError(f"the app called start_response {len(started)} times")
    status, raw_headers = started[0]
    headers: dict[str, str] = {}
    for name, value in raw_headers:
        key = name.lower()
        headers[key] = f"{headers[key]}, {value}" if key in headers else value
    return Response(int(status.split(" ", 1)[0]), headers, content)


@contextmanager
def serve_asgi(app: Any, **config: Any) -> Iterator[str]:
    """``app`` on a real uvicorn on a free loopback port while the block runs; yields its
    base URL. ``config`` goes to ``uvicorn.Config`` (needs the ``server`` extra)."""
    from illumichat_authz.server.background import BackgroundServer

    with BackgroundServer(app, **config) as server:
        yield server.url
