"""Median time to decode one Auth.js session cookie, ours against the alternatives.

    .venv/bin/python benchmarks/bench_session.py [--rounds 200] [--batch 100]

Candidates, all on the same A256CBC-HS512 token, measured interleaved in the same run:

* ``ours``: ``AuthjsSessionDecoder.decode`` (header checks, claims, Principal).
* ``floor``: the least a correct decoder must do, hand-rolled on the same primitives with
  the key already derived: split, base64url, HMAC-SHA512 tag check, AES-CBC, unpad,
  ``json.loads``. No header or claim checks; no Principal.
* ``joserfc``: ``jwe.decrypt_compact`` with the derived key (if joserfc is installed).
* ``naive``: what ``@auth/core``'s ``decode`` does per call: HKDF and thumbprint per
  request, then the floor's decryption.
* ``cache_hit``: the same cookie the second time: ``CredentialCache`` key (the Cookie
  header itself) and lookup, as ``authenticate`` does before any decryption.

Then the database strategy: ``SqliteSessionStore.get_session`` on its pooled connections
against opening a read-only connection per lookup (what the store did before).

Each sample is the mean of ``--batch`` calls; the report is the median over ``--rounds``.
"""

from __future__ import annotations

import argparse
import base64
import hmac
import json
import sqlite3
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from _timing import median_us
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

from illumichat_authz.credentials import _jwe
from illumichat_authz.credentials.authjs import (
    AuthjsSessionDecoder,
    SessionCookie,
    derive_content_key,
    encode_session_token,
)
from illumichat_authz.stores.credential_cache import CredentialCache
from illumichat_authz.stores.sessions import SqliteSessionStore

NAME = "authjs.session-token"
SECRETS = ["secret-3-newest", "secret-2", "secret-1"]
NOW = 1_750_000_000.0
CLAIMS = {
    "sub": "user_2b9f3c1e",
    "name": "Ann Example",
    "email": "ann@example.com",
    "picture": "https://cdn.example.com/avatars/2b9f3c1e.png",
    "workspace": "ws_41f0",
}


def _b64(data: str) -> bytes:
    return base64.urlsafe_b64decode(data + "=" * (-len(data) % 4))


def make_floor(key: bytes) -> Callable[[str], dict[str, Any]]:
    mac_key, aes = key[:32], algorithms.AES(key[32:])

    def floor(token: str) -> dict[str, Any]:
        header, _, iv_s, ct_s, tag_s = token.split(".")
        iv, ct, tag = _b64(iv_s), _b64(ct_s), _b64(tag_s)
        aad = header.encode()
        al = (len(aad) * 8).to_bytes(8, "big")
        if not hmac.compare_digest(hmac.digest(mac_key, aad + iv + ct + al, "sha512")[:32], tag):
            raise ValueError("tag")
        d = Cipher(aes, modes.CBC(iv)).decryptor()
        padded = d.update(ct) + d.finalize()
        claims: dict[str, Any] = json.loads(padded[: -padded[-1]])
        return claims

    return floor


def make_naive(secret: str) -> Callable[[str], dict[str, Any]]:
    """``@auth/core``'s ``decode``: derive the key (HKDF + thumbprint) on every call."""

    def naive(token: str) -> dict[str, Any]:
        key = _jwe.derive_key(
            secret, salt=NAME, info=f"Auth.js Generated Encryption Key ({NAME})", length=64
        )
        kid = json.loads(_b64(token.partition(".")[0]))["kid"]
        if kid != _jwe.jwk_thumbprint(key):
            raise ValueError("kid")
        return make_floor(key)(token)

    return naive


def make_joserfc(key: bytes) -> Callable[[str], dict[str, Any]] | None:
    try:
        from joserfc import jwe
        from joserfc.jwk import OctKey
    except ImportError:
        return None
    oct_key = OctKey.import_key(key)
    registry = jwe.JWERegistry(algorithms=["dir", "A256CBC-HS512"])

    def jose(token: str) -> dict[str, Any]:
        obj = jwe.decrypt_compact(token, oct_key, registry=registry)
        assert obj.plaintext is not None
        claims: dict[str, Any] = json.loads(obj.plaintext)
        return claims

    return jose


