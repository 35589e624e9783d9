"""Real WSGI servers on loopback for the adapter tests, and a raw HTTP/1.1 client.

An HTTP client normalizes what it sends (one Host line, a Content-Length it computed), so
the requests that servers must be seen handling (two Host lines, a chunked body) are
written byte for byte on a socket with :func:`raw_request`.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, NamedTuple
from wsgiref.simple_server import WSGIRequestHandler, make_server

SERVERS = ("waitress", "wsgiref")


class RawResponse(NamedTuple):
    status: int
    headers: dict[str, str]
    body: bytes


class _Quiet(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def serve_wsgi(app: Any, server: str) -> Iterator[int]:
    """``app`` on a real ``server`` (waitress or wsgiref) on a free loopback port; yields
    the port and stops the server when the block ends."""
    if server == "wsgiref":
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

    served = waitress.create_server(app, host="127.0.0.1", port=0, threads=2)
    thread = threading.Thread(target=served.run, daemon=True)
    thread.start()
    try:
        yield int(served.effective_port)  # type: ignore[union-attr]
    finally:
        served.close()
        served.task_dispatcher.shutdown()
        thread.join(10)


def raw_request(port: int, head: bytes, body: bytes = b"") -> RawResponse:
    """Send ``head`` (the request line and header lines, without the blank line; the
    client adds ``Connection: close``) and ``body`` as they are; read the whole answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(head.rstrip(b"\r\n") + b"\r\nConnection: close\r\n\r\n" + body)
        chunks = []
        while data := sock.recv(65536):
            chunks.append(data)
    answer = b"".join(chunks)
    top, _, content = answer.partition(b"\r\n\r\n")
    lines = top.decode("latin-1").split("\r\n")
    headers: dict[str, str] = {}
    for line in lines[1:]:
        name, _, value = line.partition(":")
        headers[name.strip().lower()] = value.strip()
    return RawResponse(int(lines[0].split()[1]), headers, content)
