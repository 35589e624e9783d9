"""JwksCache against a real JWKS server on 127.0.0.1 (stdlib http.server in a thread).

Parsing a JWKS document (pure) is tested in tests/credentials/test_jwk.py.
"""

from __future__ import annotations

import asyncio
import json
import logging
import threading
import urllib.error
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from jwt.algorithms import ECAlgorithm, RSAAlgorithm

from illumichat_authz.credentials.jwk import JwkKey
from illumichat_authz.errors import ConfigurationError, CredentialError, DependencyUnavailableError
from illumichat_authz.reasons import Reason
from illumichat_authz.stores.jwks import JwksCache, UrllibJwksFetcher

pytestmark = pytest.mark.interop

RSA_A = rsa.generate_private_key(public_exponent=65537, key_size=2048)
RSA_B = rsa.generate_private_key(public_exponent=65537, key_size=2048)
EC_A = ec.generate_private_key(ec.SECP256R1())


def rsa_jwk(key: rsa.RSAPrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(RSAAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "RS256", **extra}


def ec_jwk(key: ec.EllipticCurvePrivateKey, kid: str, **extra: Any) -> dict[str, Any]:
    jwk: dict[str, Any] = json.loads(ECAlgorithm.to_jwk(key.public_key()))
    return {**jwk, "kid": kid, "use": "sig", "alg": "ES256", **extra}


def jwks(*keys: object) -> bytes:
    return json.dumps({"keys": list(keys)}).encode()


@dataclass
class Tenant:
    """What the fake Auth0 tenant serves, and how often it was asked."""

    body: bytes = b""
    status: int = 200
    requests: int = 0
    gate: threading.Event | None = None
    headers: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)


class JwksServer:
    def __init__(self) -> None:
        self.tenant = tenant = Tenant()

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                with tenant.lock:
                    tenant.requests += 1
                if tenant.gate is not None:
                    tenant.gate.wait(timeout=10)
                self.send_response(tenant.status)
                self.send_header("Content-Type", "application/json")
                for name, value in tenant.headers.items():
                    self.send_header(name, value)
                self.send_header("Content-Length", str(len(tenant.body)))
                self.end_headers()
                self.wfile.write(tenant.body)

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.httpd.daemon_threads = True
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}/.well-known/jwks.json"
        self.thread = threading.Thread(
            target=self.httpd.serve_forever, kwargs={"poll_interval": 0.01}, daemon=True
        )
        self.thread.start()
        self.running = True

    def stop(self) -> None:
        if self.running:
            self.running = False
            self.httpd.shutdown()
            self.httpd.server_close()
            self.thread.join()


@pytest.fixture
def server() -> Iterator[JwksServer]:
    srv = JwksServer()
    srv.tenant.body = jwks(rsa_jwk(RSA_A, "a"), ec_jwk(EC_A, "ec"))
    yield srv
    if srv.tenant.gate is not None:
        srv.tenant.gate.set()
    srv.stop()


class FakeClock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_cache(server: JwksServer, clock: FakeClock, **kw: Any) -> JwksCache:
    return JwksCache(
        url=server.url,
        fetcher=UrllibJwksFetcher(),
        clock=clock,
        ttl_s=kw.pop("ttl_s", 600),
        min_refresh_s=kw.pop("min_refresh_s", 60),
        max_stale_s=kw.pop("max_stale_s", 3600),
        **kw,
    )


# --- the happy path and rotation -----------------------------------------------------------


def test_first_use_fetches_then_serves_from_cache(server: JwksServer, clock: FakeClock) -> None:
    cache = make_cache(server, clock)
    key = cache.get_key("a", "RS256")
    assert isinstance(key, JwkKey)
    assert key.kty == "RSA"
    assert key.public_key.public_numbers() == RSA_A.public_key().public_numbers()
    assert cache.get_key("ec", "ES256").crv == "P-256"
    clock.t += 599
    cache.get_key("a", "RS256")
    assert server.tenant.requests == 1
    assert cache.kids == {"a", "ec"}


def test_rotation_new_kid_appears_after_refresh(server: JwksServer, clock: FakeClock) -> None:
    cache = make_cache(server, clock)
    cache.get_key("a", "RS256")
    server.tenant.body = jwks(rsa_jwk(RSA_A, "a"), rsa_jwk(RSA_B, "b"))
    # Within min_refresh_s the unknown kid cannot force a fetch; the JWKS we hold is the
    # tenant's current answer, so the kid is simply not one of its keys.
    with pytest.raises(CredentialError) as info:
        cache.get_key("b", "RS256")
    assert info.value.reason is Reason.INVALID_TOKEN
    assert server.tenant.requests == 1
    clock.t += 60
    key_b = cache.get_key("b", "RS256")
    assert key_b.public_key.public_numbers() == RSA_B.public_key().public_numbers()
    assert server.tenant.requests == 2


