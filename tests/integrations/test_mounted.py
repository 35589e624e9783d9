"""Every adapter under a mount, behind a real server: the library classifies exactly the
path the framework routes (below ``/svc``), so a guest under ``undeclared =
"authenticated"`` never runs a handler the policy forbids and the public widget answers.

What each server puts in the scope or environ is in docs/integrations.md ("Mounted under
a prefix"); the apps are in ``mounted_apps.py``.
"""

from __future__ import annotations

import http.client
import os
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from mounted_apps import (
    PROTECTED,
    WIDGET,
    build_authorizer,
    cookie,
    fastapi_app,
    starlette_app,
)

import illumichat_authz
from illumichat_authz.integrations.asgi import AuthzMiddleware
from illumichat_authz.server.background import BackgroundServer
from illumichat_authz.testing import sign_twilio
from illumichat_authz.testing.fixtures import TWILIO_AUTH_TOKEN

pytestmark = pytest.mark.interop

SRC = Path(illumichat_authz.__file__).resolve().parents[1]  # what this test imports
HERE = Path(__file__).resolve().parent

#: Targets that name a protected handler through an encoded or odd mount: never run one.
TRICKS = [
    "/svc%2Fapi/workspaces/w1/settings",
    "/svc/../api/workspaces/w1/settings",
    "/svc/api/../api/workspaces/w1/settings",
    "/SVC/api/workspaces/w1/settings",
    "/sv%63/api/workspaces/w1/settings",
    "//svc/api/workspaces/w1/settings",
    "/svcx/api/workspaces/w1/settings",
]


def send(
    base: str, method: str, target: str, headers: dict[str, str] | None = None, body: str = ""
) -> int:
    """The status for ``target`` sent exactly as written (http.client does not normalize)."""
    host, port = base.removeprefix("http://").rsplit(":", 1)
    connection = http.client.HTTPConnection(host, int(port), timeout=10)
    try:
        connection.request(method, target, body=body or None, headers=headers or {})
        response = connection.getresponse()
        response.read()
        return response.status
    finally:
        connection.close()


def check_mounted(
    base: str,
    ran: Callable[[], list[str]],
    *,
    prefix: str = "/svc",
    tricks: bool = True,
    refused: tuple[int, ...] = (400, 404),
) -> None:
    """The guest is refused every protected handler and the widget answers anyone, with
    ``prefix`` in front of the app's own paths (``""``: a proxy stripped it already)."""
    guest = {"cookie": cookie("gus")}
    for name, (method, path) in PROTECTED.items():
        assert send(base, method, prefix + path, guest) == 403, name
    method, path = WIDGET
    assert send(base, method, prefix + path) == 200
    assert ran() == ["widget"]
    # The owner still gets through: the mount is not simply refused.
    method, path = PROTECTED["billing"]
    assert send(base, method, prefix + path, {"cookie": cookie("alice")}) == 200
    assert ran() == ["widget", "billing"]
    if tricks:
        for target in TRICKS:
            status = send(base, "PATCH", target, guest)
            assert status in refused, (target, status)
        assert ran() == ["widget", "billing"]


class Recorder:
    def __init__(self) -> None:
        self.names: list[str] = []

    def __call__(self, name: str) -> None:
        self.names.append(name)

    def ran(self) -> list[str]:
        return list(self.names)


@contextmanager
def uvicorn(app: Any, **config: Any) -> Iterator[str]:
    with BackgroundServer(app, lifespan="off", ws="none", **config) as server:
        yield server.url


# --- ASGI ------------------------------------------------------------------------------


@pytest.mark.parametrize("http", ["h11", "httptools"])
def test_uvicorn_root_path(http: str) -> None:
    # uvicorn --root-path /svc sits behind a proxy that stripped /svc: it puts /svc back in
    # front of path and raw_path, and the app routes what follows.
    record = Recorder()
    app = AuthzMiddleware(starlette_app(record), authorizer=build_authorizer())
    with uvicorn(app, http=http, root_path="/svc") as base:
        check_mounted(base, record.ran, prefix="", tricks=False)
        for target in (t.replace("/svc", "", 1) for t in TRICKS if t.startswith("/svc/")):
            assert send(base, "PATCH", target, {"cookie": cookie()}) in (400, 404), target
        # What the proxy would have passed on unstripped is routed as /svc/api/...: no handler.
        assert send(base, "PATCH", "/svc/api/workspaces/w1/settings", {"cookie": cookie()}) == 404
    assert record.ran() == ["widget", "billing"]


def test_starlette_mount() -> None:
    from starlette.applications import Starlette
    from starlette.routing import Mount

    record = Recorder()
    inner = AuthzMiddleware(starlette_app(record), authorizer=build_authorizer())
    with uvicorn(Starlette(routes=[Mount("/svc", app=inner)])) as base:
        check_mounted(base, record.ran)


