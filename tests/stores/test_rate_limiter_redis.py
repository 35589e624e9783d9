"""RateLimiter against real Redis servers on loopback: a server alone, behind a Sentinel,
and a three-node Cluster; sync and async; one round trip per hit; outages and restarts.

Also the fleet: four instances in processes of their own (two deciding on threads, two on
event loops) hitting one limit at once admit exactly the limit, never more.
"""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio.connection
import redis.connection

from illumichat_authz import Authorizer, RequestFacts, Settings
from illumichat_authz.errors import DependencyUnavailableError
from illumichat_authz.ratelimit import RateLimitSpec
from illumichat_authz.reasons import Reason
from illumichat_authz.stores.ratelimit import RateLimiter
from redis_server import RedisServer, free_port, start_cluster, start_redis, start_sentinel

pytestmark = pytest.mark.interop

STRATEGIES = ["moving-window", "fixed-window"]
ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture(scope="module")
def server() -> Iterator[RedisServer]:
    found = start_redis()
    yield found
    found.stop()


@pytest.fixture(scope="module")
def sentinel(server: RedisServer) -> Iterator[RedisServer]:
    found = start_sentinel(server)
    yield found
    found.stop()


@pytest.fixture(scope="module")
def cluster() -> Iterator[list[RedisServer]]:
    nodes = start_cluster()
    yield nodes
    for node in nodes:
        node.stop()


@pytest.fixture(params=["redis", "sentinel", "cluster"])
def storage_uri(request: pytest.FixtureRequest, server: RedisServer) -> str:
    """Each way a fleet reaches Redis, emptied first."""
    if request.param == "redis":
        server.flush()
        return server.url
    if request.param == "sentinel":
        found: RedisServer = request.getfixturevalue("sentinel")
        server.flush()
        return f"redis+sentinel://127.0.0.1:{found.port}/authz"
    nodes: list[RedisServer] = request.getfixturevalue("cluster")
    for node in nodes:
        node.flush()
    return "redis+cluster://" + ",".join(f"127.0.0.1:{n.port}" for n in nodes)


def _ahits(uri: str, strategy: str, key: str, spec: RateLimitSpec, n: int) -> list[Any]:
    async def run() -> list[Any]:
        limiter = RateLimiter(storage_uri=uri, strategy=strategy)  # type: ignore[arg-type]
        try:
            return [await limiter.ahit(key, spec) for _ in range(n)]
        finally:
            await limiter.aclose()

    return asyncio.run(run())


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_instances_share_one_count_sync_and_async(storage_uri: str, strategy: str) -> None:
    a = RateLimiter(storage_uri=storage_uri, strategy=strategy)  # type: ignore[arg-type]
    b = RateLimiter(storage_uri=storage_uri, strategy=strategy)  # type: ignore[arg-type]
    spec = RateLimitSpec.parse("4/minute")
    got = [a.hit("198.51.100.7", spec), b.hit("198.51.100.7", spec)]
    got += _ahits(storage_uri, strategy, "198.51.100.7", spec, 3)
    assert [o.allowed for o in got] == [True, True, True, True, False]
    assert [o.remaining for o in got] == [3, 2, 1, 0, 0]
    assert all(0 < o.reset_after_s <= 60 for o in got)
    assert a.hit("203.0.113.9", spec).remaining == 3  # another client counts apart
    a.close()
    b.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_outcome_is_what_limits_itself_reports(server: RedisServer, strategy: str) -> None:
    """The pipelined read gives the remaining count and reset time that ``limits``' own
    ``get_window_stats`` gives for the same key right after."""
    server.flush()
    limiter = RateLimiter(storage_uri=server.url, strategy=strategy)  # type: ignore[arg-type]
    spec = RateLimitSpec.parse("5/minute")
    item = limiter._item(spec)
    for _ in range(7):
        outcome = limiter.hit("k", spec)
        own = limiter._limiter.get_window_stats(item, *limiter._namespace, "k")
        assert outcome.remaining == max(0, own.remaining)
        assert abs((time.time() + outcome.reset_after_s) - own.reset_time) < 1.5
    limiter.close()


