"""``illumichat-authz policy check | explain | test``: exit codes a policy author relies on.

0: ok / allowed; 1: the policy or table says no (a finding, a deny, a failed expectation);
2: the files themselves are broken (message on stderr, never a traceback).
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from illumichat_authz import authorizer as authorizer_module
from illumichat_authz.cli import main
from illumichat_authz.config import default_policies_dir
from illumichat_authz.stores.ratelimit import RateLimiter

_LIMITER = RateLimiter()
SHIPPED_TABLE = default_policies_dir() / "tests" / "illumichat.yaml"


@pytest.fixture(autouse=True)
def isolated(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in list(os.environ):
        if name.upper().startswith("ILLUMICHAT_AUTHZ_"):
            monkeypatch.delenv(name)
    monkeypatch.setattr(authorizer_module, "RateLimiter", lambda **_kw: _LIMITER)


def run(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def policy_copy(tmp_path: Path) -> tuple[Path, Path]:
    """A copy of the shipped policy and a config pointing at it."""
    pol = tmp_path / "policies"
    shutil.copytree(default_policies_dir(), pol)
    config = tmp_path / "authz.toml"
    config.write_text('[policies]\ndir = "policies"\n', encoding="utf-8")
    return pol, config


# --- check ------------------------------------------------------------------------------


def test_check_of_the_shipped_policy_is_ok(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "check")
    assert code == 0
    assert out.splitlines()[-1].startswith("ok: ")
    assert "routes" in out
    assert "actions" in out


def test_check_reports_an_unused_action_as_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pol, config = policy_copy(tmp_path)
    with (pol / "policy.csv").open("a", encoding="utf-8") as fh:
        fh.write("\np, owner, active, assistant:export, *\n")
    code, out, _ = run(capsys, "policy", "check", "--config", str(config))
    assert code == 0
    assert "warning: policy action 'assistant:export' is used by no route" in out
    strict, out, _ = run(capsys, "policy", "check", "--config", str(config), "--strict")
    assert strict == 1
    assert out.splitlines()[-1].startswith("FAILED: ")


@pytest.mark.parametrize(
    ("file", "damage"),
    [
        ("policy.csv", "p, owner, active\n"),  # too few fields
        ("policy.csv", "p, owner, sometimes, billing:read, *\n"),  # status outside vocabulary
        ("routes.toml", "[[route]\n"),  # TOML syntax
        ("routes.toml", '[[route]]\nmethods = ["GET"]\npath = "/x"\nclass = "open"\n'),
    ],
)
def test_a_broken_policy_dir_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, file: str, damage: str
) -> None:
    pol, config = policy_copy(tmp_path)
    with (pol / file).open("a", encoding="utf-8") as fh:
        fh.write("\n" + damage)
    code, out, err = run(capsys, "policy", "check", "--config", str(config))
    assert code == 2, (out, err)
    assert out == ""
    assert err.startswith("illumichat-authz: ")
    assert file in err
    assert "Traceback" not in err


def test_a_missing_policy_dir_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    config = tmp_path / "authz.toml"
    config.write_text('[policies]\ndir = "missing"\n', encoding="utf-8")
    code, out, err = run(capsys, "policy", "check", "--config", str(config))
    assert code == 2
    assert out == ""
    assert err.startswith("illumichat-authz: ")


def test_an_empty_policy_file_exits_2_or_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pol, config = policy_copy(tmp_path)
    (pol / "policy.csv").write_text("", encoding="utf-8")
    code, _out, err = run(capsys, "policy", "check", "--config", str(config))
    # Every authenticated route would be denied: never "ok".
    assert code in (1, 2)
    assert "Traceback" not in err


# --- explain ------------------------------------------------------------------------------


def test_explain_attributes_allow_and_deny(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(
        capsys, "policy", "explain", "--role", "member", "--action", "chat:create", "--visibility",
        "workspace",
    )  # fmt: skip
    assert code == 0
    assert out.startswith("ALLOW (allowed)")
    code, out, _ = run(capsys, "policy", "explain", "--role", "guest", "--action", "billing:read")
    assert code == 1
    assert out.startswith("DENY (insufficient_role)")
    code, out, _ = run(
        capsys, "policy", "explain", "--role", "owner", "--status", "inactive", "--action",
        "billing:read",
    )  # fmt: skip
    assert code == 1
    assert "membership_inactive" in out


@pytest.mark.parametrize(
    ("flag", "value", "listed"),
    [
        ("--role", "boss", "owner, admin, member, guest, none"),
        ("--action", "chat:crate", "chat:create, chat:list"),
        ("--status", "suspended", "'active', 'inactive'"),
        ("--visibility", "secret", "'public', 'workspace', 'private'"),
        ("--relation", "friend", "'creator', 'grantee', 'target_owner', '-'"),
    ],
)
def test_explain_an_unknown_value_is_a_usage_error_listing_the_valid_ones(
    capsys: pytest.CaptureFixture[str], flag: str, value: str, listed: str
) -> None:
    # Not a "DENY (policy_denied)": a typo must not read as the policy's answer.
    argv = {"--role": "guest", "--action": "workspace:read", flag: value}
    with pytest.raises(SystemExit) as exit_:
        main(["policy", "explain", *(x for pair in argv.items() for x in pair)])
    assert exit_.value.code == 2
    out, err = capsys.readouterr()
    assert out == ""
    assert f"argument {flag}: invalid choice: '{value}'" in err
    assert listed in err


def test_explain_takes_roles_and_actions_from_the_loaded_policy(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pol, config = policy_copy(tmp_path)
    csv = pol / "policy.csv"
    csv.write_text(
        csv.read_text(encoding="utf-8") + "g, guest, viewer\np, viewer, *, report:read, *\n",
        encoding="utf-8",
    )
    code, out, err = run(
        capsys, "policy", "explain", "--config", str(config), "--role", "viewer", "--action",
        "report:read",
    )  # fmt: skip
    assert (code, err) == (0, "")
    assert out.startswith("ALLOW")
    with pytest.raises(SystemExit):
        main(["policy", "explain", "--config", str(config), "--role", "boss", "--action", "x:y"])
    assert "(choose from owner, admin, member, guest, viewer, none)" in capsys.readouterr().err


def test_explain_attribute_mode_needs_both_flags(capsys: pytest.CaptureFixture[str]) -> None:
    code, _, err = run(capsys, "policy", "explain", "--role", "owner")
    assert code == 2
    assert "--role and --action" in err


@pytest.mark.parametrize("action", ["assistant:read", "chat:create", "assistant:update"])
def test_explain_an_assistant_action_needs_the_visibility(
    capsys: pytest.CaptureFixture[str], action: str
) -> None:
    # Without it only the role table would speak: ALLOW for an inactive member's read,
    # which a real request on a workspace or private assistant does not get.
    code, out, err = run(
        capsys, "policy", "explain", "--role", "member", "--status", "inactive", "--action", action
    )
    assert code == 2
    assert out == ""
    assert "--visibility" in err


def test_explain_a_request(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "explain", "--path", "/api/chats")
    assert code == 1
    assert out.startswith("401 authentication_required:")
    assert "route:    GET /api/chats" in out
    assert "caller:   anonymous" in out
    code, out, _ = run(capsys, "policy", "explain", "--path", "/api/widget/a-1/history")
    assert code == 0
    assert out.startswith("200 public:")
    code, out, _ = run(capsys, "policy", "explain", "--path", "/api/../etc")
    assert code == 1
    assert out.startswith("400 non_canonical_path:")


# --- test ---------------------------------------------------------------------------------


def test_the_shipped_table_passes(capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = run(capsys, "policy", "test", str(SHIPPED_TABLE))
    assert code == 0
    assert out.splitlines()[-1].startswith("ok: ")
    assert " 0 failed" in out


def test_a_failing_table_exits_1_and_names_the_failures(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    table = tmp_path / "wrong.yaml"
    text = SHIPPED_TABLE.read_text(encoding="utf-8")
    # Claim that a guest may manage billing; the policy says no.
    text += "\n  - { principal: guest, resource: the_workspace, actions: [billing:manage] }\n"
    table.write_text(text, encoding="utf-8")
    code, out, _ = run(capsys, "policy", "test", str(table))
    assert code == 1
    fails = [line for line in out.splitlines() if line.startswith("FAIL ")]
    assert len(fails) == 1
    assert "guest" in fails[0]
    assert "billing:manage" in fails[0]
    assert out.splitlines()[-1].startswith("FAILED: ")


def test_a_table_against_an_edited_policy_fails(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    pol, config = policy_copy(tmp_path)
    csv = (pol / "policy.csv").read_text(encoding="utf-8")
    (pol / "policy.csv").write_text(
        csv.replace(
            "p, admin, active, assistant:delete, *", "p, owner, active, assistant:delete, *"
        ),
        encoding="utf-8",
    )
    code, out, _ = run(capsys, "policy", "test", "--config", str(config), str(SHIPPED_TABLE))
    assert code == 1
    assert "assistant:delete" in out
    assert "admin" in out


@pytest.mark.parametrize(
    "content",
    ["principals: [\n", "just a string\n", "principals: {}\nresources: {}\n"],
)
def test_a_malformed_table_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, content: str
) -> None:
    table = tmp_path / "bad.yaml"
    table.write_text(content, encoding="utf-8")
    code, _, err = run(capsys, "policy", "test", str(table))
    assert code == 2
    assert str(table) in err
    assert "Traceback" not in err


def test_a_missing_table_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    code, _, err = run(capsys, "policy", "test", str(tmp_path / "absent.yaml"))
    assert code == 2
    assert "not found" in err


@pytest.mark.parametrize(
    ("edit", "named"),
    [
        # A misspelt key must not fall back to a default that makes a wrong line pass.
        (("member: { role: member }", "member: { rol: member }"), "principals.member"),
        (
            (
                "private_assistant: { kind: assistant, visibility: private }",
                "private_assistant: { kind: assistant, visibilty: private }",
            ),
            "resources.private_assistant",
        ),
        (("granted: [member, guest]", "granted: [member, nobody]"), "granted"),
        (("creator: member }", "creator: membr }"), "creator"),
        (
            ("the_workspace: { kind: workspace }", "the_workspace: { kind: workspace, role: x }"),
            "resources.the_workspace",
        ),
    ],
)
def test_a_table_that_says_something_it_cannot_mean_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, edit: tuple[str, str], named: str
) -> None:
    text = SHIPPED_TABLE.read_text(encoding="utf-8")
    assert edit[0] in text
    table = tmp_path / "typo.yaml"
    table.write_text(text.replace(edit[0], edit[1], 1), encoding="utf-8")
    code, _, err = run(capsys, "policy", "test", str(table))
    assert code == 2, err
    assert named in err
    assert "Traceback" not in err


def test_an_allow_that_could_never_be_checked_exits_2(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # chat:read never applies to the workspace resource: the line could never fail.
    text = SHIPPED_TABLE.read_text(encoding="utf-8")
    text += "\n  - { principal: guest, resource: the_workspace, actions: [chat:read] }\n"
    table = tmp_path / "never.yaml"
    table.write_text(text, encoding="utf-8")
    code, _, err = run(capsys, "policy", "test", str(table))
    assert code == 2
    assert "does not apply" in err
