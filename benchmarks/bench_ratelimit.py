"""Rate limits on a real Redis: one hit's latency, and four instances sharing one limit.

    .venv/bin/python benchmarks/bench_ratelimit.py [--quick]

Starts a loopback ``redis-server`` (tests/redis_server.py). Each round times, one call
each, interleaved so the machine's drift hits every row alike:

- ``RateLimiter.hit`` on Redis (moving and fixed window): the admission and the window
  read written together on one connection, one round trip;
- the naive alternative, ``limits``' own ``hit`` then ``get_window_stats`` on the same
  storage (two round trips), which is what the limiter did before;
- a redis-py ``PING`` (the round-trip floor);

then the same for ``ahit`` on one event loop, a whole ``Authorizer.decide`` of the ticket
route on Redis, and four instance processes (tests/rate_limit_worker.py, two on threads,
two on event loops) sending at once at one limit: the admitted count must be the limit.

``memory://`` (one process, not shared) is timed last, on its own: ``limits``' memory
storage runs a timer thread every 10 ms while it has keys, whose GIL turns show up in the
p99 of every row timed beside it (about 1 ms where Redis alone is about 0.3 ms).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(ROOT / "tests"))

import redis  # noqa: E402
from _timing import gc_off, pct  # noqa: E402

from illumichat_authz import Authorizer, RequestFacts, Settings  # noqa: E402
from illumichat_authz.ratelimit import RateLimitSpec  # noqa: E402
from illumichat_authz.stores.ratelimit import RateLimiter  # noqa: E402
from redis_server import start_redis  # noqa: E402

#: A realistic limit (the moving window's scripts scan up to ``amount`` entries); 1,000
#: keys in turn keep every key far below it, so every hit is admitted.
SPEC = RateLimitSpec.parse("100/minute")


def row(label: str, samples: list[float]) -> str:
    return f"| {label} | {statistics.median(samples):,.0f} µs | {pct(samples, 0.99):,.0f} µs |"


def timed(fns: dict[str, Callable[[int], Any]], rounds: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {name: [] for name in fns}
    with gc_off():
        for i in range(rounds + 200):
            for name, fn in fns.items():
                t0 = time.perf_counter_ns()
                fn(i)
                if i >= 200:  # connections open, scripts loaded
                    out[name].append((time.perf_counter_ns() - t0) / 1000)
    return out


def naive(limiter: RateLimiter) -> Callable[[int], Any]:
    """``limits``' own two calls, on the same storage and key layout."""
    strategy = limiter._limiter
    item = limiter._item(SPEC)

    def hit(i: int) -> Any:
        ident = (*limiter._namespace, f"n{i % 1000}")
        strategy.hit(item, *ident)
        return strategy.get_window_stats(item, *ident)

    return hit


def pipelined(limiter: RateLimiter) -> Callable[[int], Any]:
    """The same two commands through a redis-py pipeline (what the limiter did before)."""
    storage = limiter._storage
    item = limiter._item(SPEC)
    client = storage.get_connection()
    moving = limiter._moving

    def hit(i: int) -> Any:
        key = storage.prefixed_key(item.key_for(*limiter._namespace, f"p{i % 1000}"))
        now, expiry = time.time(), item.get_expiry()
        pipe = client.pipeline(transaction=False)
        if moving:
            sha = storage.lua_acquire_moving_window.sha
            pipe.evalsha(sha, 1, key, now, item.amount, expiry, 1)
            pipe.evalsha(storage.lua_moving_window.sha, 1, key, now - expiry, item.amount)
        else:
            pipe.evalsha(storage.lua_incr_expire.sha, 1, key, expiry, 1)
            pipe.ttl(key)
        return pipe.execute(raise_on_error=False)

    return hit


