"""``illumichat-authz serve`` end to end: a real process on a loopback port (or a unix
socket), over http and https, with one or two workers, and the app factory under uvicorn's
own command line."""

from __future__ import annotations

import datetime
import ipaddress
import json
import os
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest

import illumichat_authz
from illumichat_authz.cli import main

CLI = [sys.executable, "-m", "illumichat_authz.cli"]
TOKEN = "serve-cli-test-token-0123456789"
SOURCE = str(Path(illumichat_authz.__file__).resolve().parents[1])
EVALUATION = {
    "subject": {"type": "user", "id": "bob"},
    "action": {"name": "assistant:read"},
    "resource": {"type": "assistant", "id": "a1"},
}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.fixture
def config(tmp_path: Path) -> Path:
    facts = tmp_path / "facts.json"
    facts.write_text(
        json.dumps(
            {
                "memberships": [{"user": "bob", "workspace": "w1", "role": "member"}],
                "assistants": [
                    {"id": "a1", "workspace": "w1", "visibility": "workspace", "creator": "bob"}
                ],
            }
        )
    )
    path = tmp_path / "authz.toml"
    path.write_text(
        '[facts]\nfile = "facts.json"\n[session]\nsecrets = ["a-dev-secret-for-serve"]\n'
    )
    return path


@contextmanager
def running(
    argv: list[str],
    ready: Callable[[], bool],
    *,
    env: dict[str, str] | None = None,
    stdout: Path | None = None,
    cwd: Path | None = None,
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``argv`` until the block ends; wait until ``ready()`` (a connection) holds.

    The child imports this very ``illumichat_authz`` wherever it runs (``cwd``)."""
    out = stdout.open("wb") if stdout is not None else subprocess.DEVNULL
    env = {**os.environ, "PYTHONPATH": SOURCE, **(env or {})}
    proc = subprocess.Popen(argv, env=env, stdout=out, stderr=subprocess.PIPE, cwd=cwd)
    try:
        deadline = time.monotonic() + 30
        while not ready():
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)
        yield proc
    finally:
        proc.terminate()
        proc.wait(timeout=15)
        if proc.stderr:
            proc.stderr.close()
        if stdout is not None:
            out.close()  # type: ignore[union-attr]


def listening(port: int) -> Callable[[], bool]:
    def ready() -> bool:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return True
        except OSError:
            return False

    return ready


@pytest.fixture
def served(config: Path) -> Iterator[str]:
    port = free_port()
    env = {"ILLUMICHAT_AUTHZ_AUTHZEN_TOKEN": TOKEN}
    argv = [*CLI, "serve", "--config", str(config), "--port", str(port)]
    with running(argv, listening(port), env=env):
        yield f"http://127.0.0.1:{port}"


def check_serves(client: httpx.Client) -> None:
    """Forward auth denies and allows, and AuthZEN (its token given) decides."""
    assert client.get("/healthz").status_code == 200
    assert client.get("/auth/api/widget/a1/config").status_code == 200
    assert client.get("/auth/api/assistants/a1").status_code == 401
    auth = {"authorization": f"Bearer {TOKEN}"}
    answer = client.post("/access/v1/evaluation", json=EVALUATION, headers=auth)
    assert answer.json()["decision"] is True


@pytest.mark.interop
def test_serve_answers_health_auth_and_authzen(served: str) -> None:
    with httpx.Client(base_url=served, timeout=10) as client:
        assert client.get("/healthz").status_code == 200
        assert client.get("/readyz").json()["status"] == "ready"
        assert client.get("/auth/api/widget/a1/config").status_code == 200
        assert client.get("/auth/api/assistants/a1").status_code == 401
        doc = {
            "subject": {"type": "user", "id": "bob"},
            "action": {"name": "assistant:read"},
            "resource": {"type": "assistant", "id": "a1"},
        }
        assert client.post("/access/v1/evaluation", json=doc).status_code == 401
        answer = client.post(
            "/access/v1/evaluation", json=doc, headers={"authorization": f"Bearer {TOKEN}"}
        )
        assert answer.json()["decision"] is True


def test_short_authzen_token_is_refused(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["serve", "--config", str(config), "--authzen-token", "short"]) == 2
    assert "at least 16 characters" in capsys.readouterr().err


def test_bad_config_exits_2(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text('[session]\nsecrets = [""]\n')
    assert main(["serve", "--config", str(bad)]) == 2
    assert "session.secrets" in capsys.readouterr().err


def self_signed(tmp: Path) -> tuple[Path, Path]:
    """A certificate for 127.0.0.1 and its key, made with ``cryptography`` for this test."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - datetime.timedelta(minutes=5))
        .not_valid_after(now + datetime.timedelta(hours=1))
        .add_extension(
            x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
            critical=False,
        )
        .sign(key, hashes.SHA256())
    )
    certfile, keyfile = tmp / "cert.pem", tmp / "key.pem"
    certfile.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    keyfile.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return certfile, keyfile


