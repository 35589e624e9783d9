"""``illumichat-authz db upgrade``, ``db check``, ``db trigger-sql`` and ``db prune``: our
tables in ``[database] url``.

``upgrade`` runs our migrations (idempotent: a database already at the newest one is left
as it is); ``check`` exits 1 naming every problem: migrations not applied, a mapped table
or column missing; ``prune`` deletes change-log rows past a retention. A database that
cannot be reached is exit 1 with the driver's reason (never the URL's password).
"""

from __future__ import annotations

import argparse
import sys
from typing import Any

from ._common import add_config_flag, database_from

__all__ = ["register"]


def register(subparsers: Any) -> None:
    db = subparsers.add_parser("db", help="create and check the database tables")
    sub = db.add_subparsers(dest="db_command", required=True, metavar="ACTION")
    up = sub.add_parser(
        "upgrade",
        help="apply our migrations (idempotent)",
        description="Create or migrate our tables in [database] url; a database already at "
        "the newest migration is left as it is.",
    )
    add_config_flag(up)
    up.set_defaults(handler=_upgrade)
    check = sub.add_parser(
        "check",
        help="exit 1 unless the database is ready to serve",
        description="Check that our migrations are applied and that every mapped table and "
        "column of [database.tables] exists; exit 1 naming each problem.",
    )
    add_config_flag(check)
    check.set_defaults(handler=_check)
    trig = sub.add_parser(
        "trigger-sql",
        help="print the PostgreSQL triggers for writes the host makes to mapped tables",
        description="Print the SQL (a function and one trigger per table mapped in "
        "[database.tables]) that makes the host's own writes bump the facts revision, log "
        "the change and notify every instance, as the library's writes do. Needs no "
        "connection.",
    )
    add_config_flag(trig)
    trig.set_defaults(handler=_trigger_sql)
    prune = sub.add_parser(
        "prune",
        help="delete change-log rows older than a retention",
        description="Delete the change log's rows older than --older-than seconds (the "
        "newest row stays). An instance away for longer than that starts its cache over "
        "instead of catching up; keep the log longer than any outage to ride out.",
    )
    add_config_flag(prune)
    prune.add_argument(
        "--older-than",
        type=_seconds,
        default=DEFAULT_RETENTION_S,
        metavar="SECONDS",
        help=f"retention in seconds (default {DEFAULT_RETENTION_S:.0f}: a week)",
    )
    prune.set_defaults(handler=_prune)


#: How long ``db prune`` keeps the change log by default.
DEFAULT_RETENTION_S = 7 * 24 * 3600.0


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number of seconds: {text!r}") from None
    if not (value >= 0 and value < float("inf")):
        raise argparse.ArgumentTypeError("the retention must be a finite number >= 0")
    return value


def _prune(args: argparse.Namespace) -> int:
    from ..stores.sql.writes import prune_change_log

    with database_from(args) as database:
        gone = prune_change_log(database.engine, older_than_s=args.older_than)
    print(f"pruned {gone} change-log rows older than {args.older_than:g} s")
    return 0


def _upgrade(args: argparse.Namespace) -> int:
    from ..stores.sql import migrate

    with database_from(args) as database:
        before, after = migrate.upgrade(database.engine)
    if before == after:
        print(f"database already at migration {after}")
    else:
        print(f"database upgraded from migration {before or 'none'} to {after}")
    return 0


def _check(args: argparse.Namespace) -> int:
    from ..stores.sql import migrate

    with database_from(args) as database:
        problems = migrate.check(database.engine, database.tables)
    for problem in problems:
        print(f"illumichat-authz: {problem}", file=sys.stderr)
    if not problems:
        print(f"ok: database at migration {migrate.head()}")
    return 1 if problems else 0


def _trigger_sql(args: argparse.Namespace) -> int:
    from ..config import load_settings
    from ..errors import ConfigurationError

    try:
        from ..stores.sql.database import tables_from
        from ..stores.sql.triggers import trigger_sql
    except ModuleNotFoundError as exc:
        raise ConfigurationError(
            f"db trigger-sql needs the db extra ({exc.name} is missing)"
        ) from None

    print(trigger_sql(tables_from(load_settings(args.config).database)))
    return 0
