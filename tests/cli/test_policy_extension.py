"""Issue 9 acceptance: a fifth role and a new resource kind are policy edits, no code.

``tests/cli/policies_editor/`` is the shipped policy plus an ``editor`` role between
admin and member (allowed ``assistant:update``) and a ``document`` kind with its own
visibility values (``team``, ``private``) and routes. Every command a policy author uses
(``decide --batch``, ``policy check --strict``, ``policy test``, ``policy explain``) runs
on it through the CLI entry point and gives real decisions.
"""

from __future__ import annotations

import json
import os
import textwrap
import time
from pathlib import Path
from typing import Any

import pytest

from illumichat_authz import authorizer as authorizer_module
from illumichat_authz.cli import main
from illumichat_authz.credentials.authjs import encode_session_token
from illumichat_authz.stores.ratelimit import RateLimiter

POLICIES = Path(__file__).resolve().parent / "policies_editor"
TABLE = POLICIES / "tests" / "editor.yaml"
SECRET = "policy-extension-secret"
_LIMITER = RateLimiter()


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ILLUMICHAT_AUTHZ_"):
            monkeypatch.delenv(name)
    # One limiter for the module (each instance starts a thread).
    monkeypatch.setattr(authorizer_module, "RateLimiter", lambda **_kw: _LIMITER)


@pytest.fixture
def config(tmp_path: Path) -> Path:
    path = tmp_path / "authz.toml"
    path.write_text(
        textwrap.dedent(
            f"""
            [policies]
            dir = "{POLICIES}"

            [session]
            secrets = ["{SECRET}"]
            workspace_claim = "ws"

            [facts]
            file = "{POLICIES / "facts.json"}"
            """
        ),
        encoding="utf-8",
    )
    return path


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def batch(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path, asks: list[tuple[str, ...]]
) -> list[dict[str, Any]]:
    """``decide --batch`` over (user, method, path) asks, each with the user's session."""
    lines = []
    for user, method, path in asks:
        token = encode_session_token({"sub": user, "ws": "ws-1"}, secret=SECRET, now=time.time())
        headers = {"cookie": f"authjs.session-token={token}"}
        lines.append(json.dumps({"method": method, "path": path, "headers": headers}))
    file = tmp_path / "requests.jsonl"
    file.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, out, err = run(capsys, "decide", "--config", str(config), "--batch", str(file))
    assert (code, err) == (0, "")
    results = [json.loads(line) for line in out.splitlines()]
    assert len(results) == len(asks)
    return results


def outcome(result: dict[str, Any]) -> tuple[int, str]:
    return result["status"], result["reason"]


# --- policy check --------------------------------------------------------------------


