"""``illumichat-authz policy publish | rollback | status | shadow``: policy versions in the
database (``[policies] source = "database"``, docs/policy-rollout.md)."""

from __future__ import annotations

import argparse
import datetime
import json
import time
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ..rollout.candidate import PolicyRejected, compile_candidate, policy_files
from ._common import add_config_flag, database_from, settings_from

__all__ = ["register_rollout"]

#: An instance silent for longer is not waited for (its heartbeat is every 5 s).
LIVE_S = 15.0


def register_rollout(psub: Any) -> None:
    publish = psub.add_parser(
        "publish",
        help="check a policy directory and roll it out to every instance as the next version",
        description="Compile and check DIR (default: policies.dir) as `policy check --strict` "
        "and its tests/*.yaml tables do; exit 1, storing nothing, if it fails. Else store it "
        "as the next version, wait until every live instance has prepared it (or refused it: "
        "then it is not activated, exit 1), and activate it.",
    )
    add_config_flag(publish)
    publish.add_argument("dir", metavar="DIR", nargs="?", help="the policy directory")
    publish.add_argument("--note", help="a line saying what changed (shown by status)")
    _add_wait(publish)
    publish.set_defaults(handler=_publish)

    rollback = psub.add_parser(
        "rollback",
        help="activate an earlier version (default: the one active before this one)",
        description="Roll the fleet back to --to VERSION, or to the version that was active "
        "before the active one; the same two steps as publish.",
    )
    add_config_flag(rollback)
    rollback.add_argument("--to", type=int, metavar="VERSION", help="the version to activate")
    _add_wait(rollback)
    rollback.set_defaults(handler=_rollback)

    status = psub.add_parser(
        "status",
        help="the active policy version, and which instances have applied it",
        description="Print the active, staged and shadow versions, the stored versions, and "
        "each instance's heartbeat: the version it enforces, what it prepared, what it refused.",
    )
    add_config_flag(status)
    status.add_argument("--json", action="store_true", help="one JSON object")
    status.set_defaults(handler=_status)

    shadow = psub.add_parser(
        "shadow",
        help="evaluate a candidate beside the live policy on real traffic, enforcing nothing",
        description="Check DIR as publish does and store it as a version that every instance "
        "evaluates beside the active one, logging each request on which they would differ; "
        "--off stops it.",
    )
    add_config_flag(shadow)
    shadow.add_argument("dir", metavar="DIR", nargs="?", help="the candidate policy directory")
    shadow.add_argument("--off", action="store_true", help="stop evaluating a shadow policy")
    shadow.add_argument("--note", help="a line saying what the candidate changes")
    shadow.set_defaults(handler=_shadow)


def _add_wait(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--wait", type=float, default=10.0, metavar="S",
        help="seconds to wait for instances to prepare it (default 10)",
    )  # fmt: skip


def _versions(database: Any) -> Any:
    from ..stores.sql.policy_versions import PolicyVersions

    return PolicyVersions(database.engine)


def _checked(args: argparse.Namespace, failed: str) -> tuple[dict[str, str], str] | None:
    """DIR's files and revision once it passed every check; else each reason printed,
    then ``failed``, and ``None``."""
    settings = settings_from(args)
    directory = Path(args.dir) if args.dir else settings.policies.dir
    if not directory.is_dir():
        raise ConfigurationError(f"{directory}: not a directory")
    try:
        files = policy_files(settings, directory)
        revision = compile_candidate(settings, directory).policy_revision
    except PolicyRejected as exc:
        for problem in exc.problems:
            print(f"refused: {problem}")
        print(failed)
        return None
    return files, revision


def _publish(args: argparse.Namespace) -> int:
    checked = _checked(args, "FAILED: nothing was published")
    if checked is None:
        return 1
    files, revision = checked
    with database_from(args) as database:
        versions = _versions(database)
        version = versions.stage(files, revision, args.note)
        print(f"stored version {version} (policy {revision})")
        return _roll_out(versions, version, args.wait)


