"""``policy diff``: exactly the decisions and routes that change, checked against casbin's
own ``enforce`` on both policies at every point of the role table, and against each
policy's verdict over the union of both attribute spaces."""

from __future__ import annotations

import json
import shutil
from itertools import product
from pathlib import Path

import pytest

from illumichat_authz.cli import main
from illumichat_authz.compile import build_core
from illumichat_authz.config import load_settings
from illumichat_authz.policy_diff import decision_changes, route_changes
from illumichat_authz.vocab import NO_ROLE, MembershipStatus, Relation

ROOT = Path(__file__).resolve().parents[2]


def _copy(tmp_path: Path, name: str) -> Path:
    target = tmp_path / name
    shutil.copytree(ROOT / "policies", target, ignore=shutil.ignore_patterns("tests"))
    return target


def _edit(directory: Path, file: str, old: str, new: str) -> None:
    path = directory / file
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def _core(directory: Path):  # type: ignore[no-untyped-def]
    return build_core(
        load_settings(overrides={"policies": {"dir": str(directory)}}, environment=False)
    )


def test_the_same_policy_changes_nothing(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old, new = _copy(tmp_path, "old"), _copy(tmp_path, "new")
    assert main(["policy", "diff", str(old), str(new)]) == 0
    assert capsys.readouterr().out == ""


@pytest.mark.parametrize(
    ("old_line", "new_line"),
    [
        ("p, member, active, chat:create, *\n", "p, admin, active, chat:create, *\n"),
        ("p, owner, active, billing:manage, *\n", "p, admin, active, billing:manage, *\n"),
        ("p2, admin, active, assistant, private, *\n", ""),  # a visibility rule goes
        ("p, guest, *, assistant:read, *\n", "p, guest, active, assistant:read, *\n"),
        ("", "p, member, active, reports:export, *\n"),  # an action only the new side has
        ("g, member, guest\n", ""),  # the hierarchy changes
    ],
)
def test_changes_are_exactly_where_casbin_answers_differently(
    tmp_path: Path, old_line: str, new_line: str
) -> None:
    old_dir, new_dir = _copy(tmp_path, "old"), _copy(tmp_path, "new")
    if old_line:
        _edit(new_dir, "policy.csv", old_line, new_line)
    else:
        (new_dir / "policy.csv").write_text((new_dir / "policy.csv").read_text() + new_line)
    old, new = _core(old_dir).policy, _core(new_dir).policy
    changes = decision_changes(old, new)
    assert changes, "an edit of the rules that changes nothing?"
    reported = {(c.role, c.status, c.action, c.relation, c.kind, c.visibility) for c in changes}

    # The role table (no visibility) asked of casbin itself, on both enforcers.
    roles = sorted({*old.roles, *new.roles, NO_ROLE})
    actions = sorted(old.actions | new.actions)
    statuses = [s.value for s in MembershipStatus]
    relations = [r.value for r in Relation]
    for role, status, action, rel in product(roles, statuses, actions, relations):
        before = bool(old.enforcer.enforce(role, status, action, rel))
        after = bool(new.enforcer.enforce(role, status, action, rel))
        point = (role, status, action, rel, None, None)
        if before != after:
            assert point in reported, point
        elif point in reported:  # same verdict, so only the reason may have changed
            change = next(c for c in changes if (c.role, c.status, c.action, c.relation,
                                                  c.kind, c.visibility) == point)  # fmt: skip
            assert change.old.allowed == change.new.allowed
    # And every reported point really differs.
    for change in changes:
        point = (change.role, change.status, change.action, change.relation, change.kind,
                 change.visibility)  # fmt: skip
        assert (old.verdict(*point).allowed, old.verdict(*point).reason) != (
            new.verdict(*point).allowed,
            new.verdict(*point).reason,
        )


def test_a_rule_moved_up_only_narrows_the_roles_below(tmp_path: Path) -> None:
    old_dir, new_dir = _copy(tmp_path, "old"), _copy(tmp_path, "new")
    _edit(
        new_dir,
        "policy.csv",
        "p, admin, active, assistant:delete, *\n",
        "p, owner, active, assistant:delete, *\n",
    )
    changes = decision_changes(_core(old_dir).policy, _core(new_dir).policy)
    assert {c.action for c in changes} == {"assistant:delete"}
    assert {c.role for c in changes} == {"admin"}  # the owner keeps it, by its own rule now
    assert not any(c.new.allowed for c in changes)  # nothing is allowed that was not
    flips = [c for c in changes if c.old.allowed]
    assert {c.status for c in flips} == {"active"}
    # The rest are denies whose reason changed (an inactive admin: now "no rule" first).
    assert all(not c.old.allowed for c in changes if c not in flips)


def test_route_changes(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    old_dir, new_dir = _copy(tmp_path, "old"), _copy(tmp_path, "new")
    _edit(new_dir, "routes.toml", 'rate_limit = "5/minute"', 'rate_limit = "10/minute"')
    routes = (new_dir / "routes.toml").read_text()
    (new_dir / "routes.toml").write_text(
        routes + '\n[[route]]\nmethods = ["GET"]\npath = "/api/status"\nclass = "public"\n'
        'action = "status:read"\n'
    )
    changes = route_changes(_core(old_dir).routes, _core(new_dir).routes)
    assert [(c.change, c.route) for c in changes] == [
        ("+", "GET /api/status"),
        ("~", "POST /api/widget/tickets/create"),
    ]
    assert "rate_limit=10/minute" in (changes[1].new or "")
    assert main(["policy", "diff", str(old_dir), str(new_dir), "--json"]) == 1
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert [line.get("change") for line in lines] == ["+", "~"]


def test_cli_lists_each_change_and_exits_1(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_dir, new_dir = _copy(tmp_path, "old"), _copy(tmp_path, "new")
    _edit(
        new_dir,
        "policy.csv",
        "p, member, active, chat:create, *\n",
        "p, admin, active, chat:create, *\n",
    )
    assert main(["policy", "diff", str(old_dir), str(new_dir)]) == 1
    captured = capsys.readouterr()
    lines = captured.out.splitlines()
    assert lines
    assert all(line.startswith("decision ") and "action=chat:create" in line for line in lines)
    assert "allowed -> denied (insufficient_role)" in lines[0]
    assert f"{len(lines)} decisions and 0 routes change" in captured.err


def test_a_directory_that_does_not_load_is_exit_2(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    old_dir, new_dir = _copy(tmp_path, "old"), _copy(tmp_path, "new")
    (new_dir / "policy.csv").write_text("p, member\n")
    assert main(["policy", "diff", str(old_dir), str(new_dir)]) == 2
    assert main(["policy", "diff", str(old_dir), str(tmp_path / "nowhere")]) == 2
    assert "not a directory" in capsys.readouterr().err
