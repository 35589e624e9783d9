"""RateLimiter on ``limits``: window behaviour (controlled clock), headers, and a real Redis.

The pure values (spec parsing, headers from an outcome) are tested in tests/test_ratelimit.py.
"""

from __future__ import annotations

import asyncio
import gc
import shutil
import socket
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass

import limits.storage.memory
import pytest
import redis

from illumichat_authz.errors import ConfigurationError, DependencyUnavailableError
from illumichat_authz.ratelimit import RateLimitSpec, rate_limit_headers
from illumichat_authz.reasons import Reason
from illumichat_authz.stores.ratelimit import RateLimiter

# -- memory storage with a controlled clock ------------------------------------------


@dataclass
class FakeTime:
    """Stands in for the ``time`` module inside ``limits.storage.memory``."""

    now: float = 1_000_000.0

    def time(self) -> float:
        return self.now


@pytest.fixture
def clock(monkeypatch: pytest.MonkeyPatch) -> FakeTime:
    fake = FakeTime()
    # ``limits`` has no clock hook; its memory storage reads ``time.time()`` through the
    # module global ``time``, which we replace for the duration of the test.
    assert getattr(limits.storage.memory, "time", None) is time
    monkeypatch.setattr(limits.storage.memory, "time", fake)
    return fake


def limiter(clock: FakeTime, strategy: str = "moving-window") -> RateLimiter:
    return RateLimiter(strategy=strategy, clock=clock.time)  # type: ignore[arg-type]


FIVE = RateLimitSpec.parse("5/minute")


def test_moving_window(clock: FakeTime) -> None:
    rl = limiter(clock)
    outcomes = []
    for _ in range(5):
        outcomes.append(rl.hit("198.51.100.7", FIVE))
        clock.now += 1
    assert [o.allowed for o in outcomes] == [True] * 5
    assert [o.remaining for o in outcomes] == [4, 3, 2, 1, 0]
    assert outcomes[0].reset_after_s == pytest.approx(60)
    denied = rl.hit("198.51.100.7", FIVE)  # t = 5
    assert not denied.allowed
    assert denied.remaining == 0
    assert denied.reset_after_s == pytest.approx(55)  # the t=0 hit leaves the window at 60
    clock.now += 54.5  # t = 59.5: still inside the window
    assert not rl.hit("198.51.100.7", FIVE).allowed
    clock.now += 1  # t = 60.5: the first hit has left the window, one slot is free
    assert rl.hit("198.51.100.7", FIVE).allowed
    assert not rl.hit("198.51.100.7", FIVE).allowed
    # Another key has its own budget.
    assert rl.hit("203.0.113.9", FIVE).remaining == 4


def test_fixed_window(clock: FakeTime) -> None:
    rl = limiter(clock, "fixed-window")
    for i in range(5):
        assert rl.hit("k", FIVE).remaining == 4 - i
        clock.now += 10
    denied = rl.hit("k", FIVE)  # t = 50
    assert not denied.allowed
    assert denied.reset_after_s == pytest.approx(10)
    clock.now += 10  # t = 60: the window started at t = 0 is over
    fresh = rl.hit("k", FIVE)
    assert fresh.allowed
    assert fresh.remaining == 4


def test_sync_and_async_share_memory_counters(clock: FakeTime) -> None:
    rl = limiter(clock)
    spec = RateLimitSpec.parse("2/minute")
    assert rl.hit("k", spec).allowed
    assert asyncio.run(rl.ahit("k", spec)).allowed
    assert not asyncio.run(rl.ahit("k", spec)).allowed
    assert not rl.hit("k", spec).allowed


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window"])
def test_memory_stays_bounded_under_many_keys(clock: FakeTime, strategy: str) -> None:
    """Attacker-chosen keys (client IPs) do not accumulate once their window is over."""
    rl = limiter(clock, strategy)
    store = rl.storage
    for i in range(3000):
        rl.hit(f"198.51.{i // 256}.{i % 256}", FIVE)
    assert len(store.events) + len(store.storage) == 3000
    clock.now += 61
    rl.sweep()
    assert len(store.events) == 0
    assert len(store.storage) == 0
    assert len(store.expirations) == 0


def test_sweep_keeps_live_keys(clock: FakeTime) -> None:
    rl = limiter(clock)
    for _ in range(5):
        rl.hit("live", FIVE)
    clock.now += 30
    rl.sweep()
    assert not rl.hit("live", FIVE).allowed


def test_long_keys_are_hashed(clock: FakeTime) -> None:
    rl = limiter(clock)
    spec = RateLimitSpec.parse("1/minute")
    assert rl.hit("x" * 100_000, spec).allowed
    assert not rl.hit("x" * 100_000, spec).allowed
    assert rl.hit("x" * 99_999, spec).allowed
    assert max(len(k) for k in rl.storage.events) < 400


def test_bad_configuration() -> None:
    with pytest.raises(ConfigurationError):
        RateLimiter(strategy="token-bucket")  # type: ignore[arg-type]
    with pytest.raises(ConfigurationError, match=r"rate_limits\.storage"):
        RateLimiter(storage_uri="nosuch://x")
    # Refused before ``limits`` builds it: a half-built MongoDB storage's destructor would
    # print "Exception ignored in ... __del__" (an unraisable error, which fails this test).
    with pytest.raises(ConfigurationError, match=r"rate_limits\.storage: .*'mongodb://'"):
        RateLimiter(storage_uri="mongodb://localhost:27017")
    gc.collect()


