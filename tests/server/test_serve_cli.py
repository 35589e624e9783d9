"""``illumichat-authz serve`` end to end: a real process on a loopback port."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from illumichat_authz.cli import main

CLI = [sys.executable, "-m", "illumichat_authz.cli"]
TOKEN = "serve-cli-test-token-0123456789"


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


@pytest.fixture
def served(config: Path) -> Iterator[str]:
    port = free_port()
    env = {**os.environ, "ILLUMICHAT_AUTHZ_AUTHZEN_TOKEN": TOKEN}
    proc = subprocess.Popen(
        [*CLI, "serve", "--config", str(config), "--port", str(port)],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            assert proc.poll() is None, proc.stderr.read().decode() if proc.stderr else ""
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline, "serve did not start"
                time.sleep(0.05)
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        if proc.stderr:
            proc.stderr.close()


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
