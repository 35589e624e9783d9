"""``illumichat-authz audit tail``: the decision log, newest last, filtered.

Reads the table of the ``database`` sink (``[database] url``), else the NDJSON file of the
first ``file:`` sink, else ``--file``. Filters: ``--user``, ``--route``, ``--reason``,
``--status``, ``--since``/``--until`` (RFC 3339, or seconds ago). ``--follow`` keeps
printing new events (every 0.5 s) until interrupted. One JSON object per line.
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from ..errors import ConfigurationError
from ._common import add_config_flag, settings_from

__all__ = ["register"]

_POLL_S = 0.5


def register(subparsers: Any) -> None:
    audit = subparsers.add_parser("audit", help="read the decision log")
    sub = audit.add_subparsers(dest="audit_command", required=True, metavar="ACTION")
    tail = sub.add_parser(
        "tail",
        help="print the newest decision log events (optionally filtered, or followed)",
        description="Print the newest decision log events, oldest first, as NDJSON: from "
        "the [decision_log] 'database' sink's table, else its first 'file:' sink, else "
        "--file.",
    )
    add_config_flag(tail)
    tail.add_argument("--file", type=Path, help="an NDJSON decision log to read instead")
    tail.add_argument("-n", "--lines", type=_count, default=20, help="how many (default 20)")
    tail.add_argument("--user", help="only this principal")
    tail.add_argument("--route", help='only this route ("GET /api/assistants/{assistantId}")')
    tail.add_argument("--reason", help="only this reason (policy_denied, rate_limited, ...)")
    tail.add_argument("--status", type=int, help="only this status (403, 401, ...)")
    tail.add_argument("--since", type=_when, help="RFC 3339 time, or seconds ago")
    tail.add_argument("--until", type=_when, help="RFC 3339 time, or seconds ago")
    tail.add_argument("-f", "--follow", action="store_true", help="keep printing new events")
    tail.set_defaults(handler=_tail)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a count: {text!r}") from None
    if not 1 <= value <= 100_000:
        raise argparse.ArgumentTypeError("between 1 and 100000")
    return value


def _when(text: str) -> str:
    """The table's time text for ``text``: an RFC 3339 UTC time, or seconds before now."""
    try:
        ago = float(text)
    except ValueError:
        ago = None
    if ago is not None:
        if not 0 <= ago < 1e10:
            raise argparse.ArgumentTypeError("seconds ago must be >= 0")
        at = time.time() - ago
        return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(at)) + f".{int(at % 1 * 1000):03d}Z"
    from datetime import UTC, datetime

    try:
        parsed = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"not a time: {text!r} (e.g. 2026-12-03T10:00:00Z, or 3600 for an hour ago)"
        ) from None
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _tail(args: argparse.Namespace) -> int:
    read = _reader(args)
    filters = {
        "principal": args.user,
        "route": args.route,
        "reason": args.reason,
        "status": args.status,
        "since": args.since,
        "until": args.until,
    }
    last: str | None = None
    seen: set[str] = set()  # the ids printed at time ``last`` (events share milliseconds)
    for event in read(filters, None, args.lines):
        last, seen = _print(event, last, seen)
    while args.follow:
        time.sleep(_POLL_S)
        for event in read(filters, last, 100_000):
            if event["time"] == last and event.get("decision_id") in seen:
                continue
            last, seen = _print(event, last, seen)
    return 0


def _print(event: dict[str, Any], last: str | None, seen: set[str]) -> tuple[str, set[str]]:
    print(json.dumps(event, separators=(",", ":")), flush=True)
    at = str(event["time"])
    seen = seen if at == last else set()
    seen.add(str(event.get("decision_id")))
    return at, seen


_Reader = Callable[[dict[str, Any], str | None, int], list[dict[str, Any]]]


def _reader(args: argparse.Namespace) -> _Reader:
    if args.file is not None:
        return _file_reader(args.file)
    settings = settings_from(args)
    sinks = settings.decision_log.sinks
    if "database" in sinks:
        return _database_reader(args)
    files = [s.removeprefix("file:") for s in sinks if s.startswith("file:")]
    if files:
        return _file_reader(Path(files[0]))
    raise ConfigurationError(
        "no decision log to read: [decision_log] sinks has neither 'database' nor a 'file:' "
        "sink (or pass --file)"
    )


def _database_reader(args: argparse.Namespace) -> _Reader:
    from ..stores import open_database
    from ..stores.sql.decision_log import read_events
    from ..stores.sql.engine import unreachable

    database = open_database(settings_from(args))

    def read(filters: dict[str, Any], after: str | None, limit: int) -> list[dict[str, Any]]:
        with unreachable():
            return read_events(database.engine, **filters, after=after, limit=limit)

    return read


def _file_reader(path: Path) -> _Reader:
    def events() -> Iterator[dict[str, Any]]:
        try:
            with path.open(encoding="ascii", errors="replace") as lines:
                for line in lines:
                    try:
                        event = json.loads(line)
                    except ValueError:
                        continue  # a line cut short by a writer still at work
                    if isinstance(event, dict) and isinstance(event.get("time"), str):
                        yield event
        except FileNotFoundError:
            raise ConfigurationError(f"no decision log at {str(path)!r}") from None

    def read(filters: dict[str, Any], after: str | None, limit: int) -> list[dict[str, Any]]:
        found = [e for e in events() if _matches(e, filters, after)]
        return found[-limit:]

    return read


def _matches(event: dict[str, Any], filters: dict[str, Any], after: str | None) -> bool:
    for name in ("principal", "route", "reason", "status"):
        want = filters[name]
        if want is not None and event.get(name) != want:
            return False
    at = event["time"]
    if filters["since"] is not None and at < filters["since"]:
        return False
    if filters["until"] is not None and at > filters["until"]:
        return False
    return after is None or at >= after
