"""``illumichat-authz tokens mint-session``."""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import pytest

from illumichat_authz.cli import tokens
from illumichat_authz.config import load_settings
from illumichat_authz.credentials.authjs import AuthjsSessionDecoder, SessionCookie


def run(argv: list[str]) -> int:
    # Only this sub-command: the test does not depend on the other CLI modules.
    parser = argparse.ArgumentParser(prog="illumichat-authz")
    tokens.register(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    code: int = args.handler(args)
    return code


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "authz.toml"
    path.write_text(
        '[session]\nsecrets = ["dev-new", "dev-old"]\nworkspace_claim = "activeWorkspace"\n'
    )
    return path


def test_refuses_without_dev_secret(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code = run(["tokens", "mint-session", "--config", str(config), "--user", "u1"])
    out, err = capsys.readouterr()
    assert code == 2
    assert out == ""
    assert "development" in err
    assert "--dev-secret" in err
    assert "dev-new" not in err


def test_mints_a_cookie_the_decoder_accepts(
    config: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["tokens", "mint-session", "--config", str(config), "--dev-secret", "--user", "u1"]
    code = run([*argv, "--workspace", "w1", "--email", "u1@example.com", "--expires-in", "600"])
    out, err = capsys.readouterr()
    assert code == 0
    value = out.strip()
    assert "\n" not in value
    assert "authjs.session-token" in err
    decoder = AuthjsSessionDecoder.from_settings(load_settings(config).session)
    principal = decoder.decode(
        SessionCookie(name="authjs.session-token", value=value), now=time.time()
    )
    assert (principal.user_id, principal.workspace, principal.email) == (
        "u1",
        "w1",
        "u1@example.com",
    )
    assert principal.expires_at is not None
    assert principal.expires_at - principal.claims["iat"] == 600


def test_secure_name(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["tokens", "mint-session", "--config", str(config), "--dev-secret", "--user", "u1"]
    assert run([*argv, "--secure"]) == 0
    value = capsys.readouterr().out.strip()
    decoder = AuthjsSessionDecoder.from_settings(load_settings(config).session)
    cookie = SessionCookie(name="__Secure-authjs.session-token", value=value)
    assert decoder.decode(cookie, now=time.time()).user_id == "u1"


def test_workspace_claim_defaults_to_workspace(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "authz.toml"
    path.write_text('[session]\nsecrets = ["dev"]\n')
    argv = ["tokens", "mint-session", "--config", str(path), "--dev-secret", "--user", "u"]
    assert run([*argv, "--workspace", "w"]) == 0
    value = capsys.readouterr().out.strip()
    decoder = AuthjsSessionDecoder(secrets=["dev"], workspace_claim="workspace")
    cookie = SessionCookie(name="authjs.session-token", value=value)
    assert decoder.decode(cookie, now=time.time()).workspace == "w"


def test_no_secrets(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    path = tmp_path / "authz.toml"
    path.write_text("[session]\n")
    assert (
        run(["tokens", "mint-session", "--config", str(path), "--dev-secret", "--user", "u"]) == 2
    )
    assert "secrets" in capsys.readouterr().err


@pytest.mark.parametrize("bad", ["0", "-5", "1.5", "x", str(10**9)])
def test_bad_expires_in(config: Path, bad: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as info:
        run(
            [
                "tokens",
                "mint-session",
                "--config",
                str(config),
                "--dev-secret",
                "--user",
                "u",
                "--expires-in",
                bad,
            ]
        )
    assert info.value.code == 2
