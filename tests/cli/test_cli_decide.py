"""``illumichat-authz decide``: flags, JSON Lines batches, stdin, exit codes, output shape.

Most cases call ``cli.main`` in-process (fast); standard input and the "no traceback"
promise are checked through the installed console script in a subprocess, as a shell
user or another service would run it.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from illumichat_authz import authorizer as authorizer_module
from illumichat_authz.cli import main
from illumichat_authz.credentials.apikeys import issue_api_key
from illumichat_authz.credentials.authjs import encode_session_token
from illumichat_authz.stores.api_keys import SqliteApiKeyStore
from illumichat_authz.stores.ratelimit import RateLimiter

_LIMITER = RateLimiter()
SECRET = "cli-decide-secret"
SCRIPT = Path(sys.executable).parent / "illumichat-authz"
#: The names other services parse (the module's documented output).
FIELDS = {"status", "reason", "message", "route", "action", "principal", "headers"}


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ILLUMICHAT_AUTHZ_"):
            monkeypatch.delenv(name)
    # One limiter for the module (each instance starts a thread); tests use distinct IPs.
    monkeypatch.setattr(authorizer_module, "RateLimiter", lambda **_kw: _LIMITER)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    (tmp_path / "facts.json").write_text(
        json.dumps(
            {
                "memberships": [
                    {"user": "u-1", "workspace": "ws-1", "role": "admin"},
                    {"user": "u-2", "workspace": "ws-1", "role": "guest"},
                ],
                "assistants": [
                    {"id": "a-1", "workspace": "ws-1", "visibility": "private", "creator": "u-1"}
                ],
            }
        ),
        encoding="utf-8",
    )
    path = tmp_path / "authz.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [session]
            secrets = ["{SECRET}"]
            workspace_claim = "ws"

            [facts]
            file = "facts.json"

            [api_keys]
            database = "keys.sqlite"
            """
        ),
        encoding="utf-8",
    )
    return path


def session_cookie(user: str = "u-1", ws: str = "ws-1") -> str:
    token = encode_session_token({"sub": user, "ws": ws}, secret=SECRET, now=_now())
    return f"authjs.session-token={token}"


def _now() -> float:
    return time.time()


def cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, list[dict[str, Any]], str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines() if line.strip()], err


