"""The decision log: its cost at the call site, and how fast its writer persists.

    .venv/bin/python benchmarks/bench_decision_log.py [--quick]

- call site: ``Authorizer.decide`` with and without a decision log, interleaved round by
  round, for an allow that is not logged (``allows = "none"``) and a deny that is (queued);
  the writer thread is kept off the timed loop (its work is measured next);
- the writer: building and writing queued events, per event, to a sink that discards them
  and to an NDJSON file;
- persisted: 200,000 events written to PostgreSQL (``COPY`` batches, a throwaway cluster on
  loopback, tests/postgres_server.py) and to SQLite, events per second, against one
  ``INSERT`` per event (the naive alternative) on the same PostgreSQL.
"""

from __future__ import annotations

import argparse
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

from _timing import batch_us, gc_off  # noqa: E402
from sqlalchemy import insert  # noqa: E402

from illumichat_authz import Authorizer, CredentialKind, Principal, RequestFacts  # noqa: E402
from illumichat_authz.audit import DecisionEvent, DecisionLog, NdjsonSink  # noqa: E402
from illumichat_authz.audit.log import _WRITER  # noqa: E402
from illumichat_authz.facts import Assistant, InMemoryFacts, Membership  # noqa: E402
from illumichat_authz.stores.sql import migrate  # noqa: E402
from illumichat_authz.stores.sql.decision_log import SqlDecisionSink  # noqa: E402
from illumichat_authz.stores.sql.engine import create_engine  # noqa: E402
from illumichat_authz.stores.sql.schema import decision_log  # noqa: E402
from illumichat_authz.testing import make_test_settings  # noqa: E402
from illumichat_authz.testing.fixtures import _core_for  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402


class Discard:
    def write(self, events: Sequence[DecisionEvent]) -> None:
        pass

    def close(self) -> None:
        pass


def quiet_log(sinks: list[Any], **options: Any) -> DecisionLog:
    """A log the writer thread leaves alone: drained by hand, outside the timings."""
    log = DecisionLog(sinks, **options)
    _WRITER.discard(log)
    return log


def call_site(rounds: int, inner: int) -> list[str]:
    core = _core_for(make_test_settings())
    facts = InMemoryFacts()
    facts.add(
        Membership(user="alice", workspace="w1", role="member"),
        Assistant(id="a1", workspace="w1", visibility="workspace", creator="bob"),
        Assistant(id="a2", workspace="w1", visibility="private", creator="bob"),
    )
    alice = Principal(user_id="alice", kind=CredentialKind.SESSION)
    plain = Authorizer(core=core, facts=facts)
    log = quiet_log([Discard()], queue_size=10_000_000)
    logged = Authorizer(core=core, facts=facts, decision_log=log)
    allow = RequestFacts(method="GET", path="/api/assistants/a1", peer="127.0.0.1")
    deny = RequestFacts(method="GET", path="/api/assistants/a2", peer="127.0.0.1")

    def fn(authz: Authorizer, request: RequestFacts) -> Callable[[], Any]:
        return lambda: authz.decide(request, principal=alice)

    fns = {
        "allow, no log": fn(plain, allow),
        "allow, log (not logged)": fn(logged, allow),
        "deny, no log": fn(plain, deny),
        "deny, log (queued)": fn(logged, deny),
    }
    if fns["deny, log (queued)"]().status != 403 or fns["allow, no log"]().status != 200:
        raise SystemExit("unexpected decisions")
    out: dict[str, list[float]] = {name: [] for name in fns}
    with gc_off():
        for i in range(rounds):
            for name, f in fns.items():
                out[name].append(batch_us(f, inner))
            if i % 20 == 0:
                log._queue.clear()  # the writer's part is measured below
    log._queue.clear()
    allow_cost = [
        a - b for a, b in zip(out["allow, log (not logged)"], out["allow, no log"], strict=True)
    ]
    deny_cost = [a - b for a, b in zip(out["deny, log (queued)"], out["deny, no log"], strict=True)]
    med = {name: statistics.median(v) for name, v in out.items()}
    return [
        "| `Authorizer.decide`, in-memory facts, a verified principal | median |",
        "|---|---|",
        *(f"| {name} | {value:.2f} µs |" for name, value in med.items()),
        f"| **the log's cost at the call site, an allow not logged** (same round) "
        f"| **{statistics.median(allow_cost):.2f} µs** |",
        f"| **the log's cost at the call site, a deny queued** (same round) "
        f"| **{statistics.median(deny_cost):.2f} µs** |",
        "",
    ]