def _rollback(args: argparse.Namespace) -> int:
    with database_from(args) as database:
        versions = _versions(database)
        target = args.to if args.to is not None else versions.previous()
        if target is None:
            print("FAILED: no earlier version to roll back to")
            return 1
        row = versions.get(target)
        if row is None:
            print(f"FAILED: there is no version {target}")
            return 1
        if versions.state().active == target:
            print(f"version {target} is already active")
            return 0
        versions.stage_existing(target)
        print(f"rolling back to version {target} (policy {row.revision})")
        return _roll_out(versions, target, args.wait)


def _roll_out(versions: Any, version: int, wait_s: float) -> int:
    """Wait for the live instances to prepare ``version``, then activate it; exit 1 (and
    leave the active version as it was) if one refused it."""
    deadline = time.monotonic() + wait_s
    while True:
        live = [i for i in versions.instances() if time.time() - i.seen_at < LIVE_S]
        refused = [i for i in live if i.error and i.error.startswith(f"version {version}:")]
        if refused:
            versions.unstage()
            for inst in refused:
                print(f"refused by {inst.instance}: {inst.error}")
            print(f"FAILED: version {version} was not activated; the active version stays")
            return 1
        waiting = [i for i in live if version not in (i.prepared, i.version)]
        if not waiting or time.monotonic() >= deadline:
            break
        time.sleep(0.02)
    started = time.monotonic()
    versions.activate(version)
    for inst in waiting:
        print(f"warning: {inst.instance} had not prepared it; it compiles it now")
    applied: set[str] = set()
    names = {i.instance for i in live}
    while names - applied and time.monotonic() - started < max(wait_s, 1.0):
        applied = {i.instance for i in versions.instances() if i.version == version}
        time.sleep(0.02)
    print(
        f"ok: version {version} active; {len(applied & names)} of {len(names)} live "
        f"instance(s) report it"
    )
    return 0


def _shadow(args: argparse.Namespace) -> int:
    if args.off:
        with database_from(args) as database:
            _versions(database).set_shadow(None)
        print("ok: no shadow policy")
        return 0
    checked = _checked(args, "FAILED: nothing was stored")
    if checked is None:
        return 1
    files, revision = checked
    with database_from(args) as database:
        versions = _versions(database)
        version = versions.stage(files, revision, args.note, staged=False)
        versions.set_shadow(version)
    print(f"ok: version {version} (policy {revision}) evaluated in shadow; nothing enforced")
    return 0


def _when(at: float | None) -> str:
    if at is None:
        return "-"
    return datetime.datetime.fromtimestamp(at, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _status(args: argparse.Namespace) -> int:
    with database_from(args) as database:
        versions = _versions(database)
        state = versions.state()
        stored = versions.versions()
        instances = versions.instances()
    active = next((v for v in stored if v.version == state.active), None)
    if args.json:
        print(
            json.dumps(
                {
                    "active": state.active,
                    "revision": active.revision if active else None,
                    "staged": state.staged,
                    "shadow": state.shadow,
                    "versions": [
                        {
                            "version": v.version,
                            "revision": v.revision,
                            "note": v.note,
                            "created_at": v.created_at,
                            "activated_at": v.activated_at,
                        }
                        for v in stored
                    ],
                    "instances": [
                        {**i.as_dict(), "applied": i.version == state.active} for i in instances
                    ],
                }
            )
        )
        return 0
    if active is None:
        print("active: none (instances serve their policies.dir)")
    else:
        print(f"active: version {active.version} (policy {active.revision})")
    if state.staged is not None:
        print(f"staged: version {state.staged}")
    if state.shadow is not None:
        print(f"shadow: version {state.shadow}")
    for v in stored[-10:]:
        mark = "*" if v.version == state.active else " "
        print(f"{mark} {v.version:>4}  {v.revision}  {_when(v.created_at)}  {v.note or ''}")
    now = time.time()
    for i in instances:
        ok = "applied" if i.version == state.active else "NOT applied"
        seen = now - i.seen_at
        print(
            f"instance {i.instance}: version {i.version} (policy {i.revision}) {ok}; "
            f"prepared {i.prepared}; seen {seen:.0f}s ago"
            + ("" if seen < LIVE_S else " (silent)")
            + (f"; refused {i.error}" if i.error else "")
        )
    return 0
