"""Facts in PostgreSQL: warm, uncached, cold and batched decisions, and list filtering
over a million assistants, in one run (propagation and revocation across processes:
bench_fleet.py).

    .venv/bin/python benchmarks/bench_sql.py [--quick]

Starts a throwaway PostgreSQL cluster (tests/postgres_server.py: initdb and pg_ctl on
loopback, fsync off), loads compare.py's fact set, and measures, against the alternative in
the same run:

- warm: ``decide_access`` with ``SqlFacts`` (every fact cached) beside ``InMemoryFacts``;
- uncached: the same ``SqlFacts`` with its cache never confirmed (every fact read);
- cold: a single decision after the cache is cleared (latency of each call: p50, p99),
  sync and on both async drivers, beside one bare libpq round trip (the floor);
- a batch: 50 assistants through ``decide_access_many`` (one round trip) against 50 cold
  ``decide_access`` calls;
- list filtering: 1,000,000 assistants in 10,000 workspaces, 100,000 users; the first page
  of 50 and the exact count through ``authorized_filter``, against fetching every row and
  deciding each one.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import platform
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))

import _timing  # noqa: E402
import compare  # noqa: E402
from sqlalchemy import func, select, text  # noqa: E402

import illumichat_authz as ia  # noqa: E402
from illumichat_authz.config import DatabaseSettings  # noqa: E402
from illumichat_authz.facts import InMemoryFacts, Membership  # noqa: E402
from illumichat_authz.facts_file import fact_records, read_facts_json  # noqa: E402
from illumichat_authz.stores.sql import migrate  # noqa: E402
from illumichat_authz.stores.sql.database import Database  # noqa: E402
from illumichat_authz.stores.sql.filters import authorized_filter  # noqa: E402
from illumichat_authz.stores.sql.schema import resources  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402


def row(label: str, samples: list[float], unit: str = "µs") -> str:
    p50, p99 = statistics.median(samples), _timing.pct(samples, 0.99)
    return f"| {label} | {p50:,.2f} {unit} | {p99:,.2f} {unit} |"


def access_fn(authorizer: ia.Authorizer, questions: list[dict[str, str]]) -> Callable[[], Any]:
    qs = [
        (ia.Principal(user_id=q["user"], kind=ia.CredentialKind.SESSION), q["assistant"])
        for q in questions
    ]
    state = {"i": 0}
    decide = authorizer.decide_access

    def one() -> Any:
        i = state["i"] = (state["i"] + 1) & 255
        principal, assistant = qs[i]
        return decide(
            principal=principal,
            action="assistant:read",
            resource_kind="assistant",
            resource_id=assistant,
        )

    return one


def interleaved(
    fns: dict[str, Callable[[], Any]], rounds: int, inner: int
) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {k: [] for k in fns}
    for fn in fns.values():
        for _ in range(300):
            fn()
    with _timing.gc_off():
        for _ in range(rounds):
            for key, fn in fns.items():
                out[key].append(_timing.batch_us(fn, inner))
    return out


def round_trip_floor(url: str, rounds: int) -> dict[str, list[float]]:
    """One prepared ``SELECT 1`` through libpq itself (psycopg's ``pgconn``): what a read
    costs on this machine before any Python, the floor a cold decision is held against;
    and through psycopg's cursor, the driver the reads go through."""
    import psycopg

    conn = psycopg.connect(url.replace("+psycopg", ""), autocommit=True)
    pg = conn.pgconn
    pg.prepare(b"floor", b"SELECT 1", None)
    cursor = conn.cursor()
    samples: dict[str, list[float]] = {"libpq": [], "psycopg": []}
    for i in range(rounds + 100):
        t0 = time.perf_counter_ns()
        pg.exec_prepared(b"floor", None)
        t1 = time.perf_counter_ns()
        cursor.execute("SELECT 1", prepare=True)
        cursor.fetchall()
        t2 = time.perf_counter_ns()
        if i >= 100:
            samples["libpq"].append((t1 - t0) / 1000)
            samples["psycopg"].append((t2 - t1) / 1000)
    conn.close()
    return samples


def batches(
    authorizer: ia.Authorizer, questions: list[dict[str, str]], rounds: int
) -> tuple[list[float], list[float]]:
    """A page of 50 assistants decided cold: one batch, against 50 single decisions."""
    facts = authorizer.database.facts if authorizer.database else authorizer.facts
    ids = sorted({q["assistant"] for q in questions})[:50]
    users = sorted({q["user"] for q in questions})
    batch: list[float] = []
    singles: list[float] = []
    for i in range(rounds):
        principal = ia.Principal(user_id=users[i % len(users)], kind=ia.CredentialKind.SESSION)
        facts.reset(facts.applied)
        t0 = time.perf_counter_ns()
        many = authorizer.decide_access_many(
            principal=principal,
            action="assistant:read",
            resource_kind="assistant",
            resource_ids=ids,
        )
        batch.append((time.perf_counter_ns() - t0) / 1000)
        facts.reset(facts.applied)
        t0 = time.perf_counter_ns()
        one = [
            authorizer.decide_access(
                principal=principal,
                action="assistant:read",
                resource_kind="assistant",
                resource_id=a,
            )
            for a in ids
        ]
        singles.append((time.perf_counter_ns() - t0) / 1000)
        if [d.status for d in many] != [d.status for d in one]:
            raise SystemExit("a batch decided differently from single decisions")
    return batch, singles


def async_cold(
    url: str, core: Any, questions: list[dict[str, str]], rounds: int
) -> dict[str, list[float]]:
    """``adecide_access`` with every fact missing, awaited on each async driver."""
    out: dict[str, list[float]] = {}
    for name, driver_url in (
        ("psycopg async", url),
        ("asyncpg", url.replace("+psycopg", "+asyncpg")),
    ):
        db = Database(DatabaseSettings(url=driver_url, poll_interval_s=1.0))
        db.feed.check()
        authorizer = ia.Authorizer(core=core, facts=db.facts)
        facts = db.facts
        samples: list[float] = []

        async def run(
            authorizer: ia.Authorizer = authorizer,
            facts: Any = facts,
            samples: list[float] = samples,
        ) -> None:
            for i in range(rounds + 100):
                q = questions[i % len(questions)]
                principal = ia.Principal(user_id=q["user"], kind=ia.CredentialKind.SESSION)
                facts.reset(facts.applied)
                t0 = time.perf_counter_ns()
                await authorizer.adecide_access(
                    principal=principal,
                    action="assistant:read",
                    resource_kind="assistant",
                    resource_id=q["assistant"],
                )
                if i >= 100:  # the first ones open the pool's connections
                    samples.append((time.perf_counter_ns() - t0) / 1000)
            await authorizer.aclose()

        asyncio.run(run())
        db.close()
        out[name] = samples
    return out


def decisions(args: argparse.Namespace, server: PostgresServer, lines: list[str]) -> None:
    tmp = Path(tempfile.mkdtemp())
    compare.write_fixtures(tmp, 1000)
    settings = ia.load_settings(tmp / "config.toml", environment=False)
    core = ia.build_core(settings)
    records = fact_records(read_facts_json(tmp / "facts.json"))
    questions = json.loads((tmp / "questions.json").read_text())
    url = server.create_database()
    db = Database(DatabaseSettings(url=url, poll_interval_s=1.0))
    migrate.upgrade(db.engine)
    db.writer.apply(upsert=records)
    with db.engine.connect() as conn:  # the planner's statistics (autovacuum's job)
        conn.execute(text("ANALYZE"))
        conn.commit()
    db.feed.start()
    while db.feed.status().applied < 1:
        time.sleep(0.01)
    memory = InMemoryFacts()
    memory.add(*records)
    warm = ia.Authorizer(core=core, facts=db.facts)
    in_memory = ia.Authorizer(core=core, facts=memory)
    uncached_db = Database(DatabaseSettings(url=url))  # its feed never runs: nothing served
    uncached = ia.Authorizer(core=core, facts=uncached_db.facts)
    fw, fm, fu = (
        access_fn(warm, questions),
        access_fn(in_memory, questions),
        access_fn(uncached, questions),
    )
    for _ in range(512):
        if fw().status != fm().status:
            raise SystemExit("SqlFacts and InMemoryFacts decide differently")
    rounds = 300 if args.quick else 2000
    got = interleaved({"memory": fm, "warm": fw}, rounds, 50)
    slow = interleaved({"uncached": fu}, max(20, rounds // 20), 20)
    # Cold: the cache cleared before each decision (the reads of one decision, nothing more).
    cold: list[float] = []
    facts = db.facts
    for _ in range(300 if args.quick else 3000):
        facts.reset(facts.applied)
        t0 = time.perf_counter_ns()
        fw()
        cold.append((time.perf_counter_ns() - t0) / 1000)
    batch, singles = batches(warm, questions, 100 if args.quick else 1000)
    acold = async_cold(url, core, questions, 300 if args.quick else 3000)
    floor = round_trip_floor(url, 300 if args.quick else 3000)
    diff = [w - m for w, m in zip(got["warm"], got["memory"], strict=True)]
    ratio = statistics.median(slow["uncached"]) / statistics.median(got["warm"])
    lines += [
        "| decision | median | p99 |",
        "|---|---|---|",
        row("`decide_access`, `InMemoryFacts`", got["memory"]),
        row("`decide_access`, PostgreSQL facts, warm (all cached)", got["warm"]),
        row("warm minus in-memory (same round)", diff),
        row("`decide_access`, PostgreSQL facts, no cache (each fact read)", slow["uncached"]),
        row("one round trip: a prepared `SELECT 1` through libpq (the floor)", floor["libpq"]),
        row("the same through a psycopg cursor", floor["psycopg"]),
        row("`decide_access`, cold (cache cleared before each call)", cold),
        *(row(f"`adecide_access`, cold, {name}", samples) for name, samples in acold.items()),
        row("`decide_access_many`, 50 assistants, cold (one round trip)", batch),
        row("50 cold `decide_access` calls (50 round trips)", singles),
        "",
        f"Uncached / warm: {ratio:,.0f}x. A batch of 50 / 50 single cold decisions: "
        f"{statistics.median(singles) / statistics.median(batch):,.1f}x faster. Cold / "
        f"floor: {statistics.median(cold) / statistics.median(floor['libpq']):,.2f} round trips; "
        f"cold minus a psycopg round trip: "
        f"{statistics.median(cold) - statistics.median(floor['psycopg']):,.0f} µs.",
        "",
    ]
    warm.close()
    uncached_db.close()
    db.close()


def listing(args: argparse.Namespace, server: PostgresServer, lines: list[str]) -> None:
    import psycopg

    n_assistants = 100_000 if args.quick else 1_000_000
    n_ws, n_users = n_assistants // 100, n_assistants // 10
    url = server.create_database()
    db = Database(DatabaseSettings(url=url))
    migrate.upgrade(db.engine)
    rng = random.Random(7)
    vis = ["public", "workspace", "private"]
    dsn = url.replace("postgresql+psycopg://", "postgresql://")
    t0 = time.perf_counter()
    with psycopg.connect(dsn) as conn, conn.cursor() as cur:
        with cur.copy(
            "COPY authz_memberships (user_id, workspace_id, role, status) FROM STDIN"
        ) as cp:
            for u in range(n_users):
                for ws in {rng.randrange(n_ws) for _ in range(1 + u % 2)}:
                    cp.write_row(
                        (f"u{u}", f"w{ws}", ["owner", "admin", "member", "guest"][u % 4], "active")
                    )
        with cur.copy(
            "COPY authz_resources (kind, id, workspace_id, visibility, creator_id) FROM STDIN"
        ) as cp:
            for a in range(n_assistants):
                cp.write_row(
                    (
                        "assistant",
                        f"a{a:07d}",
                        f"w{rng.randrange(n_ws)}",
                        vis[rng.randrange(3)],
                        f"u{rng.randrange(n_users)}",
                    )
                )
        with cur.copy("COPY authz_grants (user_id, kind, resource_id) FROM STDIN") as cp:
            for g in {
                (rng.randrange(n_users), rng.randrange(n_assistants)) for _ in range(n_users)
            }:
                cp.write_row((f"u{g[0]}", "assistant", f"a{g[1]:07d}"))
        conn.commit()
        cur.execute("ANALYZE")
        conn.commit()
    load_s = time.perf_counter() - t0
    core = ia.build_core(ia.load_settings(environment=False))
    # A principal with two memberships and some grants: look one up.
    with db.engine.connect() as conn:
        user = conn.execute(
            text(
                "SELECT user_id FROM authz_memberships GROUP BY user_id HAVING count(*) = 2 LIMIT 1"
            )
        ).scalar_one()
    principal = ia.Principal(user_id=user, kind=ia.CredentialKind.SESSION)

    def condition() -> Any:
        return authorized_filter(
            core, db.facts.engine, db.tables, principal, "assistant:read", "assistant"
        )

    def page() -> list[str]:
        q = select(resources.c.id).where(condition()).order_by(resources.c.id).limit(50)
        with db.facts.engine.connect() as conn:
            return list(conn.execute(q).scalars())

    def count() -> int:
        q = select(func.count()).select_from(resources).where(condition())
        with db.facts.engine.connect() as conn:
            return int(conn.execute(q).scalar_one())

    for _ in range(5):
        page(), count()
    pages, counts = [], []
    for _ in range(30 if args.quick else 200):
        t = time.perf_counter()
        got_page = page()
        pages.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        total = count()
        counts.append((time.perf_counter() - t) * 1000)
    first = select(resources.c.id).where(condition()).order_by(resources.c.id).limit(50)
    sql = str(first.compile(db.engine, compile_kwargs={"literal_binds": True}))
    with db.engine.connect() as conn:
        plan = "\n".join(r[0] for r in conn.exec_driver_sql("EXPLAIN " + sql))
    # The alternative: fetch every assistant and decide each one in Python.
    t = time.perf_counter()
    with db.facts.engine.connect() as conn:
        rows = conn.execute(
            select(
                resources.c.id,
                resources.c.workspace_id,
                resources.c.visibility,
                resources.c.creator_id,
            ).where(resources.c.kind == "assistant")
        ).all()
        mine = conn.execute(
            text("SELECT workspace_id, role, status FROM authz_memberships WHERE user_id = :u"),
            {"u": user},
        ).all()
        grants = (
            conn.execute(
                text(
                    "SELECT resource_id FROM authz_grants WHERE user_id = :u AND kind = 'assistant'"
                ),
                {"u": user},
            )
            .scalars()
            .all()
        )
    facts = InMemoryFacts(
        memberships=[Membership(user=user, workspace=w, role=r, status=s) for w, r, s in mine],
        resources=[
            ia.facts.Resource(kind="assistant", id=i, workspace=w, visibility=v, creator=c)
            for i, w, v, c in rows
        ],
        grants=[ia.facts.Grant(user=user, assistant=g) for g in grants],
    )
    authorizer = ia.Authorizer(core=core, facts=facts)
    allowed = [
        i
        for i, *_ in rows
        if authorizer.decide_access(
            principal=principal, action="assistant:read", resource_kind="assistant", resource_id=i
        ).allowed
    ]
    naive_s = time.perf_counter() - t
    ok = sorted(allowed)[:50] == got_page and len(allowed) == total
    page_ratio = naive_s * 1000 / statistics.median(pages)
    count_ratio = naive_s * 1000 / statistics.median(counts)
    lines += [
        f"| list filtering, {n_assistants:,} assistants, {n_ws:,} workspaces, "
        f"{n_users:,} users | median | p99 |",
        "|---|---|---|",
        row("first page of 50 (`authorized_filter` + ORDER BY id LIMIT 50)", pages, "ms"),
        row(f"exact count ({total:,} readable)", counts, "ms"),
        f"| fetch every row and decide each (once) | {naive_s * 1000:,.0f} ms | |",
        "",
        f"Per-row / first page: {page_ratio:,.0f}x; per-row / count: {count_ratio:,.0f}x. "
        f"Same rows as per-row decisions: {ok}. Data loaded with COPY in {load_s:.0f} s.",
        "",
        "Plan of the first page:",
        "",
        "```",
        plan,
        "```",
        "",
    ]
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds, 100k assistants")
    args = parser.parse_args()
    server = PostgresServer()
    server.start()
    lines = [
        f"bench_sql.py on {platform.python_implementation()} {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, PostgreSQL on loopback (fsync off)",
        "",
    ]
    try:
        decisions(args, server, lines)
        gc.collect()
        listing(args, server, lines)
    finally:
        server.remove()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
