"""``illumichat-authz keys`` end to end: through ``cli.main`` and the installed script."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.cli import main
from illumichat_authz.credentials.apikeys import API_KEY_PATTERN
from illumichat_authz.decision import Decision
from illumichat_authz.reasons import Reason
from illumichat_authz.request import RequestFacts
from illumichat_authz.stores.api_keys import SqliteApiKeyStore


@pytest.fixture(autouse=True)
def _clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.startswith("ILLUMICHAT_AUTHZ_"):
            monkeypatch.delenv(name)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "authz.toml"
    path.write_text('[api_keys]\ndatabase = "keys.sqlite3"\n')
    return path


def _identify(config: Path, token: str) -> Decision:
    """``Authorization: Bearer <token>`` to an Authorizer built from ``config`` (a new one
    each time, as another process would be: no credential cache carries over)."""
    authz = Authorizer.from_settings(config_file=str(config))
    request = RequestFacts.build(
        method="GET",
        path="/",
        headers={"host": "api.illumichat.test", "authorization": f"Bearer {token}"},
    )
    try:
        return authz.identify(request)
    finally:
        store = authz.api_keys
        assert isinstance(store, SqliteApiKeyStore)
        store.close()


def _run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_create_list_revoke(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(
        capsys,
        *("keys", "create", "--config", str(config), "--user", "u1", "--workspace", "ws_a"),
        *("--scope", "chat:read", "--scope", "chat:create", "--name", "ci bot"),
        *("--expires-in", "3600"),
    )
    assert code == 0, err
    lines = out.splitlines()
    token = lines[0]
    match = API_KEY_PATTERN.fullmatch(token)
    assert match is not None  # the key alone on the first line
    key_id = match["key_id"]
    assert f"key_id: {key_id}" in lines
    assert "scopes: chat:create chat:read" in lines
    assert "name: ci bot" in lines
    assert "cannot be shown again" in err

    # The key works against the database the configuration names (relative to the file).
    principal = _identify(config, token).principal
    assert principal is not None
    assert principal.workspace == "ws_a"
    assert principal.scopes == frozenset({"chat:read", "chat:create"})

    _run(capsys, "keys", "create", "--config", str(config), "--user", "u2", "--workspace", "ws_b")
    code, out, _ = _run(capsys, "keys", "list", "--config", str(config), "--json")
    assert code == 0
    rows = json.loads(out)
    assert [r["workspace"] for r in rows] == ["ws_a", "ws_b"]
    assert rows[0]["status"] == "active"
    assert rows[1]["scopes"] is None
    assert token[17:] not in out
    assert "digest" not in out
    assert match["secret"] not in out

    code, out, _ = _run(capsys, "keys", "list", "--config", str(config), "--workspace", "ws_a")
    assert code == 0
    assert key_id in out
    assert "ws_b" not in out
    assert token not in out

    code, out, _ = _run(capsys, "keys", "revoke", "--config", str(config), key_id)
    assert (code, out.strip()) == (0, f"revoked {key_id}")
    assert _identify(config, token).reason is Reason.API_KEY_REVOKED
    store = SqliteApiKeyStore(config.parent / "keys.sqlite3")
    revoked = store.get(key_id)
    store.close()
    assert revoked is not None
    assert revoked.revoked_at is not None
    assert revoked.last_used_at is not None  # the verify before the revocation was recorded
    code, out, _ = _run(capsys, "keys", "list", "--config", str(config), "--json")
    assert json.loads(out)[0]["status"] == "revoked"


def test_revoke_unknown_key_exits_1(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = _run(capsys, "keys", "revoke", "--config", str(config), "noSuchKey123")
    assert code == 1
    assert "no API key with id noSuchKey123" in err
    assert out == ""


def test_revoke_accepts_a_pasted_key_without_echoing_it(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _, out, _ = _run(
        capsys, "keys", "create", "--config", str(config), "--user", "u", "--workspace", "w"
    )
    token = out.splitlines()[0]
    code, out, err = _run(capsys, "keys", "revoke", "--config", str(config), token)
    assert code == 0
    assert token not in out + err


def test_missing_database_setting_exits_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    empty = tmp_path / "empty.toml"
    empty.write_text("")
    code, _, err = _run(capsys, "keys", "list", "--config", str(empty))
    assert code == 2
    assert "[api_keys] database" in err


@pytest.mark.parametrize(
    "extra",
    [
        ["--scope", "Chats:Read"],
        ["--scope", "chats"],
        ["--expires-in", "-5"],
        ["--expires-in", "soon"],
    ],
)
def test_bad_create_arguments_exit_2(
    config: Path, capsys: pytest.CaptureFixture[str], extra: list[str]
) -> None:
    argv = ["keys", "create", "--config", str(config), "--user", "u", "--workspace", "w", *extra]
    with pytest.raises(SystemExit) as info:
        main(argv)
    assert info.value.code == 2
    assert not (config.parent / "keys.sqlite3").exists()


def test_a_scope_the_policy_does_not_have_exits_2(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # Well-formed, but no action of the policy: such a key could never do anything.
    argv = ["keys", "create", "--config", str(config), "--user", "u", "--workspace", "w"]
    assert main([*argv, "--scope", "chat:read", "--scope", "chats:read"]) == 2
    err = capsys.readouterr().err
    assert "chats:read" in err
    assert "chat:read'" not in err
    assert not (config.parent / "keys.sqlite3").exists()


def test_unusable_database_is_a_message_not_a_traceback(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    cfg = tmp_path / "authz.toml"
    cfg.write_text('[api_keys]\ndatabase = "no/such/dir/keys.sqlite3"\n')
    code, _, err = _run(
        capsys, "keys", "create", "--config", str(cfg), "--user", "u", "--workspace", "w"
    )
    assert code == 1
    assert "Traceback" not in err
    assert "cannot store the key" in err


def _script() -> str:
    found = Path(sys.executable).with_name("illumichat-authz")
    if found.exists():
        return str(found)
    which = shutil.which("illumichat-authz")
    if which is None:
        pytest.fail("console script missing: run `.venv/bin/pip install -e . --no-deps`")
    return which


def test_installed_console_script(config: Path) -> None:
    script = _script()
    env = {k: v for k, v in os.environ.items() if not k.startswith("ILLUMICHAT_AUTHZ_")}

    def run(*argv: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [script, "keys", *argv, "--config", str(config)],
            capture_output=True,
            text=True,
            env=env,
            timeout=60,
            check=False,
        )

    created = run("create", "--user", "u1", "--workspace", "ws_a", "--scope", "chat:read")
    assert created.returncode == 0, created.stderr
    token = created.stdout.splitlines()[0]
    match = API_KEY_PATTERN.fullmatch(token)
    assert match is not None
    listed = run("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [r["key_id"] for r in json.loads(listed.stdout)] == [match["key_id"]]
    assert match["secret"] not in listed.stdout
    assert run("revoke", match["key_id"]).returncode == 0
    missing = run("revoke", "unknownKey12")
    assert missing.returncode == 1
    assert "no API key with id unknownKey12" in missing.stderr