def _count_sends(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times a request went out to Redis (a pipeline is one), sync and async."""
    sent = [0]
    for cls in (redis.connection.AbstractConnection, redis.asyncio.connection.AbstractConnection):
        original = cls.send_packed_command

        def counted(self: Any, *args: Any, _original: Any = original, **kw: Any) -> Any:
            sent[0] += 1
            return _original(self, *args, **kw)

        monkeypatch.setattr(cls, "send_packed_command", counted)
    return sent


@pytest.mark.parametrize("strategy", STRATEGIES)
@pytest.mark.parametrize("via", ["redis", "sentinel"])
def test_a_hit_is_one_round_trip(
    monkeypatch: pytest.MonkeyPatch, server: RedisServer, via: str, strategy: str
) -> None:
    uri = server.url
    if via == "sentinel":
        uri = f"redis+sentinel://127.0.0.1:{start_sentinel_once(server).port}/authz"
    server.flush()
    limiter = RateLimiter(storage_uri=uri, strategy=strategy)  # type: ignore[arg-type]
    spec = RateLimitSpec.parse("100/minute")
    limiter.hit("warm", spec)  # connects, and loads limits' scripts (NOSCRIPT once)
    sent = _count_sends(monkeypatch)
    for _ in range(10):
        limiter.hit("k", spec)
    assert sent[0] == 10

    async def run() -> int:
        alimiter = RateLimiter(storage_uri=uri, strategy=strategy)  # type: ignore[arg-type]
        try:
            await alimiter.ahit("warm", spec)
            before = sent[0]
            for _ in range(10):
                await alimiter.ahit("k", spec)
            return sent[0] - before
        finally:
            await alimiter.aclose()

    # Sentinel answers "where is the master" per new connection; the pool keeps its one.
    assert asyncio.run(run()) == 10
    assert limiter.hit("k", spec).remaining == 100 - 21
    limiter.close()


_SENTINELS: dict[int, RedisServer] = {}


def start_sentinel_once(server: RedisServer) -> RedisServer:
    found = _SENTINELS.get(server.port)
    if found is None or found.process is None or found.process.poll() is not None:
        found = _SENTINELS[server.port] = start_sentinel(server)
    return found


@pytest.fixture(scope="module", autouse=True)
def _stop_sentinels() -> Iterator[None]:
    yield
    for found in _SENTINELS.values():
        found.stop()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_scripts_flushed_mid_run_count_each_hit_once(server: RedisServer, strategy: str) -> None:
    """A server that lost limits' scripts (a restart, SCRIPT FLUSH) answers NOSCRIPT: the
    hit is made again through limits' own calls, never counted twice."""
    server.flush()
    limiter = RateLimiter(storage_uri=server.url, strategy=strategy)  # type: ignore[arg-type]
    spec = RateLimitSpec.parse("3/minute")
    admin = redis.Redis.from_url(server.url)
    remaining = []
    for i in range(4):
        admin.script_flush()
        remaining.append(limiter.hit("k", spec).remaining if i < 3 else limiter.hit("k", spec))
    assert remaining[:3] == [2, 1, 0]
    assert not remaining[3].allowed

    async def run() -> list[int]:
        alimiter = RateLimiter(storage_uri=server.url, strategy=strategy)  # type: ignore[arg-type]
        try:
            out = []
            for _ in range(2):
                admin.script_flush()
                out.append((await alimiter.ahit("j", spec)).remaining)
            return out
        finally:
            await alimiter.aclose()

    assert asyncio.run(run()) == [2, 1]
    admin.close()
    limiter.close()


def test_instances_on_different_strategies_count_apart(server: RedisServer) -> None:
    """A fleet mid-rollout of a strategy change: each strategy keeps its own key instead
    of failing on the other's (Redis' WRONGTYPE, which was a 503 on every hit)."""
    server.flush()
    moving = RateLimiter(storage_uri=server.url, strategy="moving-window")
    fixed = RateLimiter(storage_uri=server.url, strategy="fixed-window")
    spec = RateLimitSpec.parse("2/minute")
    assert moving.hit("k", spec).remaining == 1
    assert fixed.hit("k", spec).remaining == 1
    assert moving.hit("k", spec).remaining == 0
    moving.close()
    fixed.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_restarted_redis_serves_again(strategy: str) -> None:
    found = start_redis()
    limiter = RateLimiter(storage_uri=found.url, strategy=strategy, timeout_s=0.3)  # type: ignore[arg-type]
    spec = RateLimitSpec.parse("3/minute")
    try:
        assert limiter.hit("k", spec).allowed
        found.kill()
        with pytest.raises(DependencyUnavailableError) as info:
            limiter.hit("k", spec)
        assert info.value.status == 503
        assert info.value.reason is Reason.AUTH_UNAVAILABLE
        found.start()  # same port, empty, and without limits' scripts
        assert limiter.hit("k", spec).remaining == 2
    finally:
        limiter.close()
        found.stop()


def test_stopped_redis_is_dependency_unavailable_sync_and_async() -> None:
    found = start_redis()
    spec = RateLimitSpec.parse("3/minute")
    try:
        rl = RateLimiter(storage_uri=found.url)
        assert rl.hit("k", spec).allowed
    finally:
        found.stop()
    with pytest.raises(DependencyUnavailableError) as info:
        rl.hit("k", spec)
    assert "127.0.0.1" not in info.value.message

    with pytest.raises(DependencyUnavailableError):
        _ahits(found.url, "moving-window", "k", spec, 1)


@pytest.mark.parametrize(
    "uri",
    [
        "redis://127.0.0.1:{port}/0",
        "redis+sentinel://127.0.0.1:{port}/authz",
        "redis+cluster://127.0.0.1:{port}",
    ],
)
def test_unreachable_storage_is_503_not_a_failed_start(uri: str) -> None:
    """Nothing listening: the limiter is built all the same (a cluster is read at the
    first hit), and each hit, sync or async, is a 503 within the timeout."""
    uri = uri.format(port=free_port())
    limiter = RateLimiter(storage_uri=uri, timeout_s=0.3)
    spec = RateLimitSpec.parse("1/second")
    t0 = time.monotonic()
    with pytest.raises(DependencyUnavailableError):
        limiter.hit("k", spec)
    with pytest.raises(DependencyUnavailableError):
        _ahits(uri, "moving-window", "k", spec, 1)
    assert time.monotonic() - t0 < 10


def test_sentinel_whose_master_is_down_is_503() -> None:
    master = start_redis()
    watcher = start_sentinel(master)
    limiter = RateLimiter(
        storage_uri=f"redis+sentinel://127.0.0.1:{watcher.port}/authz", timeout_s=0.3
    )
    spec = RateLimitSpec.parse("5/minute")
    try:
        assert limiter.hit("k", spec).allowed
        master.kill()
        with pytest.raises(DependencyUnavailableError):
            limiter.hit("k", spec)
    finally:
        limiter.close()
        watcher.stop()
        master.stop()


def test_hung_redis_times_out_as_dependency_unavailable() -> None:
    """A server that accepts but never answers must not hang the request."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        rl = RateLimiter(storage_uri=f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
        t0 = time.monotonic()
        with pytest.raises(DependencyUnavailableError):
            rl.hit("k", RateLimitSpec.parse("1/second"))
        assert time.monotonic() - t0 < 5
        rl.close()


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_a_trip_cut_off_midway_leaves_no_reply_behind(server: RedisServer, strategy: str) -> None:
    """A hit whose replies are late (a timeout, sync) or that is cancelled (async) has its
    two commands on the wire: its connection must not go back to the pool with those
    replies unread, or the next hit would read them as its own."""
    server.flush()
    admin = redis.Redis.from_url(server.url)
    spec = RateLimitSpec.parse("1000/minute")
    limiter = RateLimiter(storage_uri=server.url, strategy=strategy, timeout_s=0.2)  # type: ignore[arg-type]
    limiter.hit("warm", spec)  # scripts loaded, one pooled connection
    admin.execute_command("CLIENT", "PAUSE", "600", "ALL")
    with pytest.raises(DependencyUnavailableError):
        limiter.hit("k", spec)  # sent, then the read times out
    time.sleep(0.7)
    after = [limiter.hit("k", spec).remaining for _ in range(5)]
    # The cut-off hit may or may not have counted; each later hit counts exactly one.
    assert after[0] in (998, 999)
    assert after == list(range(after[0], after[0] - 5, -1))

    async def run() -> list[int]:
        alimiter = RateLimiter(storage_uri=server.url, strategy=strategy)  # type: ignore[arg-type]
        try:
            await alimiter.ahit("warm", spec)
            admin.execute_command("CLIENT", "PAUSE", "400", "ALL")
            with pytest.raises(TimeoutError):
                await asyncio.wait_for(alimiter.ahit("j", spec), 0.1)
            await asyncio.sleep(0.5)
            # Every pooled connection in turn (the pool hands them out first in, first out).
            return [(await alimiter.ahit("j", spec)).remaining for _ in range(70)]
        finally:
            await alimiter.aclose()

    got = asyncio.run(run())
    assert got[0] in (998, 999)
    assert got == list(range(got[0], got[0] - 70, -1))
    admin.close()
    limiter.close()


# -- through the Authorizer: refuse (503) or pass, per route ------------------------------

TICKETS = RequestFacts(method="POST", path="/api/widget/tickets/create", peer="198.51.100.9")


def _policies(tmp_path: Path, *, when_unavailable: str | None, limit: str = "5/minute") -> Path:
    policies = tmp_path / "policies"
    shutil.copytree(ROOT / "policies", policies)
    routes = policies / "routes.toml"
    extra = f'\nrate_limit_unavailable = "{when_unavailable}"' if when_unavailable else ""
    text = routes.read_text()
    assert 'rate_limit = "5/minute"' in text
    routes.write_text(text.replace('rate_limit = "5/minute"', f'rate_limit = "{limit}"{extra}'))
    return policies


def _authorizer(policies: Path, storage: str, strategy: str = "moving-window") -> Authorizer:
    settings = Settings.model_validate(
        {
            "policies": {"dir": str(policies)},
            "rate_limits": {"storage": storage, "strategy": strategy, "timeout_s": 0.3},
        }
    )
    return Authorizer.from_settings(settings)


def _decide_both(authorizer: Authorizer) -> list[Any]:
    async def run() -> Any:
        try:
            return await authorizer.adecide(TICKETS)
        finally:
            await authorizer.rate_limiter.aclose()

    return [authorizer.decide(TICKETS), asyncio.run(run())]


@pytest.mark.parametrize("when_unavailable", [None, "refuse"])
def test_a_route_refuses_with_503_while_redis_is_down(
    tmp_path: Path, when_unavailable: str | None
) -> None:
    authorizer = _authorizer(
        _policies(tmp_path, when_unavailable=when_unavailable), f"redis://127.0.0.1:{free_port()}/0"
    )
    for decision in _decide_both(authorizer):
        assert decision.status == 503
        assert decision.reason is Reason.AUTH_UNAVAILABLE
        assert not decision.allowed


def test_a_route_that_passes_goes_on_uncounted_and_says_so(tmp_path: Path) -> None:
    found = start_redis()
    authorizer = _authorizer(
        _policies(tmp_path, when_unavailable="pass", limit="2/minute"), found.url
    )
    try:
        counted = [authorizer.decide(TICKETS).status for _ in range(3)]
        assert counted == [200, 200, 429]  # Redis up: counted like any route
        found.kill()
        for decision in _decide_both(authorizer):
            assert decision.status == 200
            assert decision.reason is Reason.PUBLIC
            assert any("not counted" in line for line in decision.explanation)
        found.start()
        assert authorizer.decide(TICKETS).status == 200  # counted again (a fresh server)
        assert authorizer.decide(TICKETS).status == 200
        assert authorizer.decide(TICKETS).status == 429
    finally:
        authorizer.rate_limiter.close()
        found.stop()


def test_rate_limit_unavailable_is_checked_when_routes_load(tmp_path: Path) -> None:
    from illumichat_authz.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="rate_limit_unavailable"):
        _authorizer(_policies(tmp_path, when_unavailable="sometimes"), "memory://")


# -- four instances, one limit -----------------------------------------------------------


@pytest.mark.parametrize("strategy", STRATEGIES)
def test_four_instances_admit_exactly_the_limit(
    tmp_path: Path, server: RedisServer, strategy: str
) -> None:
    server.flush()
    policies = _policies(tmp_path, when_unavailable=None, limit="40/minute")
    config = tmp_path / "config.toml"
    config.write_text(
        f'[policies]\ndir = "{policies}"\n'
        f'[rate_limits]\nstorage = "{server.url}"\nstrategy = "{strategy}"\n'
    )
    start = time.monotonic() + 3.0  # every process imported and connected by then
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT / "tests")])}
    workers = [
        subprocess.Popen(
            [
                sys.executable,
                str(ROOT / "tests" / "rate_limit_worker.py"),
                str(config),
                mode,
                "30",
                repr(start),
            ],
            stdout=subprocess.PIPE,
            env=env,
        )
        for mode in ("threads", "threads", "async", "async")
    ]
    totals: dict[str, int] = {}
    for worker in workers:
        out, _ = worker.communicate(timeout=60)
        assert worker.returncode == 0
        for status, count in json.loads(out).items():
            totals[status] = totals.get(status, 0) + count
    assert totals == {"200": 40, "429": 80}


def test_a_burst_larger_than_the_pools_is_answered_not_refused(server: RedisServer) -> None:
    """More hits at once than redis-py's default pool of 100 connections: every one is
    counted (the async ones wait for a connection), none is a 503."""
    import concurrent.futures

    server.flush()
    spec = RateLimitSpec.parse("10000/minute")

    async def burst() -> list[Any]:
        limiter = RateLimiter(storage_uri=server.url)
        try:
            return list(
                await asyncio.gather(
                    *(limiter.ahit("k", spec) for _ in range(400)), return_exceptions=True
                )
            )
        finally:
            await limiter.aclose()

    answers = asyncio.run(burst())
    assert all(not isinstance(a, BaseException) and a.allowed for a in answers), answers[:3]
    # ``remaining`` is read after the hit: under a burst, others' hits may be in it too.
    assert all(10000 - 400 <= a.remaining < 10000 for a in answers)

    limiter = RateLimiter(storage_uri=server.url)
    assert limiter.hit("k", spec).remaining == 10000 - 401  # each counted once
    with concurrent.futures.ThreadPoolExecutor(150) as pool:
        sync = list(pool.map(lambda _: limiter.hit("j", spec), range(600)))
    assert all(o.allowed for o in sync)
    assert limiter.hit("j", spec).remaining == 10000 - 601
    limiter.close()