@pytest.mark.interop
def test_serve_over_tls(config: Path, tmp_path: Path) -> None:
    certfile, keyfile = self_signed(tmp_path)
    port = free_port()
    argv = [*CLI, "serve", "--config", str(config), "--port", str(port)]
    argv += ["--ssl-certfile", str(certfile), "--ssl-keyfile", str(keyfile)]
    trust = ssl.create_default_context(cafile=str(certfile))
    url = f"https://127.0.0.1:{port}"
    with (
        running(argv, listening(port), env={"ILLUMICHAT_AUTHZ_AUTHZEN_TOKEN": TOKEN}),
        httpx.Client(base_url=url, verify=trust, timeout=10) as client,
    ):
        check_serves(client)
        # The metadata's URLs name the scheme the server really speaks.
        meta = client.get("/.well-known/authzen-configuration").json()
        assert meta["access_evaluation_endpoint"] == f"{url}/access/v1/evaluation"
        with pytest.raises(httpx.TransportError):  # plain http on the https port
            httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=5)


@pytest.mark.interop
def test_serve_with_two_workers(config: Path, tmp_path: Path) -> None:
    # Each worker builds the app from the variables serve sets: the configuration (a
    # relative --config, resolved), the token given as a flag, the public URL.
    port = free_port()
    argv = [*CLI, "serve", "--config", config.name, "--port", str(port), "--workers", "2"]
    argv += ["--authzen-token", TOKEN, "--public-url", "https://pdp.example.com"]
    with (
        running(argv, listening(port), cwd=config.parent),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        for _ in range(4):
            check_serves(client)
        meta = client.get("/.well-known/authzen-configuration").json()
        assert meta["policy_decision_point"] == "https://pdp.example.com"


@pytest.mark.interop
def test_uvicorn_factory_from_the_environment(config: Path) -> None:
    port = free_port()
    argv = [sys.executable, "-m", "uvicorn", "--factory"]
    argv += ["illumichat_authz.server:create_app_from_env", "--port", str(port)]
    argv += ["--no-proxy-headers", "--h11-max-incomplete-event-size", "65536"]
    env = {"ILLUMICHAT_AUTHZ_CONFIG": str(config), "ILLUMICHAT_AUTHZ_AUTHZEN_TOKEN": TOKEN}
    with (
        running(argv, listening(port), env=env),
        httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=10) as client,
    ):
        check_serves(client)


@pytest.mark.interop
def test_serve_on_a_unix_socket_with_an_access_log(config: Path, tmp_path: Path) -> None:
    uds = tmp_path / "authz.sock"
    log = tmp_path / "stdout.log"
    argv = [*CLI, "serve", "--config", str(config), "--uds", str(uds), "--access-log"]
    transport = httpx.HTTPTransport(uds=str(uds))
    with (
        running(argv, uds.exists, env={"ILLUMICHAT_AUTHZ_AUTHZEN_TOKEN": TOKEN}, stdout=log),
        httpx.Client(transport=transport, base_url="http://authz", timeout=10) as client,
    ):
        check_serves(client)
        deadline = time.monotonic() + 10
        while '"GET /auth/api/assistants/a1 HTTP/1.1" 401' not in log.read_text():
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--ssl-certfile", "/nonexistent/cert.pem"], "cannot load"),
        (["--ssl-keyfile", "/nonexistent/key.pem"], "needs --ssl-certfile"),
        (["--workers", "0"], "at least 1"),
        (["--authzen-token", TOKEN, "--public-url", "pdp.example.com"], "public URL"),
    ],
)
def test_bad_serve_options_exit_2(
    config: Path, capsys: pytest.CaptureFixture[str], flags: list[str], message: str
) -> None:
    assert main(["serve", "--config", str(config), *flags]) == 2
    assert message in capsys.readouterr().err


def test_log_level_reaches_our_loggers_and_the_access_log_is_its_own_switch() -> None:
    from illumichat_authz.server.factory import log_config

    quiet = log_config("error", access_log=False)["loggers"]
    assert quiet["illumichat_authz"]["level"] == "ERROR"
    assert quiet["uvicorn.error"]["level"] == "ERROR"
    assert quiet["uvicorn.access"]["handlers"] == []
    loud = log_config("debug", access_log=True)["loggers"]
    assert loud["illumichat_authz"]["level"] == "DEBUG"
    assert loud["uvicorn.access"]["level"] == "INFO"  # access lines at any --log-level