@pytest.mark.parametrize("middleware", [True, False], ids=["middleware", "dependencies"])
def test_fastapi_root_path(middleware: bool) -> None:
    record = Recorder()
    app = fastapi_app(record, build_authorizer(), middleware=middleware)
    with uvicorn(app) as base:
        check_mounted(base, record.ran)
        # Behind a proxy that strips /svc (FastAPI's own recipe for root_path) the app
        # routes the target whole, and so does the library.
        record.names.clear()
        check_mounted(base, record.ran, prefix="", tricks=False)


# --- WSGI ------------------------------------------------------------------------------


def test_waitress_url_prefix_flask_extension(tmp_path: Path) -> None:
    record = tmp_path / "ran.txt"
    argv = ["waitress", "--url-prefix=/svc", "--call", "mounted_apps:waitress_flask"]
    with served(argv, record) as base:
        check_mounted(base, lambda: record.read_text().split())
        # Outside the prefix waitress leaves PATH_INFO whole and Flask routes it whole:
        # classified whole, so the guest is refused there too (and the widget answers).
        record.write_text("")
        check_mounted(base, lambda: record.read_text().split(), prefix="", tricks=False)


def test_dispatcher_middleware_flask_extension(tmp_path: Path) -> None:
    record = tmp_path / "ran.txt"
    with served(["gunicorn", "-w", "1", "mounted_apps:dispatcher_flask()"], record) as base:
        check_mounted(base, lambda: record.read_text().split())


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def served(argv: list[str], record: Path, **env: str) -> Iterator[str]:
    """``python -m <argv> <listen>`` (gunicorn, waitress or uvicorn) serving ``mounted_apps`` until
    the block ends; handlers record to ``record``."""
    record.touch()
    port = _free_port()
    listen = ["-b", f"127.0.0.1:{port}"] if argv[0] == "gunicorn" else [f"--port={port}"]
    if argv[0] != "gunicorn":
        listen.append("--host=127.0.0.1")
    path = os.pathsep.join([str(SRC), str(HERE)])
    environ = {**os.environ, "MOUNTED_RECORD": str(record), "PYTHONPATH": path, **env}
    command = [sys.executable, "-m", argv[0], *listen, *argv[1:]]
    proc = subprocess.Popen(command, env=environ, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        deadline = time.monotonic() + 20
        while True:
            if proc.poll() is not None:
                raise RuntimeError(proc.stderr.read().decode() if proc.stderr else argv[0])
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        if proc.stderr:
            proc.stderr.close()


@pytest.mark.parametrize(
    ("app", "drf_only"),
    [
        ("mounted_apps:gunicorn_wsgi()", "0"),
        ("mounted_apps:gunicorn_django()", "0"),
        ("mounted_apps:gunicorn_django()", "1"),
    ],
    ids=["wsgi", "django", "drf"],
)
def test_gunicorn_script_name(app: str, drf_only: str, tmp_path: Path) -> None:
    record = tmp_path / "ran.txt"
    env = {"SCRIPT_NAME": "/svc", "MOUNTED_DRF_ONLY": drf_only}
    with served(["gunicorn", "-w", "1", app], record, **env) as base:
        # gunicorn answers a target outside SCRIPT_NAME itself ("500 Bad Request").
        check_mounted(base, lambda: record.read_text().split(), refused=(400, 404, 500))
        # gunicorn itself refuses a target outside SCRIPT_NAME; nothing runs either way.
        assert send(base, "PATCH", "/api/workspaces/w1/settings", {"cookie": cookie()}) >= 400
    assert "settings" not in record.read_text().split()


def test_uvicorn_root_path_django_asgi(tmp_path: Path) -> None:
    # Django's ASGI handler cuts root_path from path itself (path_info); the adapter
    # classifies the raw_path below the same prefix.
    record = tmp_path / "ran.txt"
    argv = ["uvicorn", "--root-path", "/svc", "--factory", "mounted_apps:uvicorn_django"]
    with served([*argv, "--lifespan", "off"], record) as base:
        check_mounted(base, lambda: record.read_text().split(), prefix="", tricks=False)
        for target in ("/%2Fapi/workspaces/w1/settings", "/../api/workspaces/w1/settings"):
            assert send(base, "PATCH", target, {"cookie": cookie()}) in (400, 404), target
    assert "settings" not in record.read_text().split()


def test_twilio_webhook_under_root_path_signs_the_public_url() -> None:
    # Twilio signed the URL it called, prefix included; the route is below the prefix.
    record = Recorder()
    app = AuthzMiddleware(starlette_app(record), authorizer=build_authorizer())
    with uvicorn(app, root_path="/svc") as base:
        form = {"From": "+15550100", "Body": "hi"}
        path = "/api/sms/webhook/a-pub"
        signature = sign_twilio(f"{base}/svc{path}", form, token=TWILIO_AUTH_TOKEN)
        body = urlencode(form)
        headers = {
            "content-type": "application/x-www-form-urlencoded",
            "x-twilio-signature": signature,
        }
        assert send(base, "POST", path, headers, body) == 200
        wrong = sign_twilio(f"{base}{path}", form, token=TWILIO_AUTH_TOKEN)
        assert send(base, "POST", path, {**headers, "x-twilio-signature": wrong}, body) == 403
    assert record.ran() == ["sms"]
