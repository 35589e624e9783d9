"""The demo: the printed curl commands and the self-test give the statuses they promise."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from illumichat_authz.cli import main
from illumichat_authz.demo import SCENARIOS, USERS, build_demo
from illumichat_authz.demo.scenarios import Scenario

CLI = [sys.executable, "-m", "illumichat_authz.cli"]


def test_no_serve_prints_every_scenario(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--no-serve", "--port", "9999"]) == 0
    out = capsys.readouterr().out
    for user in USERS:
        assert re.search(rf"^  export {user.upper()}=authjs\.session-token=eyJ", out, re.M)
    for scenario in SCENARIOS:
        assert f"# {scenario.title}: expect {scenario.expected}" in out
    assert "http://127.0.0.1:9999/api/assistants/asst-public" in out
    assert {s.expected for s in SCENARIOS} == {200, 401, 403, 429}


def test_the_demo_sessions_verify_and_the_secret_is_fresh() -> None:
    first, second = build_demo(), build_demo()
    assert first.cookies["mia"] != second.cookies["mia"]
    from illumichat_authz.testing import assert_decision, make_request

    request = make_request("GET", "/api/assistants/asst-shared", cookie=first.cookies["mia"])
    assert_decision(request, 200, "allowed", authorizer=first.authorizer)
    # The other run's secret differs: its cookie is a 401 here.
    stranger = make_request("GET", "/api/assistants/asst-shared", cookie=second.cookies["mia"])
    assert_decision(stranger, 401, authorizer=first.authorizer)


def test_the_demo_ignores_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """A shell with a deployment's variables gets the same demo (everything in memory)."""
    monkeypatch.setenv("ILLUMICHAT_AUTHZ_SESSION__SECRETS", '["production-secret"]')
    monkeypatch.setenv("ILLUMICHAT_AUTHZ_DECISIONS__CONCEAL_HIDDEN", "true")
    from illumichat_authz.testing import assert_decision, make_request

    demo = build_demo()
    assert demo.authorizer.core.conceal_hidden is False
    request = make_request("GET", "/api/assistants/asst-shared", cookie=demo.cookies["mia"])
    assert_decision(request, 200, "allowed", authorizer=demo.authorizer)


def test_self_test_passes_end_to_end() -> None:
    started = time.monotonic()
    result = subprocess.run(
        [*CLI, "demo", "--self-test"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "all requests answered as expected" in result.stdout
    assert result.stdout.count("  ok  ") == len(SCENARIOS)
    assert time.monotonic() - started < 30  # the README's first command must be quick


def test_self_test_reports_a_mismatch(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    import illumichat_authz.demo as demo

    wrong = Scenario(
        title="deliberately wrong", method="GET", path="/api/assistants/asst-public", expected=200
    )
    monkeypatch.setattr(demo, "SCENARIOS", (*SCENARIOS[:1], wrong))
    assert main(["demo", "--self-test"]) == 1
    out = capsys.readouterr().out
    assert "FAIL" in out
    assert "401 (expected 200)  deliberately wrong" in out


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@pytest.mark.interop
@pytest.mark.skipif(shutil.which("curl") is None, reason="needs curl")
def test_printed_curl_commands_give_the_promised_statuses(tmp_path: Path) -> None:
    port = _free_port()
    log = tmp_path / "demo.out"
    with log.open("w") as out:
        proc = subprocess.Popen(
            [*CLI, "demo", "--port", str(port)], stdout=out, stderr=subprocess.STDOUT
        )
    try:
        deadline = time.monotonic() + 30
        while "Serving" not in log.read_text():
            assert proc.poll() is None, log.read_text()
            assert time.monotonic() < deadline, "the demo did not start"
            time.sleep(0.05)
        deadline = time.monotonic() + 10
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                    break
            except OSError:
                assert time.monotonic() < deadline
                time.sleep(0.05)
        text = log.read_text()
        exports = [line.strip() for line in text.splitlines() if line.startswith("  export ")]
        lines = text.splitlines()
        checked = 0
        for i, line in enumerate(lines):
            match = re.match(r"  # .*: expect (\d{3})$", line)
            if not match:
                continue
            command = lines[i + 1].strip()
            script = "\n".join([*exports, command])
            result = subprocess.run(
                ["bash", "-c", script],
                capture_output=True,
                text=True,
                timeout=30,
                check=False,
                env={**os.environ},
            )
            statuses = re.findall(r"^(?:HTTP/[\d.]+ )?(\d{3})\b", result.stdout, re.M)
            assert statuses, (command, result.stdout, result.stderr)
            assert statuses[-1] == match.group(1), (command, result.stdout)
            checked += 1
        assert checked == len(SCENARIOS)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def test_a_taken_port_prints_no_cookies_and_exits_1() -> None:
    # Cookies and curl commands are printed only for a server that is listening: never
    # for another process on the port, which would answer them with 401.
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [*CLI, "demo", "--port", str(port)],
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert result.returncode == 1
    assert "export " not in result.stdout
    assert "Serving" not in result.stdout
    assert "try --port" in result.stderr