def writer(n: int) -> list[str]:
    core = _core_for(make_test_settings())
    authz = Authorizer(core=core, facts=InMemoryFacts())
    deny = RequestFacts(method="GET", path="/api/assistants/a2", peer="127.0.0.1")
    lines = ["| the writer, per event | µs |", "|---|---|"]
    tmp = Path(tempfile.mkdtemp())
    for label, sink in (
        ("build only (a sink that discards)", Discard()),
        ("build + NDJSON file", NdjsonSink(tmp / "d.ndjson")),
    ):
        log = quiet_log([sink], queue_size=10_000_000)
        authz.decision_log = log
        for _ in range(n):
            authz.decide(deny)
        t0 = time.perf_counter()
        log.drain()
        per = (time.perf_counter() - t0) / n * 1e6
        lines.append(f"| {label} | {per:.1f} µs ({1e6 / per:,.0f} events/s) |")
        log.close()
    return [*lines, ""]


def events(n: int) -> list[DecisionEvent]:
    return [
        DecisionEvent(
            f"{i:032x}",
            "2026-12-03T10:00:00.000Z",
            f"req-{i}",
            None,
            f"u{i % 1000}",
            "session",
            None,
            "GET /api/assistants/{assistantId}",
            "assistant:read",
            "assistant",
            f"a{i % 5000}",
            f"w{i % 100}",
            403,
            "not_visible",
            "2e2dc20c39ed",
            None,
            12.5,
        )
        for i in range(n)
    ]


def persisted(n: int) -> list[str]:
    server = PostgresServer()
    server.start()
    lines = ["| persisted | events | time | events/s |", "|---|---|---|---|"]
    try:
        rows = events(n)
        for label, url in (
            ("PostgreSQL, `COPY` batches of 5,000", server.create_database()),
            ("SQLite, `executemany` batches of 5,000", f"sqlite:///{tempfile.mkdtemp()}/d.db"),
        ):
            engine = create_engine(url)
            migrate.upgrade(engine)
            sink = SqlDecisionSink(engine)
            t0 = time.perf_counter()
            for start in range(0, n, 5000):
                sink.write(rows[start : start + 5000])
            took = time.perf_counter() - t0
            lines.append(f"| {label} | {n:,} | {took:.2f} s | {n / took:,.0f} |")
            engine.dispose()
        # End to end: decisions queued by Authorizer.decide, then built and COPYed.
        engine = create_engine(server.create_database())
        migrate.upgrade(engine)
        log = quiet_log([SqlDecisionSink(engine)], queue_size=10_000_000)
        authz = Authorizer(core=_core_for(make_test_settings()), facts=InMemoryFacts())
        authz.decision_log = log
        deny = RequestFacts(
            method="GET",
            path="/api/assistants/a2",
            headers=(("x-request-id", "req-1"), ("user-agent", "bench")),
            peer="127.0.0.1",
        )
        for _ in range(n):
            authz.decide(deny)
        t0 = time.perf_counter()
        log.drain()
        took = time.perf_counter() - t0
        lines.append(
            f"| **decided, then built and `COPY`ed to PostgreSQL by the writer** | {n:,} "
            f"| {took:.2f} s | **{n / took:,.0f}** |"
        )
        log.close()
        engine.dispose()
        engine = create_engine(server.create_database())
        migrate.upgrade(engine)
        few = rows[: n // 20]
        t0 = time.perf_counter()
        for row in few:
            with engine.begin() as conn:
                conn.execute(insert(decision_log), row.as_dict())
        took = time.perf_counter() - t0
        lines.append(
            f"| PostgreSQL, one `INSERT` per event (naive) | {len(few):,} | {took:.2f} s "
            f"| {len(few) / took:,.0f} |"
        )
        engine.dispose()
    finally:
        server.remove()
    return [*lines, ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    lines = [
        f"bench_decision_log.py on {platform.python_implementation()} "
        f"{platform.python_version()}, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}",
        "",
    ]
    lines += call_site(300 if args.quick else 3000, 100)
    lines += writer(20_000 if args.quick else 100_000)
    lines += persisted(40_000 if args.quick else 200_000)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
