"""The command line as a newcomer meets it: --version, help, -v anywhere, Ctrl-C, bad settings.

Interrupts are real: SIGINT sent to a subprocess serving on a free loopback port.
"""

from __future__ import annotations

import argparse
import http.client
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import illumichat_authz
from illumichat_authz.cli import build_parser, main

CLI = [sys.executable, "-m", "illumichat_authz.cli"]


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ILLUMICHAT_AUTHZ_"):
            monkeypatch.delenv(name)


def _env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.upper().startswith("ILLUMICHAT_AUTHZ_")}


def test_version_prints_the_package_version(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0
    assert capsys.readouterr().out == f"illumichat-authz {illumichat_authz.__version__}\n"


@pytest.mark.parametrize(
    "argv",
    [
        ["-v", "policy", "check"],
        ["policy", "-v", "check"],
        ["policy", "check", "-v"],
        ["policy", "check", "--verbose"],
    ],
)
def test_verbose_is_accepted_before_or_after_the_sub_command(argv: list[str]) -> None:
    assert build_parser().parse_args(argv).verbose is True


def test_without_verbose_it_is_off() -> None:
    assert build_parser().parse_args(["policy", "check"]).verbose is False


def _parsers(
    parser: argparse.ArgumentParser, name: str
) -> Iterator[tuple[str, argparse.ArgumentParser]]:
    yield name, parser
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for sub_name, sub in action.choices.items():
                yield from _parsers(sub, f"{name} {sub_name}")


def test_every_command_has_a_description_and_every_argument_help() -> None:
    missing: list[str] = []
    for name, parser in _parsers(build_parser(), "illumichat-authz"):
        leaf = not any(isinstance(a, argparse._SubParsersAction) for a in parser._actions)
        if leaf and not parser.description:
            missing.append(f"{name}: no description")
        for action in parser._actions:
            if not action.help and not isinstance(action, argparse._SubParsersAction):
                missing.append(f"{name} {'/'.join(action.option_strings) or action.dest}")
    assert not missing, missing


def test_mint_session_without_a_secret_says_so_before_asking_for_dev_secret(
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert main(["tokens", "mint-session", "--user", "u1"]) == 2
    err = capsys.readouterr().err
    assert "secrets is empty" in err
    assert "--dev-secret" not in err.split("secrets is empty")[0]


def test_mint_session_with_a_secret_still_needs_dev_secret(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    config = tmp_path / "authz.toml"
    config.write_text('[session]\nsecrets = ["a-development-secret-of-32-chars!"]\n')
    assert main(["tokens", "mint-session", "--config", str(config), "--user", "u1"]) == 2
    assert "pass --dev-secret" in capsys.readouterr().err


# --- a storage URI we do not support ------------------------------------------------------


@pytest.mark.parametrize("command", [["decide", "--path", "/api/chats"], ["policy", "check"]])
def test_an_unsupported_rate_limit_storage_is_a_clean_configuration_error(
    tmp_path: Path, command: list[str]
) -> None:
    config = tmp_path / "authz.toml"
    config.write_text('[rate_limits]\nstorage = "mongodb://user:hunter2@db.example:27017"\n')
    done = subprocess.run(
        [*CLI, *command, "--config", str(config)],
        capture_output=True,
        text=True,
        env=_env(),
        timeout=60,
        check=False,
    )
    assert done.returncode == 2, done.stderr
    assert "rate_limits.storage" in done.stderr
    assert "memory://" in done.stderr
    assert "redis://" in done.stderr
    assert "hunter2" not in done.stderr  # the URI's password is never echoed
    # Nothing but the message: no traceback, no "Exception ignored in ... __del__".
    assert "Traceback" not in done.stderr, done.stderr
    assert "Exception" not in done.stderr, done.stderr


# --- Ctrl-C -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _wait_until_serving(proc: subprocess.Popen[str], port: int, path: str) -> None:
    deadline = time.monotonic() + 30
    while True:
        assert proc.poll() is None, proc.communicate()
        try:
            connection = http.client.HTTPConnection("127.0.0.1", port, timeout=1)
            connection.request("GET", path)
            connection.getresponse().read()
            connection.close()
            return
        except OSError:
            assert time.monotonic() < deadline, "the server did not start"
            time.sleep(0.05)


@pytest.mark.parametrize(
    ("command", "probe"),
    [(["demo"], "/api/assistants/asst-public"), (["serve"], "/healthz")],
    ids=["demo", "serve"],
)
def test_ctrl_c_stops_the_server_and_exits_130(command: list[str], probe: str) -> None:
    port = _free_port()
    proc = subprocess.Popen(
        [*CLI, *command, "--port", str(port)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=_env(),
    )
    try:
        _wait_until_serving(proc, port, probe)
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    assert proc.returncode == 130, err  # docs/cli.md: 130, interrupted
    assert "Traceback" not in err, err
    with socket.socket() as s:  # the port is free again: the server stopped
        s.bind(("127.0.0.1", port))