def test_policy_check_strict_accepts_the_extension(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, out, err = run(capsys, "policy", "check", "--strict", "--config", str(config))
    assert (code, err) == (0, ""), out
    assert out.startswith("ok: ")
    assert "5 roles; 0 finding(s)" in out


def test_policy_check_strict_refuses_a_role_outside_the_hierarchy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    copy = tmp_path / "policies"
    copy.mkdir()
    for name in ("model.conf", "routes.toml"):
        (copy / name).write_bytes((POLICIES / name).read_bytes())
    csv = (POLICIES / "policy.csv").read_text(encoding="utf-8")
    (copy / "policy.csv").write_text(csv + "p, auditor, active, billing:read, *\n", "utf-8")
    config = tmp_path / "authz.toml"
    config.write_text(f'[policies]\ndir = "{copy}"\n', encoding="utf-8")
    code, out, _ = run(capsys, "policy", "check", "--config", str(config))
    assert code == 0
    assert "warning: role 'auditor' is outside the g hierarchy" in out
    code, out, _ = run(capsys, "policy", "check", "--strict", "--config", str(config))
    assert code == 1
    assert out.splitlines()[-1].startswith("FAILED")


# --- policy explain (the policy alone) ------------------------------------------------


def explain(capsys: pytest.CaptureFixture[str], config: Path, *flags: str) -> tuple[int, str]:
    code, out, err = run(capsys, "policy", "explain", "--config", str(config), *flags)
    assert err == ""
    return code, out


def test_explain_the_new_role(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    update = ("--action", "assistant:update", "--visibility", "workspace")
    code, out = explain(capsys, config, "--role", "editor", *update)
    assert (code, out.splitlines()[0]) == (0, "ALLOW (allowed)")
    assert "p, editor, active, assistant:update, *" in out
    assert "p2, guest, active, assistant, workspace, *" in out
    code, out = explain(capsys, config, "--role", "member", *update)
    assert (code, out.splitlines()[0]) == (1, "DENY (insufficient_role)")
    # editor inherits member's rules through the g lines.
    code, out = explain(capsys, config, "--role", "editor", "--action", "chat:list")
    assert (code, out.splitlines()[0]) == (0, "ALLOW (allowed)")


def test_explain_the_new_kind(capsys: pytest.CaptureFixture[str], config: Path) -> None:
    read = ("--role", "member", "--action", "document:read", "--kind", "document")
    code, out = explain(capsys, config, *read, "--visibility", "private", "--relation", "creator")
    assert (code, out.splitlines()[0]) == (0, "ALLOW (allowed)")
    assert "p2, guest, active, document, private, creator" in out
    code, out = explain(capsys, config, *read, "--visibility", "private")
    assert (code, out.splitlines()[0]) == (1, "DENY (not_visible)")
    assert "see a private document" in out
    code, out = explain(capsys, config, *read, "--visibility", "team")
    assert (code, out.splitlines()[0]) == (0, "ALLOW (allowed)")
    # The kind is inferred from the action's routes when they name one.
    code, out = explain(
        capsys, config, "--role", "admin", "--action", "document:read", "--visibility", "private"
    )
    assert (code, out.splitlines()[0]) == (0, "ALLOW (allowed)")
    assert "p2, admin, active, document, private, *" in out


def test_explain_asks_for_the_kinds_own_visibility_values(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    code, out, err = run(
        capsys, "policy", "explain", "--config", str(config), "--role", "member", "--action",
        "document:read",
    )  # fmt: skip
    assert (code, out) == (2, "")
    assert "document:read acts on a document: give --visibility team|private" in err
    with pytest.raises(SystemExit) as exit_:
        main(
            [
                "policy", "explain", "--config", str(config), "--role", "member", "--action",
                "document:read", "--kind", "document", "--visibility", "public",
            ]
        )  # fmt: skip
    assert exit_.value.code == 2
    assert "(choose from 'team', 'private')" in capsys.readouterr().err


# --- policy test ----------------------------------------------------------------------


def test_a_table_of_the_new_role_passes_and_a_wrong_line_fails(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    table = tmp_path / "roles.yaml"
    table.write_text(
        textwrap.dedent(
            """
            principals:
              editor: { role: editor }
              member: { role: member }
            resources:
              public_assistant: { kind: assistant, visibility: public }
            allow:
              - principal: editor
                resource: public_assistant
                actions: [assistant:read, assistant:update, chat:create]
              - principal: member
                resource: public_assistant
                actions: [assistant:read, chat:create]
            """
        ),
        encoding="utf-8",
    )
    code, out, _ = run(capsys, "policy", "test", "--config", str(config), str(table))
    assert code == 0, out
    assert "ok: 10 decisions checked, 0 failed" in out
    wrong = table.read_text("utf-8").replace(
        "actions: [assistant:read, chat:create]",
        "actions: [assistant:read, assistant:update, chat:create]",
    )
    table.write_text(wrong, encoding="utf-8")
    code, out, _ = run(capsys, "policy", "test", "--config", str(config), str(table))
    assert code == 1
    assert "FAIL member assistant:update on public_assistant: expected allow, got denied" in out


def test_the_shipped_table_of_the_extension_passes(
    capsys: pytest.CaptureFixture[str], config: Path
) -> None:
    # Documents are looked up generically (Facts.resource): needs the generic rules.
    code, out, _ = run(capsys, "policy", "test", "--config", str(config), str(TABLE))
    assert code == 0, out
    assert out.startswith("ok: ")
    assert ", 0 failed" in out


def test_a_table_naming_an_unknown_role_or_visibility_exits_2(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    for principal, resource, fragment in (
        ("{ role: auditor }", "{ kind: document, visibility: team }", "'auditor' is no role"),
        ("{ role: editor }", "{ kind: document, visibility: public }", "visibility must be one of"),
        ("{ role: editor }", "{ kind: document, granted: [p] }", "unknown key(s) ['granted']"),
    ):
        table = tmp_path / "bad.yaml"
        table.write_text(
            f"principals:\n  p: {principal}\nresources:\n  r: {resource}\nallow: []\n",
            encoding="utf-8",
        )
        code, _, err = run(capsys, "policy", "test", "--config", str(config), str(table))
        assert code == 2
        assert fragment in err


# --- decide --batch -------------------------------------------------------------------


def test_batch_decisions_of_the_new_role(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    results = batch(
        capsys,
        config,
        tmp_path,
        [
            ("u-editor", "PATCH", "/api/assistants/a-1"),
            ("u-member", "PATCH", "/api/assistants/a-1"),
            ("u-editor", "DELETE", "/api/assistants/a-1"),
            ("u-admin", "DELETE", "/api/assistants/a-1"),
            ("u-editor", "POST", "/api/workspaces/ws-1/documents"),
            ("u-member", "GET", "/api/workspaces/ws-1/documents"),
        ],
    )
    assert [outcome(r) for r in results] == [
        (200, "allowed"),
        (403, "insufficient_role"),
        (403, "insufficient_role"),
        (200, "allowed"),
        (200, "allowed"),
        (200, "allowed"),
    ]
    assert results[0]["role"] == "editor"
    assert results[0]["message"] == "editor may assistant:update"


def test_batch_decisions_on_the_new_kind(
    capsys: pytest.CaptureFixture[str], config: Path, tmp_path: Path
) -> None:
    # Documents are looked up generically (Facts.resource): needs the generic rules.
    results = batch(
        capsys,
        config,
        tmp_path,
        [
            ("u-member", "GET", "/api/documents/d-private"),  # its creator
            ("u-other", "GET", "/api/documents/d-private"),  # another member
            ("u-editor", "GET", "/api/documents/d-private"),
            ("u-admin", "GET", "/api/documents/d-private"),
            ("u-member", "PATCH", "/api/documents/d-private"),
            ("u-other", "GET", "/api/documents/d-team"),
            ("u-other", "PATCH", "/api/documents/d-team"),
            ("u-editor", "PATCH", "/api/documents/d-team"),
            ("u-member", "GET", "/api/documents/d-missing"),
        ],
    )
    assert [outcome(r) for r in results] == [
        (200, "allowed"),
        (403, "not_visible"),
        (403, "not_visible"),
        (200, "allowed"),
        (200, "allowed"),
        (200, "allowed"),
        (403, "insufficient_role"),
        (200, "allowed"),
        (404, "not_found"),
    ]
    assert results[1]["message"] == "this private document is not visible to you"
    assert results[0]["resource"] == {"kind": "document", "id": "d-private", "workspace": "ws-1"}
