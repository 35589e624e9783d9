"""Forward auth and AuthZEN: the cost of the HTTP layer around a decision.

Calls the Starlette app as ASGI (no sockets, so the numbers are ours, not the kernel's):

* ``/auth`` for an allowed session request vs ``Authorizer.adecide`` on the same request
  in-process (the server's own overhead: header translation, routing, rendering);
* one AuthZEN batch of 20 evaluations vs 20 single ``/access/v1/evaluation`` requests.

Run: ``.venv/bin/python benchmarks/bench_forward_auth.py``
"""

from __future__ import annotations

import asyncio
import gc
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

from illumichat_authz.server import create_app, forwarded_request
from illumichat_authz.testing import build_test_authorizer, make_test_settings, session_cookie
from illumichat_authz.testing.fixtures import DEV_SESSION_SECRET, FactsBuilder

TOKEN = "bench-authzen-token-0123456789"


async def median_us(
    fn: Callable[[], Awaitable[object]], *, reps: int = 400, inner: int = 10
) -> float:
    for _ in range(100):
        await fn()
    samples: list[float] = []
    gc.disable()
    try:
        for _ in range(reps):
            t0 = time.perf_counter_ns()
            for _ in range(inner):
                await fn()
            samples.append((time.perf_counter_ns() - t0) / inner / 1000)
    finally:
        gc.enable()
    return statistics.median(samples)


def asgi_call(
    app: Any, method: str, path: str, headers: list[tuple[str, str]], body: bytes = b""
) -> Callable[[], Awaitable[int]]:
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(k.encode(), v.encode()) for k, v in headers],
        "client": ("127.0.0.1", 50000),
        "server": ("127.0.0.1", 9180),
    }

    async def call() -> int:
        status = 0

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(dict(scope), receive, send)
        return status

    return call


async def main() -> None:
    facts = FactsBuilder()
    facts.workspace("w1").member("alice", role="admin").assistant(
        "a1", visibility="private", creator="bob"
    )
    authorizer = build_test_authorizer(
        make_test_settings(jwks_url="http://127.0.0.1:9/jwks.json"), facts=facts.facts
    )
    app = create_app(authorizer=authorizer, authzen_token=TOKEN)
    cookie = session_cookie("alice", secret=DEV_SESSION_SECRET, workspace="w1", expires_in=86400)
    headers = [
        ("host", "authz"),
        ("x-original-method", "PATCH"),
        ("x-original-uri", "/api/assistants/a1"),
        ("cookie", cookie),
    ]
    forward = asgi_call(app, "GET", "/auth", headers)
    assert await forward() == 200
    facts_req = forwarded_request(
        method="GET", raw_path="/auth", query="", headers=headers, peer="127.0.0.1"
    )

    async def direct() -> object:
        return await authorizer.adecide(facts_req)

    t_forward = await median_us(forward)
    t_direct = await median_us(direct)
    print(f"forward auth /auth (allowed session)    {t_forward:8.1f} µs")
    print(f"authorizer.adecide, same request        {t_direct:8.1f} µs")
    print(f"  HTTP layer overhead: {t_forward - t_direct:.1f} µs ({t_forward / t_direct:.2f}x)")

    auth = [
        ("host", "pdp"),
        ("authorization", f"Bearer {TOKEN}"),
        ("content-type", "application/json"),
    ]
    one = {
        "subject": {"type": "user", "id": "alice"},
        "action": {"name": "assistant:read"},
        "resource": {"type": "assistant", "id": "a1"},
    }
    single = asgi_call(app, "POST", "/access/v1/evaluation", auth, json.dumps(one).encode())
    batch_doc = {
        "subject": one["subject"],
        "action": one["action"],
        "evaluations": [{"resource": {"type": "assistant", "id": "a1"}}] * 20,
    }
    batch = asgi_call(app, "POST", "/access/v1/evaluations", auth, json.dumps(batch_doc).encode())
    assert await single() == 200
    assert await batch() == 200

    async def twenty_singles() -> None:
        for _ in range(20):
            await single()

    t_batch = await median_us(batch, reps=200)
    t_singles = await median_us(twenty_singles, reps=100, inner=2)
    print(f"AuthZEN batch of 20             {t_batch:8.1f} µs ({t_batch / 20:.1f} µs/decision)")
    print(f"AuthZEN 20 single evaluations   {t_singles:8.1f} µs ({t_singles / 20:.1f} µs each)")
    print(f"  batch speed-up: {t_singles / t_batch:.2f}x")
    authorizer.rate_limiter.close()


if __name__ == "__main__":
    asyncio.run(main())
