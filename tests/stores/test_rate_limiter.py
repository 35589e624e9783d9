"""RateLimiter on ``limits``: window behaviour (controlled clock) and headers (real Redis:
test_rate_limiter_redis.py).

The pure values (spec parsing, headers from an outcome) are tested in tests/test_ratelimit.py.
"""

from __future__ import annotations

import asyncio
import gc
import sys
import threading
import time
from dataclasses import dataclass

import limits.storage.memory
import pytest

from illumichat_authz.errors import ConfigurationError
from illumichat_authz.ratelimit import RateLimitSpec, rate_limit_headers
from illumichat_authz.stores._memory_limits import EXPIRE_PER_HIT, InlineExpiryMemoryStorage
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


# -- memory storage: expiry a few keys per hit, no thread -----------------------------


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window"])
def test_memory_hits_start_no_thread(clock: FakeTime, strategy: str) -> None:
    """limits' own memory storage restarts a timer thread every 10 ms that walks every key;
    ours must never start one, whatever the number of keys."""
    rl = limiter(clock, strategy)
    before = {t.ident for t in threading.enumerate()}
    for i in range(2000):
        rl.hit(f"198.51.{i // 256}.{i % 256}", FIVE)
        clock.now += 0.02  # past limits' 10 ms timer, many times over
    time.sleep(0.05)
    assert {t.ident for t in threading.enumerate()} - before == set()


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window"])
def test_memory_expires_as_hits_come_without_a_sweep(clock: FakeTime, strategy: str) -> None:
    """Each hit expires a few due keys, oldest first: later hits drain the old window."""
    rl = limiter(clock, strategy)
    store = rl.storage
    for i in range(3000):
        rl.hit(f"198.51.{i // 256}.{i % 256}", FIVE)
    clock.now += 61
    rl.hit("fresh", FIVE)
    assert 3000 - EXPIRE_PER_HIT <= len(store.events) + len(store.storage) <= 3000
    for _ in range(3000 // EXPIRE_PER_HIT):
        rl.hit("fresh", FIVE)
    assert len(store.events) + len(store.storage) == 1  # "fresh" alone
    assert len(store._due) <= FIVE.amount


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window"])
def test_memory_threads_admit_exactly_the_limit(strategy: str) -> None:
    """Striped locks: threads hitting one key at once admit the limit, never more."""
    rl = RateLimiter(strategy=strategy)  # type: ignore[arg-type]
    spec = RateLimitSpec.parse("100/minute")
    admitted: list[bool] = []

    def worker() -> None:
        for _ in range(50):
            admitted.append(rl.hit("one", spec).allowed)

    threads = [threading.Thread(target=worker) for _ in range(8)]
    sys_interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)  # switch threads as often as possible
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join()
    finally:
        sys.setswitchinterval(sys_interval)
    assert sum(admitted) == 100


def test_other_users_of_limits_keep_its_own_memory_storage() -> None:
    import limits.storage

    assert type(limits.storage.storage_from_string("memory://")) is limits.storage.MemoryStorage
    assert isinstance(RateLimiter().storage, InlineExpiryMemoryStorage)


@pytest.mark.parametrize("strategy", ["moving-window", "fixed-window"])
def test_memory_threads_expiring_each_others_keys_never_deadlock(strategy: str) -> None:
    """Expiry takes the due keys' locks: a hit must not hold its own key's lock meanwhile,
    or two threads expiring each other's keys would wait on each other for ever."""
    rl = RateLimiter(strategy=strategy)  # type: ignore[arg-type]
    spec = RateLimitSpec.parse("3/second")  # windows end while the threads run
    end = time.monotonic() + 2.5
    counts = [0] * 8

    def worker(n: int) -> None:
        i = 0
        while time.monotonic() < end:
            rl.hit(f"t{n}-{i % 200}", spec)
            i += 1
        counts[n] = i

    threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(8)]
    interval = sys.getswitchinterval()
    sys.setswitchinterval(1e-5)
    try:
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=max(0.0, end + 10 - time.monotonic()))
    finally:
        sys.setswitchinterval(interval)
    assert not any(t.is_alive() for t in threads), "the hitting threads deadlocked"
    assert all(counts)