def sync_rows(url: str, rounds: int) -> list[str]:
    moving = RateLimiter(storage_uri=url, strategy="moving-window")
    fixed = RateLimiter(storage_uri=url, strategy="fixed-window")
    ping = redis.Redis.from_url(url)
    got = timed(
        {
            "moving": lambda i: moving.hit(f"k{i % 1000}", SPEC),
            "moving naive": naive(moving),
            "moving pipeline": pipelined(moving),
            "fixed": lambda i: fixed.hit(f"k{i % 1000}", SPEC),
            "fixed naive": naive(fixed),
            "fixed pipeline": pipelined(fixed),
            "ping": lambda i: ping.ping(),
        },
        rounds,
    )
    for limiter in (moving, fixed):
        limiter.close()
    ping.close()
    ratio_m = statistics.median(got["moving naive"]) / statistics.median(got["moving"])
    ratio_f = statistics.median(got["fixed naive"]) / statistics.median(got["fixed"])
    pipe_m = statistics.median(got["moving pipeline"]) / statistics.median(got["moving"])
    pipe_f = statistics.median(got["fixed pipeline"]) / statistics.median(got["fixed"])
    return [
        "| sync, one call | median | p99 |",
        "|---|---|---|",
        row("`RateLimiter.hit`, Redis, moving window (one round trip)", got["moving"]),
        row("the same two commands as a redis-py pipeline, moving", got["moving pipeline"]),
        row("`limits` hit + window stats, moving window (two)", got["moving naive"]),
        row("`RateLimiter.hit`, Redis, fixed window (one round trip)", got["fixed"]),
        row("the same two commands as a redis-py pipeline, fixed", got["fixed pipeline"]),
        row("`limits` hit + window stats, fixed window (two)", got["fixed naive"]),
        row("redis-py `PING` (the floor)", got["ping"]),
        "",
        f"Two round trips / one: moving {ratio_m:.2f}x, fixed {ratio_f:.2f}x. "
        f"Pipeline / one connection: moving {pipe_m:.2f}x, fixed {pipe_f:.2f}x.",
        "",
    ]


def async_rows(url: str, rounds: int) -> list[str]:
    async def run() -> dict[str, list[float]]:
        ours = RateLimiter(storage_uri=url)
        strategy = ours._async_limiter
        item = ours._item(SPEC)
        out: dict[str, list[float]] = {"ours": [], "naive": []}
        try:
            for i in range(rounds + 200):
                t0 = time.perf_counter_ns()
                await ours.ahit(f"a{i % 1000}", SPEC)
                t1 = time.perf_counter_ns()
                ident = (*ours._namespace, f"b{i % 1000}")
                await strategy.hit(item, *ident)
                await strategy.get_window_stats(item, *ident)
                t2 = time.perf_counter_ns()
                if i >= 200:
                    out["ours"].append((t1 - t0) / 1000)
                    out["naive"].append((t2 - t1) / 1000)
        finally:
            await ours.aclose()
        return out

    with gc_off():
        got = asyncio.run(run())
    ratio = statistics.median(got["naive"]) / statistics.median(got["ours"])
    return [
        "| async, one call | median | p99 |",
        "|---|---|---|",
        row("`RateLimiter.ahit`, Redis, moving window (one round trip)", got["ours"]),
        row("`limits.aio` hit + window stats (two)", got["naive"]),
        "",
        f"Two round trips / one: {ratio:.2f}x.",
        "",
    ]


def decision_rows(url: str, rounds: int) -> list[str]:
    requests = [
        RequestFacts(
            method="POST", path="/api/widget/tickets/create", peer=f"198.51.{i // 250}.{i % 250}"
        )
        for i in range(1000)
    ]
    policies = Path(tempfile.mkdtemp()) / "policies"
    shutil.copytree(ROOT / "policies", policies)
    routes = policies / "routes.toml"
    routes.write_text(routes.read_text().replace('"5/minute"', '"100/minute"'))

    def build(storage: str) -> Authorizer:
        return Authorizer.from_settings(
            Settings.model_validate(
                {"policies": {"dir": str(policies)}, "rate_limits": {"storage": storage}}
            )
        )

    on_redis = build(url)
    got = timed({"redis": lambda i: on_redis.decide(requests[i % 1000])}, rounds)
    if on_redis.decide(requests[0]).status != 200:
        raise SystemExit("the ticket route was not admitted")
    on_redis.rate_limiter.close()
    in_memory = build("memory://")  # last: its storage's timer thread stays
    memory = RateLimiter(storage_uri="memory://")
    got |= timed(
        {
            "memory decide": lambda i: in_memory.decide(requests[i % 1000]),
            "memory hit": lambda i: memory.hit(f"k{i % 1000}", SPEC),
        },
        rounds,
    )
    return [
        "| `Authorizer.decide`, the ticket route | median | p99 |",
        "|---|---|---|",
        row("rate limit on Redis", got["redis"]),
        row("rate limit in memory (timed after, on its own)", got["memory decide"]),
        "",
        "| in memory, timed last | median | p99 |",
        "|---|---|---|",
        row("`RateLimiter.hit`, `memory://` (not shared)", got["memory hit"]),
        "",
    ]


