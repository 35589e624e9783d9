"""A fleet on one PostgreSQL: propagation and revocation across processes, and no lost
change while listeners are killed, in one run.

    .venv/bin/python benchmarks/bench_fleet.py [--quick] [--instances 4 8]

Starts a throwaway cluster (tests/postgres_server.py) and N instances, each a process of
its own (tests/fleet_worker.py: ``Authorizer.from_settings`` with ``[database]``). The
writer is this process, through the library's own write path (``FactsWriter.apply``).
Times are ``CLOCK_MONOTONIC``, shared by every process on the machine.

- propagation: from the writer's commit returning to the feed of every instance having
  applied the change (the slowest instance per change), notifications on;
- revocation, notifications on: a member removed; every instance is watching (deciding
  in a loop, 1 ms apart) and the time is until the last one refuses;
- revocation, notifications off (``listen = false``, the 1 s poll alone);
- 10,000 changes written while every instance's LISTEN connection is killed every
  100 ms: each instance must apply every revision once, in order, with no cache reset.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "tests" / "stores" / "sql"))

from _timing import pct  # noqa: E402
from test_fleet_processes import Instance, write_config  # noqa: E402

from illumichat_authz.config import DatabaseSettings  # noqa: E402
from illumichat_authz.facts import Assistant, Membership  # noqa: E402
from illumichat_authz.stores.sql import migrate  # noqa: E402
from illumichat_authz.stores.sql.database import Database  # noqa: E402
from postgres_server import PostgresServer, killing_listeners  # noqa: E402


def row(label: str, samples: list[float], unit: str = "ms") -> str:
    return (
        f"| {label} | {statistics.median(samples):,.2f} {unit} | "
        f"{pct(samples, 0.99):,.2f} {unit} | {max(samples):,.2f} {unit} | {len(samples)} |"
    )


def start(config: Path, n: int) -> list[Instance]:
    return [Instance(config) for _ in range(n)]


def propagation(
    db: Database, fleet: list[Instance], changes: int, writes: list[float]
) -> list[float]:
    """Commit to the slowest instance's apply, per change; ``writes``: each write's time."""
    base = db.feed.check() if db.feed.applied < 0 else db.feed.applied
    commits: dict[int, int] = {}
    for i in range(changes):
        t0 = time.monotonic_ns()
        rev = db.writer.apply(upsert=[Membership(user=f"p{i}", workspace="wp", role="member")])
        commits[rev] = time.monotonic_ns()
        writes.append((commits[rev] - t0) / 1e6)
        time.sleep(0.005)  # spaced: this is latency, not throughput
    time.sleep(0.2)
    seen = [inst.ask(op="applied", since=base)["times"] for inst in fleet]
    out: list[float] = []
    for rev, committed in commits.items():
        last = max(int(times[str(rev)]) for times in seen)
        out.append((last - committed) / 1e6)
    return out


def revocation(
    db: Database, fleet: list[Instance], rounds: int, timeout: float
) -> tuple[list[float], list[float]]:
    """Until every instance refuses, and until every instance's feed applied the removal."""
    out: list[float] = []
    evicted: list[float] = []
    for i in range(rounds):
        user = f"r{i}"
        db.writer.apply(upsert=[Membership(user=user, workspace="w1", role="member")])
        question = {"user": user, "action": "assistant:read", "kind": "assistant", "id": "a1"}
        for inst in fleet:  # warm and allowed everywhere first
            deadline = time.monotonic() + 5
            while inst.ask(op="access", **question)["status"] != 200:
                assert time.monotonic() < deadline
                time.sleep(0.002)
        for inst in fleet:
            inst.send(op="until", want=403, timeout=timeout, pause=0.001, **question)
        for inst in fleet:
            assert inst.read()["watching"]
        rev = db.writer.apply(remove=[Membership(user=user, workspace="w1", role="member")])
        committed = time.monotonic_ns()
        answers = [inst.read() for inst in fleet]
        if any(a["status"] != 403 for a in answers):
            raise SystemExit(f"an instance still allowed {user} after {timeout} s")
        out.append((max(a["at"] for a in answers) - committed) / 1e6)
        applied = [inst.ask(op="applied", since=rev - 1)["times"][str(rev)] for inst in fleet]
        evicted.append((max(applied) - committed) / 1e6)
    return out, evicted


def no_lost_change(url: str, db: Database, fleet: list[Instance], changes: int) -> list[str]:
    base = db.feed.check()
    t0 = time.monotonic()
    with killing_listeners(url, every_s=0.1) as killed:
        for i in range(changes):
            db.writer.apply(upsert=[Membership(user=f"k{i}", workspace="wk", role="member")])
    wrote = time.monotonic() - t0
    final = base + changes
    lines = []
    for n, inst in enumerate(fleet):
        deadline = time.monotonic() + 30
        while (seen := inst.ask(op="applied", since=base))["applied"] < final:
            if time.monotonic() > deadline:
                raise SystemExit(f"instance {n} stopped at {seen['applied']} of {final}")
            time.sleep(0.05)
        revs = sorted(map(int, seen["times"]))
        if revs != list(range(base + 1, final + 1)) or seen["resets"]:
            raise SystemExit(f"instance {n} lost or reloaded changes")
    lines.append(
        f"{changes:,} changes written in {wrote:.1f} s while {killed[0]} LISTEN connections "
        f"were killed: every one of {len(fleet)} instances applied each revision once, in "
        "order, with no cache reset."
    )
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer changes and rounds")
    parser.add_argument("--instances", type=int, nargs="+", default=[4, 8])
    args = parser.parse_args()
    changes = 200 if args.quick else 1000
    rounds = 20 if args.quick else 100
    server = PostgresServer()
    server.start()
    tmp = Path(tempfile.mkdtemp())
    lines = [
        f"bench_fleet.py on {platform.python_implementation()} {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, PostgreSQL on loopback "
        "(fsync off), instances in processes of their own",
        "",
        "| measurement | median | p99 | max | n |",
        "|---|---|---|---|---|",
    ]
    tail: list[str] = []
    try:
        for n in args.instances:
            url = server.create_database()
            db = Database(DatabaseSettings(url=url, poll_interval_s=1.0))
            migrate.upgrade(db.engine)
            db.writer.apply(
                upsert=[Assistant(id="a1", workspace="w1", visibility="workspace", creator="x")]
            )
            fleet = start(write_config(tmp / f"on{n}.toml", url, poll=1.0), n)
            try:
                writes: list[float] = []
                spread = propagation(db, fleet, changes, writes)
                lines.append(row("write transaction (`FactsWriter.apply`, one membership)", writes))
                lines.append(row(f"propagation, commit to all {n} caches", spread))
                refused, evicted = revocation(db, fleet, rounds, 5.0)
                lines.append(row(f"revocation, evicted by all {n} (watching)", evicted))
                lines.append(row(f"revocation, refused by all {n}", refused))
                if n == args.instances[0]:
                    tail += no_lost_change(url, db, fleet, 2000 if args.quick else 10_000)
            finally:
                for inst in fleet:
                    inst.close()
            off = start(write_config(tmp / f"off{n}.toml", url, listen=False, poll=1.0), n)
            try:
                samples, _ = revocation(db, off, max(5, rounds // 10), 5.0)
                lines.append(row(f"revocation, notifications off (1 s poll), all {n}", samples))
            finally:
                for inst in off:
                    inst.close()
            db.close()
    finally:
        server.remove()
    print("\n".join([*lines, "", *tail]))


if __name__ == "__main__":
    main()