def test_ttl_refresh_drops_retired_kid(server: JwksServer, clock: FakeClock) -> None:
    cache = make_cache(server, clock)
    cache.get_key("a", "RS256")
    server.tenant.body = jwks(rsa_jwk(RSA_B, "b"))
    clock.t += 601
    with pytest.raises(CredentialError) as info:
        cache.get_key("a", "RS256")
    assert info.value.reason is Reason.INVALID_TOKEN
    assert server.tenant.requests == 2
    assert cache.get_key("b", "RS256").kid == "b"


def test_key_refuses_an_algorithm_it_was_not_published_for(
    server: JwksServer, clock: FakeClock
) -> None:
    cache = make_cache(server, clock)
    for kid, alg in [("a", "ES256"), ("a", "PS256"), ("ec", "RS256"), ("ec", "ES384")]:
        with pytest.raises(CredentialError) as info:
            cache.get_key(kid, alg)
        assert info.value.reason is Reason.INVALID_TOKEN


# --- outages -------------------------------------------------------------------------------


def test_outage_500_serves_stale_then_503_after_max_stale(
    server: JwksServer, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    cache = make_cache(server, clock, max_stale_s=3600)
    cache.get_key("a", "RS256")
    server.tenant.status = 500
    clock.t += 601  # stale: a refresh is due, fails, the old key keeps serving
    with caplog.at_level(logging.WARNING, logger="illumichat_authz"):
        assert cache.get_key("a", "RS256").kid == "a"
    assert "JWKS fetch" in caplog.text
    assert server.tenant.requests == 2
    # Failed attempts are rate limited too: the down tenant is not hammered.
    for _ in range(50):
        cache.get_key("a", "RS256")
    assert server.tenant.requests == 2
    clock.t += 3000  # 3601 s after the last good fetch
    with pytest.raises(DependencyUnavailableError) as info:
        cache.get_key("a", "RS256")
    assert info.value.reason is Reason.AUTH_UNAVAILABLE
    assert info.value.status == 503
    # The tenant comes back: the next allowed attempt restores service.
    server.tenant.status = 200
    clock.t += 60
    assert cache.get_key("a", "RS256").kid == "a"


def test_outage_server_stopped(server: JwksServer, clock: FakeClock) -> None:
    cache = make_cache(server, clock)
    cache.get_key("a", "RS256")
    server.stop()
    clock.t += 601
    assert cache.get_key("a", "RS256").kid == "a"
    # A kid we never saw, while we cannot reach the tenant: not "your token is bad".
    clock.t += 60
    with pytest.raises(DependencyUnavailableError):
        cache.get_key("rotated-in", "RS256")
    clock.t += 3600
    with pytest.raises(DependencyUnavailableError) as info:
        cache.get_key("a", "RS256")
    assert info.value.reason is Reason.AUTH_UNAVAILABLE


def test_cold_start_failure_is_503_and_rate_limited(server: JwksServer, clock: FakeClock) -> None:
    server.tenant.status = 503
    cache = make_cache(server, clock)
    for _ in range(20):
        with pytest.raises(DependencyUnavailableError) as info:
            cache.get_key("a", "RS256")
        assert info.value.reason is Reason.AUTH_UNAVAILABLE
    assert server.tenant.requests == 1


@pytest.mark.parametrize(
    "body",
    [
        b"<html>oops</html>",
        b'{"keys": "nope"}',
        b"[]",
        jwks(),
        jwks({"kty": "oct", "k": "c2VjcmV0", "kid": "a"}),
        b"\xff\xfe",
    ],
)
def test_bad_document_never_wipes_cached_keys(
    server: JwksServer, clock: FakeClock, body: bytes
) -> None:
    cache = make_cache(server, clock)
    cache.get_key("a", "RS256")
    server.tenant.body = body
    clock.t += 601
    assert cache.get_key("a", "RS256").kid == "a"
    assert server.tenant.requests == 2
    assert cache.kids == {"a", "ec"}


# --- storms and concurrency ----------------------------------------------------------------


def test_refresh_storm_of_unknown_kids_is_one_fetch_per_interval(
    server: JwksServer, clock: FakeClock
) -> None:
    cache = make_cache(server, clock)
    cache.get_key("a", "RS256")
    clock.t += 60
    for i in range(1000):
        with pytest.raises(CredentialError):
            cache.get_key(f"attacker-{i}", "RS256")
    assert server.tenant.requests == 2
    clock.t += 59
    for i in range(1000):
        with pytest.raises(CredentialError):
            cache.get_key(f"attacker-{i}", "RS256")
    assert server.tenant.requests == 2
    clock.t += 1
    for i in range(1000):
        with pytest.raises(CredentialError):
            cache.get_key(f"attacker-{i}", "RS256")
    assert server.tenant.requests == 3
    assert cache.kids == {"a", "ec"}  # nothing keyed by attacker strings


def test_threads_share_one_cold_fetch(server: JwksServer, clock: FakeClock) -> None:
    cache = make_cache(server, clock)
    gate = server.tenant.gate = threading.Event()
    results: list[str] = []
    errors: list[BaseException] = []

    def worker() -> None:
        try:
            results.append(cache.get_key("a", "RS256").kid)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=worker) for _ in range(16)]
    for t in threads:
        t.start()
    while server.tenant.requests == 0:
        threading.Event().wait(0.001)
    gate.set()
    for t in threads:
        t.join()
    assert errors == []
    assert results == ["a"] * 16
    assert server.tenant.requests == 1