def fleet_rows(url: str, per_instance: int, limit: int) -> list[str]:
    tmp = Path(tempfile.mkdtemp())
    policies = tmp / "policies"
    shutil.copytree(ROOT / "policies", policies)
    routes = policies / "routes.toml"
    routes.write_text(routes.read_text().replace('"5/minute"', f'"{limit}/minute"'))
    lines = [
        f"| four instances, {per_instance:,} requests each at once, limit {limit:,} "
        "| admitted | refused 429 | 503 | wall time |",
        "|---|---|---|---|---|",
    ]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    for strategy in ("moving-window", "fixed-window"):
        redis.Redis.from_url(url).flushall()
        config = tmp / f"{strategy}.toml"
        config.write_text(
            f'[policies]\ndir = "{policies}"\n'
            f'[rate_limits]\nstorage = "{url}"\nstrategy = "{strategy}"\n'
        )
        start = time.monotonic() + 3.0
        workers = [
            subprocess.Popen(
                [
                    sys.executable,
                    str(ROOT / "tests" / "rate_limit_worker.py"),
                    str(config),
                    mode,
                    str(per_instance),
                    repr(start),
                ],
                stdout=subprocess.PIPE,
                env=env,
            )
            for mode in ("threads", "threads", "async", "async")
        ]
        totals: dict[str, int] = {}
        for worker in workers:
            out, _ = worker.communicate(timeout=300)
            for status, count in json.loads(out).items():
                totals[status] = totals.get(status, 0) + count
        wall = time.monotonic() - start
        admitted = totals.get("200", 0)
        if admitted != limit or sum(totals.values()) != 4 * per_instance:
            raise SystemExit(f"{strategy}: admitted {admitted} of a limit of {limit}: {totals}")
        lines.append(
            f"| {strategy} | {admitted:,} (exact) | {totals.get('429', 0):,} "
            f"| {totals.get('503', 0):,} | {wall:.2f} s |"
        )
    return [*lines, ""]


def many_keys_rows(keys: int, seconds: float) -> list[str]:
    """``memory://`` holding many clients' keys: a hit on a new key, and an unrelated
    decision, while the keys are there; ours (expiry a few keys per hit) against ``limits``'
    own ``MemoryStorage`` (a timer thread that walks every key), ours first: limits' thread
    outlives its storage."""
    import limits.storage
    import limits.strategies

    from illumichat_authz.stores._memory_limits import InlineExpiryMemoryStorage

    item = limits.RateLimitItemPerMinute(5)
    other = RequestFacts(method="GET", path="/api/widget/a1/config", peer="192.0.2.1")
    authorizer = Authorizer.from_settings(
        Settings.model_validate({"policies": {"dir": str(ROOT / "policies")}})
    )
    lines = [
        f"| `memory://` holding {keys:,} client keys, moving window | hit p50 | hit p99 "
        "| unrelated `decide` p99 | hit + decide a second |",
        "|---|---|---|---|---|",
    ]
    rates = {}
    for name, storage in (
        ("ours (`InlineExpiryMemoryStorage`)", InlineExpiryMemoryStorage()),
        ("`limits`' `MemoryStorage` (the naive alternative)", limits.storage.MemoryStorage()),
    ):
        strategy = limits.strategies.MovingWindowRateLimiter(storage)
        for i in range(keys):
            strategy.hit(item, f"10.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
        hits: list[float] = []
        decides: list[float] = []
        end, i = time.monotonic() + seconds, keys
        while time.monotonic() < end:
            t0 = time.perf_counter_ns()
            strategy.hit(item, f"11.{i >> 16 & 255}.{i >> 8 & 255}.{i & 255}")
            t1 = time.perf_counter_ns()
            authorizer.decide(other)
            t2 = time.perf_counter_ns()
            hits.append((t1 - t0) / 1000)
            decides.append((t2 - t1) / 1000)
            i += 1
        rates[name] = len(hits) / seconds
        lines.append(
            f"| {name} | {statistics.median(hits):,.1f} µs | {pct(hits, 0.99):,.0f} µs "
            f"| {pct(decides, 0.99):,.0f} µs | {rates[name]:,.0f} |"
        )
    first, second = rates.values()
    return [*lines, "", f"Hits and decisions a second, ours / limits': {first / second:.2f}x.", ""]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer rounds")
    args = parser.parse_args()
    rounds = 1000 if args.quick else 10000
    server = start_redis()
    lines = [
        f"bench_ratelimit.py on {platform.python_implementation()} {platform.python_version()}, "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, redis-server "
        f"{redis.Redis.from_url(server.url).info()['redis_version']} on loopback",
        "",
    ]
    try:
        lines += sync_rows(server.url, rounds)
        lines += async_rows(server.url, rounds)
        lines += fleet_rows(server.url, 250, 500)
        lines += decision_rows(server.url, rounds // 2)  # last: it starts memory storages
        lines += many_keys_rows(20_000 if args.quick else 100_000, 2.0 if args.quick else 5.0)
    finally:
        server.stop()
    print("\n".join(lines))


if __name__ == "__main__":
    main()
