"""API key verification cost: SHA-256 (ours) vs PBKDF2 (the naive "hash it like a password").

Run: ``.venv/bin/python benchmarks/bench_apikeys.py [--reps N]``

Prints the median of many repetitions (``time.perf_counter_ns``) in microseconds, and
ratios measured in the same run. A slow KDF protects low-entropy passwords from guessing;
an API key secret carries 256 random bits, so stretching buys nothing and makes every
request (and every attacker-sent garbage key that passes the checksum) cost milliseconds.
"""

from __future__ import annotations

import argparse
import hashlib
import hmac
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

from illumichat_authz.credentials.apikeys import (
    ApiKeyStore,
    issue_api_key,
    parse_api_key,
    verify_api_key,
)
from illumichat_authz.stores.api_keys import (
    CachingApiKeyStore,
    MemoryApiKeyStore,
    SqliteApiKeyStore,
)

NOW = 1_800_000_000.0
PBKDF2_ITERATIONS = 100_000


def median_us(fn: Callable[[], object], reps: int) -> float:
    for _ in range(min(reps, 50)):  # warm up
        fn()
    samples = []
    for _ in range(reps):
        start = time.perf_counter_ns()
        fn()
        samples.append(time.perf_counter_ns() - start)
    return statistics.median(samples) / 1000


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--reps", type=int, default=20_000)
    parser.add_argument("--slow-reps", type=int, default=30, help="repetitions for PBKDF2")
    args = parser.parse_args()

    token, record = issue_api_key(
        user_id="user_1", workspace="ws_1", scopes=["chats:read"], now=NOW
    )
    secret = token.split("_")[2][:43].encode()
    salt = b"per-key-salt-16b"
    pbkdf2_digest = hashlib.pbkdf2_hmac("sha256", secret, salt, PBKDF2_ITERATIONS)

    memory = MemoryApiKeyStore()
    memory.add(record)
    with tempfile.TemporaryDirectory() as tmp:
        sqlite = SqliteApiKeyStore(Path(tmp) / "keys.sqlite3")
        sqlite.add(record)
        unthrottled = SqliteApiKeyStore(Path(tmp) / "keys.sqlite3", touch_interval_s=0)
        sqlite.get(record.key_id)  # warm: schema ready, connection open, page cached

        def ours(store: ApiKeyStore) -> Callable[[], object]:
            return lambda: verify_api_key(parse_api_key(token), store.get(record.key_id), now=NOW)

        def authenticate(store: ApiKeyStore, now: float) -> object:
            # What the driver does for a bearer API key: parse, look up, verify, record use.
            parsed = parse_api_key(token)
            principal = verify_api_key(parsed, store.get(parsed.key_id), now=now)
            store.touch(parsed.key_id, now=now)
            return principal

        def naive(store: ApiKeyStore) -> Callable[[], object]:
            def run() -> object:
                parse_api_key(token)
                store.get(record.key_id)
                candidate = hashlib.pbkdf2_hmac("sha256", secret, salt, PBKDF2_ITERATIONS)
                return hmac.compare_digest(candidate, pbkdf2_digest)

            return run

        clock = iter(range(10**9))
        results = {
            "parse only (grammar + CRC32 + SHA-256)": median_us(
                lambda: parse_api_key(token), args.reps
            ),
            "parse+verify, dict store": median_us(ours(memory), args.reps),
            "parse+verify, warm SQLite store": median_us(ours(sqlite), args.reps),
            "parse+verify, SQLite behind a 5 s CachingApiKeyStore": median_us(
                ours(CachingApiKeyStore(sqlite, ttl_s=5, clock=time.monotonic)), args.reps
            ),
            "authenticate (with throttled touch), SQLite": median_us(
                lambda: authenticate(sqlite, NOW), args.reps
            ),
            "authenticate, touch writes every request, SQLite": median_us(
                lambda: authenticate(unthrottled, NOW + next(clock)),
                max(args.reps // 10, 100),
            ),
            f"naive: parse+lookup+PBKDF2-SHA256 {PBKDF2_ITERATIONS} it, dict store": median_us(
                naive(memory), args.slow_reps
            ),
        }
        sqlite.close()
        unthrottled.close()

    width = max(len(k) for k in results)
    print(f"median of {args.reps} reps (PBKDF2: {args.slow_reps}), microseconds")
    for name, us in results.items():
        print(f"  {name:<{width}}  {us:12.2f} µs")
    pbkdf2 = list(results.values())[-1]
    ours_dict = results["parse+verify, dict store"]
    ours_sqlite = results["parse+verify, warm SQLite store"]
    throttled = results["authenticate (with throttled touch), SQLite"]
    every = results["authenticate, touch writes every request, SQLite"]
    print("ratios")
    print(f"  PBKDF2 naive / ours (dict store):    {pbkdf2 / ours_dict:10.0f}x slower")
    print(f"  PBKDF2 naive / ours (SQLite store):  {pbkdf2 / ours_sqlite:10.0f}x slower")
    print(f"  touch on every request / throttled:  {every / throttled:10.1f}x slower")


if __name__ == "__main__":
    main()
