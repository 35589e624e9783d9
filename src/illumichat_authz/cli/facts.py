"""``illumichat-authz facts load|remove FACTS.json``: write facts into ``[database] url``.

The file has the format of ``[facts] file`` (memberships, assistants, chats, resources,
grants). ``load`` upserts every record; ``remove`` deletes the rows the records name (a
membership by user and workspace, a resource by kind and id, a grant by user and target).
Each is one transaction that bumps the revision and notifies every instance; the new
revision is printed (a read-your-writes token for ``decide``).
"""

from __future__ import annotations

import argparse
from typing import Any

from ._common import add_config_flag, database_from

__all__ = ["register"]


def register(subparsers: Any) -> None:
    facts = subparsers.add_parser("facts", help="load or remove facts in the database")
    sub = facts.add_subparsers(dest="facts_command", required=True, metavar="ACTION")
    for name, help_text in (
        ("load", "upsert the records of FACTS.json (one transaction)"),
        ("remove", "delete the rows the records of FACTS.json name (one transaction)"),
    ):
        cmd = sub.add_parser(
            name,
            help=help_text,
            description=f"{help_text[0].upper()}{help_text[1:]}: it bumps the facts revision "
            "and notifies every instance, and prints the new revision.",
        )
        add_config_flag(cmd)
        cmd.add_argument(
            "file", metavar="FACTS.json", help="a document in the format of [facts] file"
        )
        cmd.set_defaults(handler=_run, facts_remove=name == "remove")


def _run(args: argparse.Namespace) -> int:
    from ..facts_file import fact_records, read_facts_json

    records = fact_records(read_facts_json(args.file), source=args.file)
    with database_from(args) as database:
        if args.facts_remove:
            rev = database.writer.apply(remove=records)
        else:
            rev = database.writer.apply(upsert=records)
    verb = "removed" if args.facts_remove else "loaded"
    print(f"{verb} {len(records)} records; facts revision {rev}")
    return 0