def test_async_misses_share_one_fetch_and_loop_keeps_running(
    server: JwksServer, clock: FakeClock
) -> None:
    cache = make_cache(server, clock)
    gate = server.tenant.gate = threading.Event()
    ticks = 0

    async def ticker() -> None:
        # Only a running loop can release the server: were aget_key to block the loop,
        # the fetch would hang until the gate's own 10 s timeout and the tick count be 0.
        nonlocal ticks
        while server.tenant.requests == 0:
            await asyncio.sleep(0.001)
        for _ in range(20):
            ticks += 1
            await asyncio.sleep(0)
        gate.set()

    async def main() -> list[JwkKey]:
        lookups = [cache.aget_key("a", "RS256") for _ in range(50)]
        keys, _ = await asyncio.gather(asyncio.gather(*lookups), ticker())
        return keys

    keys = asyncio.run(main())
    assert ticks == 20
    assert {k.kid for k in keys} == {"a"}
    assert server.tenant.requests == 1


def test_stale_key_holders_never_wait_behind_a_fetch(server: JwksServer, clock: FakeClock) -> None:
    cache = make_cache(server, clock)
    cache.get_key("a", "RS256")
    clock.t += 601
    gate = server.tenant.gate = threading.Event()
    refresher = threading.Thread(target=cache.get_key, args=("a", "RS256"))
    refresher.start()
    while server.tenant.requests < 2:
        threading.Event().wait(0.001)
    # The refresh is stuck at the tenant; other callers are served the stale key at once.
    assert cache.get_key("a", "RS256").kid == "a"

    async def lookup() -> JwkKey:
        return await cache.aget_key("ec", "ES256")

    assert asyncio.run(lookup()).kid == "ec"
    assert not gate.is_set()
    gate.set()
    refresher.join()
    assert server.tenant.requests == 2


def test_async_outage_and_storm_follow_the_same_policy(
    server: JwksServer, clock: FakeClock
) -> None:
    cache = make_cache(server, clock)

    async def main() -> None:
        assert (await cache.aget_key("a", "RS256")).kid == "a"
        clock.t += 60
        for i in range(200):
            with pytest.raises(CredentialError):
                await cache.aget_key(f"x{i}", "RS256")
        assert server.tenant.requests == 2
        server.tenant.status = 500
        clock.t += 601
        assert (await cache.aget_key("a", "RS256")).kid == "a"
        clock.t += 3600
        with pytest.raises(DependencyUnavailableError):
            await cache.aget_key("a", "RS256")

    asyncio.run(main())


# --- the fetcher ---------------------------------------------------------------------------


def test_fetcher_refuses_plain_http_to_remote_hosts() -> None:
    with pytest.raises(ValueError, match="https"):
        UrllibJwksFetcher().fetch("http://example.com/jwks.json", timeout_s=1)
    with pytest.raises(ValueError, match="https"):
        UrllibJwksFetcher().fetch("file:///etc/passwd", timeout_s=1)


def test_fetcher_caps_size(server: JwksServer) -> None:
    server.tenant.body = b" " * 5000
    with pytest.raises(ValueError, match="too large"):
        UrllibJwksFetcher(max_bytes=4096).fetch(server.url, timeout_s=5)
    assert len(UrllibJwksFetcher(max_bytes=5000).fetch(server.url, timeout_s=5)) == 5000


def test_fetcher_does_not_follow_redirects(server: JwksServer) -> None:
    server.tenant.status = 302
    server.tenant.headers = {"Location": "http://127.0.0.1:9/evil.json"}
    with pytest.raises(urllib.error.HTTPError, match="302"):
        UrllibJwksFetcher().fetch(server.url, timeout_s=5)


def test_cache_rejects_bad_configuration() -> None:
    with pytest.raises(ConfigurationError):
        JwksCache(url="https://x/", fetcher=UrllibJwksFetcher(), ttl_s=0)
    with pytest.raises(ConfigurationError):
        JwksCache(url="https://x/", fetcher=UrllibJwksFetcher(), max_keys=0)
