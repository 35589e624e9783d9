"""Real WSGI servers on loopback for the adapter tests, and a raw HTTP/1.1 client.

An HTTP client normalizes what it sends (one Host line, a Content-Length it computed), so
the requests that servers must be seen handling (two Host lines, a chunked body) are
written byte for byte on a socket with :func:`raw_request`.
"""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple
from wsgiref.simple_server import WSGIRequestHandler, make_server

SERVERS = ("waitress", "werkzeug", "wsgiref")


class RawResponse(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


def echo(environ: dict[str, Any], start_response: Any) -> list[bytes]:
    """A WSGI app answering with the body it was handed (``CONTENT_LENGTH`` bytes)."""
    length = int(environ.get("CONTENT_LENGTH") or 0)
    body = environ["wsgi.input"].read(length)
    start_response("200 OK", [("content-type", "application/json")])
    return [json.dumps({"ran": True, "body": body.decode("latin-1")}).encode()]


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_wsgi(app: Any, server: str) -> Iterator[int]:
    """``app`` on a real ``server`` (one of :data:`SERVERS`) on a free loopback port;
    yields the port and stops the server when the block ends."""
    if server in ("wsgiref", "werkzeug"):
        httpd: Any
        if server == "werkzeug":
            from werkzeug.serving import make_server as werkzeug_server

            httpd = werkzeug_server("127.0.0.1", 0, app, threaded=True)
        else:
            httpd = make_server("127.0.0.1", 0, app, handler_class=_Quiet)
        thread = threading.Thread(target=httpd.serve_forever, daemon=True)
        thread.start()
        try:
            yield int(httpd.server_port)
        finally:
            httpd.shutdown()
            httpd.server_close()
            thread.join(10)
        return
    import waitress
    from waitress import wasyncore

    served: Any = waitress.create_server(app, host="127.0.0.1", port=0, threads=2)
    stop = threading.Event()

    def run() -> None:
        # waitress's own loop, a short poll at a time, so that it can be stopped and its
        # sockets closed here, in the loop's own thread: closing them from another one
        # races its poll (and the trigger its task threads pull).
        while not stop.is_set():
            wasyncore.loop(timeout=0.05, map=served._map, count=1)
        served.task_dispatcher.shutdown()
        for dispatcher in list(served._map.values()):
            dispatcher.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    try:
        yield int(served.effective_port)
    finally:
        stop.set()
        thread.join(10)


def raw_request(port: int, head: bytes, body: bytes = b"", *, timeout_s: float = 10) -> RawResponse:
    """Send ``head`` (the request line and header lines, without the blank line; the
    client adds ``Connection: close``) and ``body`` as they are; read one whole answer
    (to its Content-Length, its last chunk, or the server closing)."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout_s) as sock:
        sock.sendall(head.rstrip(b"\r\n") + b"\r\nConnection: close\r\n\r\n" + body)
        answer = b""
        while (parsed := _parse(answer)) is None and (data := sock.recv(65536)):
            answer += data
    return parsed or _parse(answer, eof=True) or RawResponse(0, {}, answer)


def _parse(answer: bytes, *, eof: bool = False) -> RawResponse | None:
    """The response in ``answer`` if it is complete (or the connection ended)."""
    top, blank, content = answer.partition(b"\r\n\r\n")
    if not blank:
        return None
    lines = top.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    if headers.get("transfer-encoding") == "chunked":
        if not content.endswith(b"0\r\n\r\n"):
            return None
        content = _dechunk(content)
    elif "content-length" in headers:
        if len(content) < int(headers["content-length"]):
            return None
    elif not eof and int(lines[0].split()[1]) not in (204, 304):
        return None
    return RawResponse(int(lines[0].split()[1]), headers, content)


def _dechunk(data: bytes) -> bytes:
    out = []
    while True:
        size_line, _, data = data.partition(b"\r\n")
        size = int(size_line.split(b";")[0], 16)
        if size == 0:
            return b"".join(out)
        out.append(data[:size])
        data = data[size + 2 :]