def test_one_request_from_flags(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, [line], _ = cli(
        capsys,
        "decide",
        "--config",
        str(config),
        "--method",
        "DELETE",
        "--path",
        "/api/assistants/a-1",
        "--header",
        f"Cookie: {session_cookie()}",
    )
    assert code == 0
    assert set(line) >= FIELDS
    assert (line["status"], line["reason"]) == (200, "allowed")
    assert line["route"] == "DELETE /api/assistants/{assistantId}"
    assert line["action"] == "assistant:delete"
    assert line["principal"]["user_id"] == "u-1"
    assert line["principal"]["kind"] == "session"
    assert line["headers"] == {}
    assert "explanation" not in line


def test_a_denied_request_exits_1_and_explains_on_request(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, [line], _ = cli(
        capsys,
        "decide",
        "--config",
        str(config),
        "--path",
        "/api/assistants/a-1",
        "--header",
        f"Cookie: {session_cookie('u-2')}",
        "--explain",
    )
    assert code == 1
    assert (line["status"], line["reason"]) == (403, "not_visible")
    assert isinstance(line["explanation"], list)


def test_an_anonymous_request_gets_the_challenge_header(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, [line], _ = cli(capsys, "decide", "--config", str(config), "--path", "/api/chats")
    assert code == 1
    assert (line["status"], line["reason"]) == (401, "authentication_required")
    assert line["headers"] == {"WWW-Authenticate": 'Bearer realm="illumichat"'}


def test_an_api_key_from_the_configured_database(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = SqliteApiKeyStore(config.parent / "keys.sqlite")
    token, record = issue_api_key(user_id="u-2", workspace="ws-1", now=_now() - 5)
    store.add(record)
    store.close()
    code, [line], _ = cli(
        capsys,
        "decide",
        "--config",
        str(config),
        "--path",
        "/api/assistants?limit=5",
        "--header",
        f"Authorization: Bearer {token}",
    )
    assert (code, line["status"], line["principal"]["kind"]) == (0, 200, "api_key")
    assert token not in json.dumps(line)


def test_a_webhook_body_from_a_file(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    from twilio.request_validator import RequestValidator

    with config.open("a", encoding="utf-8") as fh:
        fh.write('\n[twilio]\nauth_tokens = ["cli-tok"]\n')
    body = tmp_path / "body.txt"
    body.write_bytes(b"Body=hi")
    signature = RequestValidator("cli-tok").compute_signature(
        "https://sms.example.test/api/sms/webhook/a-1", {"Body": "hi"}
    )
    code, [line], _ = cli(
        capsys,
        "decide",
        "--config",
        str(config),
        "--method",
        "POST",
        "--scheme",
        "https",
        "--path",
        "/api/sms/webhook/a-1",
        "--header",
        "Host: sms.example.test",
        "--header",
        "Content-Type: application/x-www-form-urlencoded",
        "--header",
        f"X-Twilio-Signature: {signature}",
        "--body-file",
        str(body),
    )
    assert (code, line["reason"]) == (0, "webhook_verified")


def batch_lines(cookie: str) -> list[str]:
    return [
        # Headers as an object.
        json.dumps({"method": "GET", "path": "/api/assistants/a-1", "headers": {"Cookie": cookie}}),
        # Headers as [name, value] pairs, repeats kept.
        json.dumps(
            {
                "method": "GET",
                "path": "/api/assistants",
                "headers": [["Cookie", cookie], ["X-Workspace-Id", "ws-1"]],
            }
        ),
        "",  # blank lines are skipped but counted
        "{not json",
        json.dumps(["GET", "/api/assistants"]),
        json.dumps({"method": "GET"}),
        json.dumps({"method": "GET", "path": "/", "extra": 1}),
        json.dumps({"method": "GET", "path": "/", "headers": "Cookie: x"}),
        json.dumps({"method": "GET", "path": "/", "headers": [["a", 1]]}),
        json.dumps({"method": "GET", "path": "/", "scheme": "ftp"}),
        json.dumps({"method": "GET", "path": "/", "query": 5}),
        "[" * 50_000,
        json.dumps({"method": "GET", "path": "/api/widget/a-1/config"}),
    ]


def check_batch(lines: list[dict[str, Any]]) -> None:
    assert len(lines) == 12
    first, second, *errors, last = lines
    assert (first["status"], first["reason"]) == (200, "allowed")
    assert (second["status"], second["reason"]) == (200, "allowed")
    assert [e["message"].split(":")[0] for e in errors] == [f"line {n}" for n in range(4, 13)]
    for error in errors:
        assert (error["status"], error["reason"]) == (400, "malformed_request")
        assert set(error) >= FIELDS
    assert (last["status"], last["reason"]) == (200, "public")
    assert "unknown field(s) ['extra']" in errors[3]["message"]


def test_a_batch_file_continues_past_malformed_lines(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(batch_lines(session_cookie())) + "\n", encoding="utf-8")
    code, lines, err = cli(capsys, "decide", "--config", str(config), "--batch", str(batch))
    assert code == 0
    assert "Traceback" not in err
    check_batch(lines)


def test_a_batch_from_stdin_through_the_console_script(config: Path, tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILLUMICHAT_AUTHZ_")}
    proc = subprocess.run(
        [str(SCRIPT), "decide", "--config", str(config), "--batch", "-"],
        input="\n".join(batch_lines(session_cookie())) + "\n",
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
    check_batch([json.loads(line) for line in proc.stdout.splitlines()])


def test_lone_surrogates_and_non_utf8_stdin_never_stop_the_batch(config: Path) -> None:
    # A strict UTF-8 stdout and stdin (a common locale) must not turn odd input into a
    # traceback half-way through a batch: every line gets its JSON answer.
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILLUMICHAT_AUTHZ_")}
    env["PYTHONIOENCODING"] = "utf-8:strict"
    lines = [
        json.dumps(
            {
                "method": "GET",
                "path": "/api/assistants",
                "headers": {"X-Workspace-Id": "\ud800"},
                "client_ip": "192.0.2.90",
            }
        ).encode(),
        b"\xff\xfe not UTF-8",
        json.dumps({"method": "GET", "path": "/api/widget/a-1/config"}).encode(),
    ]
    proc = subprocess.run(
        [str(SCRIPT), "decide", "--config", str(config), "--batch", "-"],
        input=b"\n".join(lines) + b"\n",
        capture_output=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr
    assert b"Traceback" not in proc.stderr
    out = [json.loads(line) for line in proc.stdout.decode("ascii").splitlines()]
    assert [line["status"] for line in out] == [400, 400, 200]
    assert [line["reason"] for line in out[:2]] == ["bad_header", "malformed_request"]


def test_rate_limit_state_is_shared_across_the_batch(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    one = {"method": "POST", "path": "/api/widget/tickets/create", "client_ip": "192.0.2.77"}
    other = {**one, "client_ip": "192.0.2.78"}
    batch = tmp_path / "tickets.jsonl"
    batch.write_text("\n".join(json.dumps(x) for x in [one] * 6 + [other]), encoding="utf-8")
    code, lines, _ = cli(capsys, "decide", "--config", str(config), "--batch", str(batch))
    assert code == 0
    assert [line["status"] for line in lines] == [200] * 5 + [429, 200]
    limited = lines[5]
    assert limited["reason"] == "rate_limited"
    assert int(limited["headers"]["Retry-After"]) >= 1
    assert limited["headers"]["RateLimit-Policy"] == '"default";q=5;w=60'


def test_every_batch_line_has_the_same_fields(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(batch_lines(session_cookie())), encoding="utf-8")
    _code, lines, _ = cli(capsys, "decide", "--config", str(config), "--batch", str(batch))
    for line in lines:
        assert set(line) >= FIELDS
        assert isinstance(line["status"], int)
        assert isinstance(line["reason"], str)
        assert isinstance(line["message"], str)
        assert isinstance(line["headers"], dict)


def test_error_lines_and_decision_lines_have_one_shape(
    config: Path, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    batch = tmp_path / "batch.jsonl"
    batch.write_text("\n".join(batch_lines(session_cookie())), encoding="utf-8")
    _code, lines, _ = cli(capsys, "decide", "--config", str(config), "--batch", str(batch))
    assert len({frozenset(line) for line in lines}) == 1


def test_a_missing_batch_file_exits_2(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = main(["decide", "--config", str(config), "--batch", str(config.parent / "nope")])
    _, err = capsys.readouterr()
    assert code == 2
    assert "cannot read" in err


@pytest.mark.parametrize(
    "argv",
    [
        ["decide"],  # no --path and no --batch
        ["decide", "--path", "/", "--header", "no-colon"],
        ["decide", "--path", "/", "--body-file", "/nonexistent/body"],
    ],
)
def test_bad_flags_exit_2(capsys: pytest.CaptureFixture[str], argv: list[str]) -> None:
    code = main(argv)
    _, err = capsys.readouterr()
    assert code == 2
    assert err.startswith("illumichat-authz: ")


def test_a_config_error_exits_2_naming_the_key_without_a_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.toml"
    bad.write_text("[routes]\nmax_path_length = 1\n\n[session]\nsecrets = ['s']\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILLUMICHAT_AUTHZ_")}
    proc = subprocess.run(
        [str(SCRIPT), "decide", "--config", str(bad), "--path", "/api/chats"],
        capture_output=True,
        text=True,
        timeout=60,
        env=env,
        check=False,
    )
    assert proc.returncode == 2
    assert "routes.max_path_length" in proc.stderr
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_an_environment_error_exits_2_naming_the_key(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("ILLUMICHAT_AUTHZ_TWILIO__MAX_BODY_BYTES", "12")
    code = main(["decide", "--path", "/api/chats"])
    _, err = capsys.readouterr()
    assert code == 2
    assert "twilio.max_body_bytes" in err
