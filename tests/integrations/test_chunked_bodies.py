"""A Twilio webhook sent with ``Transfer-Encoding: chunked`` (no Content-Length) and a
signature computed by Twilio's own ``twilio`` package: verified, and handed to the app
byte for byte, under a real gunicorn (a WSGI app and a Django app), werkzeug's server and
waitress; bounded by ``max_body_bytes`` (413, the app never runs); and 400 where the
server cannot delimit such a body (wsgiref), never a verdict on an empty body.
"""

from __future__ import annotations

import io
import json
import os
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from urllib.parse import urlencode

import pytest
from conftest import FORM, TWILIO_TOKEN, WEBHOOK, make_authorizer
from twilio.request_validator import RequestValidator
from wsgi_servers import RawResponse, echo, raw_request, serve_wsgi

import illumichat_authz
from illumichat_authz.integrations.wsgi import AuthzWSGIMiddleware, read_environ_body

pytestmark = pytest.mark.interop

HERE = Path(__file__).parent
# The worker imports the library the tests import (a source tree or site-packages).
SRC = Path(illumichat_authz.__file__).parents[1]
BODY = urlencode(FORM).encode()


def chunked(body: bytes, size: int = 7) -> bytes:
    """RFC 9112 §7.1 chunked framing of ``body``, ``size`` bytes a chunk."""
    parts = [
        b"%x\r\n%s\r\n" % (len(body[i : i + size]), body[i : i + size])
        for i in range(0, len(body), size)
    ]
    return b"".join(parts) + b"0\r\n\r\n"


def send_webhook(
    port: int, body: bytes = BODY, *, signed: bool = True, path: str = WEBHOOK
) -> RawResponse:
    """POST the webhook chunked, signed for the URL Twilio would have called."""
    url = f"http://127.0.0.1:{port}{path}"
    params = dict(FORM) if body == BODY else {}
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(url, params) if signed else "x"
    head = (
        f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\n"
        "Content-Type: application/x-www-form-urlencoded\r\n"
        f"X-Twilio-Signature: {signature}\r\nTransfer-Encoding: chunked"
    ).encode()
    return raw_request(port, head, chunked(body))


def ran(response: RawResponse) -> dict[str, object] | None:
    """What the handler reported, or ``None`` when it never ran (our problem+json)."""
    doc = json.loads(response.body)
    return doc if doc.get("ran") else None


@pytest.fixture(scope="module", params=["wsgi_app", "django_app"])
def gunicorn(request: pytest.FixtureRequest) -> Iterator[int]:
    """``gunicorn_apps:<app>`` under a real gunicorn, on a socket we bound (fd://)."""
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(16)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), str(HERE)])}
    command = [sys.executable, "-m", "gunicorn", "--bind", f"fd://{listener.fileno()}"]
    command += ["--workers", "1", "--log-level", "warning", f"gunicorn_apps:{request.param}"]
    process = subprocess.Popen(command, env=env, cwd=HERE, pass_fds=[listener.fileno()])
    port = int(listener.getsockname()[1])
    try:
        # Connections wait in the backlog until the worker has imported the app: one
        # request with a generous timeout, so the tests' own ones meet a running worker.
        up = raw_request(port, b"GET /api/widget/a1/config HTTP/1.1\r\nHost: x", timeout_s=120)
        assert up.status in (200, 404), up  # the Django app routes the webhook only
        yield port
    finally:
        process.terminate()
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        listener.close()


def test_a_chunked_webhook_on_gunicorn(gunicorn: int) -> None:
    answer = send_webhook(gunicorn)
    assert answer.status == 200, answer.body
    seen = ran(answer)
    assert seen is not None
    assert seen["body"] == BODY.decode("latin-1")  # exactly the bytes that were signed
    if "form" in seen:  # Django: request.POST parses the same bytes
        assert seen["form"] == FORM


@pytest.mark.parametrize("gunicorn", ["django_app"], indirect=True)  # the DRF view's app
def test_a_chunked_webhook_reaches_drf_request_data_on_gunicorn(gunicorn: int) -> None:
    answer = send_webhook(gunicorn, path="/api/sms/webhook/a2")
    assert answer.status == 200, answer.body
    seen = ran(answer)
    assert seen is not None
    assert seen["form"] == FORM


def test_a_chunked_webhook_over_the_limit_is_413_on_gunicorn(gunicorn: int) -> None:
    answer = send_webhook(gunicorn, b"Body=" + b"a" * 70_000)
    assert answer.status == 413
    assert ran(answer) is None


def test_a_chunked_webhook_with_a_bad_signature_is_403_on_gunicorn(gunicorn: int) -> None:
    answer = send_webhook(gunicorn, signed=False)
    assert answer.status == 403
    assert ran(answer) is None


@pytest.mark.parametrize("server", ["werkzeug", "waitress"])
def test_a_chunked_webhook_on_servers_that_delimit_it(server: str) -> None:
    app = AuthzWSGIMiddleware(echo, authorizer=make_authorizer())
    with serve_wsgi(app, server) as port:
        answer = send_webhook(port)
        assert answer.status == 200, answer.body
        seen = ran(answer)
        assert seen is not None
        assert seen["body"] == BODY.decode("latin-1")
        assert send_webhook(port, b"Body=" + b"a" * 70_000).status == 413


def test_a_chunked_webhook_on_wsgiref_is_400_not_a_signature_verdict() -> None:
    # wsgiref neither dechunks nor sets wsgi.input_terminated: the body cannot be found.
    app = AuthzWSGIMiddleware(echo, authorizer=make_authorizer())
    with serve_wsgi(app, "wsgiref") as port:
        answer = send_webhook(port)
        assert answer.status == 400
        assert json.loads(answer.body)["reason"] == "malformed_request"


def test_a_terminated_body_is_read_at_most_one_byte_past_the_limit() -> None:
    stream = io.BytesIO(b"a" * 1000)
    assert read_environ_body({"wsgi.input": stream, "wsgi.input_terminated": True}, 10) is None
    assert stream.tell() == 11  # enough to know it is too large, no more
    environ = {
        "wsgi.input": io.BytesIO(b"abc"),
        "wsgi.input_terminated": True,
        "HTTP_TRANSFER_ENCODING": "chunked",
    }
    assert read_environ_body(environ, 10) == b"abc"
    # The app is handed the bytes as a body of declared length, as waitress hands one.
    assert environ["CONTENT_LENGTH"] == "3"
    assert "HTTP_TRANSFER_ENCODING" not in environ
    assert environ["wsgi.input"].read() == b"abc"