def bench_database(reps: int) -> None:
    """Pooled lookups against a fresh read-only connection per lookup, same WAL file."""
    with tempfile.TemporaryDirectory() as tmp:
        db = Path(tmp) / "auth.sqlite3"
        app = sqlite3.connect(db, isolation_level=None)
        app.execute("PRAGMA journal_mode=WAL")
        app.execute(
            'CREATE TABLE sessions ("sessionToken" text PRIMARY KEY, "userId" text, '
            '"expires" integer)'
        )
        app.execute("INSERT INTO sessions VALUES ('tok', 'user_1', 1750000000000)")
        store = SqliteSessionStore(db)
        query = store._query
        uri = db.resolve().as_uri() + "?mode=ro"

        def per_lookup() -> object:
            conn = sqlite3.connect(uri, uri=True, timeout=2.0)
            try:
                return conn.execute(query, ("tok",)).fetchall()
            finally:
                conn.close()

        pooled_us = median_us(lambda: store.get_session("tok"), reps=reps)
        fresh_us = median_us(per_lookup, reps=max(reps // 10, 50))
        store.close()
        app.close()
    print("database strategy (SQLite, WAL)")
    print(f"  SqliteSessionStore.get_session, pooled  {pooled_us:8.2f} µs")
    ratio = fresh_us / pooled_us
    print(f"  a read-only connection per lookup       {fresh_us:8.2f} µs  ({ratio:.1f}x)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--batch", type=int, default=100)
    args = parser.parse_args()

    token = encode_session_token(CLAIMS, secret=SECRETS[0], now=NOW)
    cookie = SessionCookie(name=NAME, value=token)
    decoder = AuthjsSessionDecoder(secrets=SECRETS, workspace_claim="workspace")
    key = derive_content_key(SECRETS[0], salt=NAME, enc="A256CBC-HS512").key

    def ours(_: str) -> Any:
        return decoder.decode(cookie, now=NOW)

    cache = CredentialCache()
    header = f"{NAME}={token}"
    cache.put(cache.key("C", header), decoder.decode(cookie, now=NOW), now=NOW, revocable=False)

    def cache_hit(_: str) -> Any:
        return cache.get(cache.key("C", header), now=NOW)

    candidates: dict[str, Callable[[str], Any]] = {
        "ours": ours,
        "floor": make_floor(key),
        "naive": make_naive(SECRETS[0]),
        "cache_hit": cache_hit,
    }
    jose = make_joserfc(key)
    if jose is not None:
        candidates["joserfc"] = jose

    # Same answer from everyone before timing anything.
    for name, fn in candidates.items():
        result = fn(token)
        sub = result.user_id if name in ("ours", "cache_hit") else result["sub"]
        assert sub == CLAIMS["sub"], name

    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(20):  # warm-up
        for fn in candidates.values():
            fn(token)
    for _ in range(args.rounds):
        for name, fn in candidates.items():
            start = time.perf_counter_ns()
            for _ in range(args.batch):
                fn(token)
            samples[name].append((time.perf_counter_ns() - start) / args.batch / 1000)

    medians = {name: statistics.median(values) for name, values in samples.items()}
    floor = medians["floor"]
    print(f"token: {len(token)} chars, A256CBC-HS512, {len(SECRETS)} secrets configured")
    print(f"{'candidate':<10} {'median µs':>10} {'x floor':>8} {'x ours':>8}")
    for name, median in medians.items():
        print(f"{name:<10} {median:>10.2f} {median / floor:>8.2f} {median / medians['ours']:>8.2f}")
    verdict = "OK" if medians["ours"] <= 1.3 * floor else "ABOVE TARGET"
    print(f"ours / floor = {medians['ours'] / floor:.2f} (target <= 1.30: {verdict})")
    hit = medians["cache_hit"]
    print(f"cache hit = {hit:.2f} µs (target <= 2 µs: {'OK' if hit <= 2 else 'ABOVE TARGET'})")
    bench_database(reps=args.rounds * 5)


if __name__ == "__main__":
    main()