def test_headers_from_a_real_deny(clock: FakeTime) -> None:
    rl = limiter(clock)
    spec = RateLimitSpec.parse("1/second")
    rl.hit("k", spec)
    clock.now += 0.25
    headers = dict(rate_limit_headers(rl.hit("k", spec), spec))
    assert headers["Retry-After"] == "1"
    assert headers["RateLimit"] == '"default";r=0;t=1'
    assert headers["RateLimit-Policy"] == '"default";q=1;w=1'


# -- a real Redis --------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


@dataclass
class RedisServer:
    process: subprocess.Popen[bytes]
    url: str

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            self.process.wait(timeout=10)


def _start_redis() -> RedisServer:
    binary = shutil.which("redis-server")
    if binary is None:
        pytest.fail(
            "redis-server is not installed: `apt-get install -y redis-server` "
            "(the Debian package the CI installs)"
        )
    port = _free_port()
    proc = subprocess.Popen(
        [binary, "--bind", "127.0.0.1", "--port", str(port), "--save", "",
         "--appendonly", "no", "--daemonize", "no", "--protected-mode", "yes"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"redis://127.0.0.1:{port}/0"
    client = redis.Redis.from_url(url, socket_timeout=1)
    try:
        for _ in range(200):  # up to ~10 s for the server to accept connections
            if proc.poll() is not None:
                pytest.fail(f"redis-server exited with {proc.returncode}")
            try:
                if client.ping():
                    return RedisServer(proc, url)
            except redis.exceptions.ConnectionError:
                time.sleep(0.05)
        proc.terminate()
        pytest.fail("redis-server did not start")
    finally:
        client.close()


@pytest.fixture(scope="module")
def redis_server() -> Iterator[RedisServer]:
    server = _start_redis()
    yield server
    server.stop()


@pytest.fixture
def redis_url(redis_server: RedisServer) -> str:
    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    client.close()
    return redis_server.url


@pytest.mark.interop
@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window"])
def test_two_limiters_share_counters_through_redis(redis_url: str, strategy: str) -> None:
    a = RateLimiter(storage_uri=redis_url, strategy=strategy)  # type: ignore[arg-type]
    b = RateLimiter(storage_uri=redis_url, strategy=strategy)  # type: ignore[arg-type]
    spec = RateLimitSpec.parse("3/minute")
    assert a.hit("198.51.100.7", spec).remaining == 2
    assert b.hit("198.51.100.7", spec).remaining == 1
    assert a.hit("198.51.100.7", spec).remaining == 0
    denied = b.hit("198.51.100.7", spec)
    assert not denied.allowed
    assert 0 < denied.reset_after_s <= 60
    assert b.hit("203.0.113.9", spec).allowed


@pytest.mark.interop
def test_async_limiter_shares_counters_through_redis(redis_url: str) -> None:
    sync = RateLimiter(storage_uri=redis_url)
    spec = RateLimitSpec.parse("2/minute")
    assert sync.hit("k", spec).allowed

    async def run() -> list[bool]:
        limiter = RateLimiter(storage_uri=redis_url)
        try:
            return [(await limiter.ahit("k", spec)).allowed for _ in range(2)]
        finally:
            await limiter.aclose()

    assert asyncio.run(run()) == [True, False]
    assert not sync.hit("k", spec).allowed
    sync.close()


@pytest.mark.interop
def test_stopped_redis_is_dependency_unavailable() -> None:
    server = _start_redis()
    spec = RateLimitSpec.parse("3/minute")
    try:
        rl = RateLimiter(storage_uri=server.url)
        assert rl.hit("k", spec).allowed
    finally:
        server.stop()
    with pytest.raises(DependencyUnavailableError) as info:
        rl.hit("k", spec)
    assert info.value.status == 503
    assert info.value.reason is Reason.AUTH_UNAVAILABLE
    assert "127.0.0.1" not in info.value.message

    async def run() -> None:
        limiter = RateLimiter(storage_uri=server.url)
        try:
            await limiter.ahit("k", spec)
        finally:
            await limiter.aclose()

    with pytest.raises(DependencyUnavailableError):
        asyncio.run(run())


@pytest.mark.interop
def test_unreachable_redis_is_dependency_unavailable() -> None:
    rl = RateLimiter(storage_uri=f"redis://127.0.0.1:{_free_port()}/0")
    with pytest.raises(DependencyUnavailableError):
        rl.hit("k", RateLimitSpec.parse("1/second"))


@pytest.mark.interop
def test_hung_redis_times_out_as_dependency_unavailable() -> None:
    """A server that accepts but never answers must not hang the request."""
    with socket.socket() as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen(8)
        port = listener.getsockname()[1]
        rl = RateLimiter(storage_uri=f"redis://127.0.0.1:{port}/0", timeout_s=0.2)
        with pytest.raises(DependencyUnavailableError):
            rl.hit("k", RateLimitSpec.parse("1/second"))
        rl.close()
