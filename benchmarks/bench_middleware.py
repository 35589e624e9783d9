"""Per-request cost of AuthzMiddleware on a Starlette app, against the alternatives.

    .venv/bin/python benchmarks/bench_middleware.py [--rounds 30] [--batch 200]

Every candidate serves ``GET /api/chats`` with a valid Auth.js session cookie for a
member of the workspace, called directly as ASGI (no sockets, no HTTP client), all in the
same run and interleaved round by round:

* ``bare``: a Starlette route, no middleware.
* ``empty_http_mw``: the same with an empty ``BaseHTTPMiddleware`` (what
  ``@app.middleware("http")`` installs).
* ``authz``: the same behind our pure ASGI ``AuthzMiddleware`` (allow path; the session
  cookie is served from the credential cache after its first use).
* ``authz_uncached``: the same with the credential cache off, so the cookie is decrypted
  and verified on every request.
* ``naive``: a Starlette dependency done by hand: joserfc decrypts the cookie with a key
  derived by HKDF per request (as ``@auth/core`` does), a dict lookup for the
  membership, and a pycasbin ``Enforcer.enforce`` on the same model and policy.
* ``bare_browser`` / ``authz_browser``: ``bare`` and ``authz`` again, with the fifteen
  headers and four cookies a browser sends (the others send only Host and Cookie). Every
  header is decoded and checked, so this is the allow path's cost in production.

Each sample is the mean of ``--batch`` requests; the report is the median over rounds.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from typing import Any

import casbin
from joserfc import jwe
from joserfc.jwk import OctKey
from starlette.applications import Starlette
from starlette.middleware.base import BaseHTTPMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.config import default_policies_dir, load_settings
from illumichat_authz.credentials import _jwe
from illumichat_authz.credentials.authjs import encode_session_token
from illumichat_authz.facts import InMemoryFacts, Membership
from illumichat_authz.integrations.asgi import AuthzMiddleware
from illumichat_authz.vocab import Role

SECRET = "benchmark-secret-0123456789abcdef"
COOKIE = "authjs.session-token"
ASGI = Callable[[Any, Any, Any], Awaitable[None]]


async def chats(request: Request) -> JSONResponse:
    return JSONResponse({"ok": True})


def bare() -> Starlette:
    return Starlette(routes=[Route("/api/chats", chats)])


def empty_http_mw() -> Starlette:
    async def passthrough(request: Request, call_next: Any) -> Response:
        response: Response = await call_next(request)
        return response

    app = bare()
    app.add_middleware(BaseHTTPMiddleware, dispatch=passthrough)
    return app


def authz(*, cached: bool = True) -> Starlette:
    settings = load_settings(
        overrides={"session": {"secrets": [SECRET], "workspace_claim": "workspace"}}
    )
    facts = InMemoryFacts(memberships=[Membership(user="u1", workspace="w1", role=Role.MEMBER)])
    authorizer = Authorizer.from_settings(settings, facts=facts)
    cache = authorizer.credential_cache
    if not cached and cache is not None:
        cache.max_entries = 0
    app = bare()
    app.add_middleware(AuthzMiddleware, authorizer=authorizer)
    return app


def naive() -> Starlette:
    pol = default_policies_dir()
    enforcer = casbin.Enforcer(str(pol / "model.conf"), str(pol / "policy.csv"))
    roles = {("u1", "w1"): "member"}
    info = b"Auth.js Generated Encryption Key (" + COOKIE.encode() + b")"

    async def guarded(request: Request) -> Response:
        token = request.cookies.get(COOKIE)
        if not token:
            return JSONResponse({"detail": "unauthorized"}, status_code=401)
        raw = _jwe.derive_key(SECRET, salt=COOKIE, info=info, length=64)
        try:
            claims = jwe.decrypt_compact(token, OctKey.import_key(raw)).plaintext
        except Exception:
            return JSONResponse({"detail": "unauthorized"}, status_code=401)
        data = json.loads(claims or b"{}")
        role = roles.get((data.get("sub"), data.get("workspace")), "none")
        if not enforcer.enforce(role, "active", "chat:list", "-"):
            return JSONResponse({"detail": "forbidden"}, status_code=403)
        return JSONResponse({"ok": True})

    return Starlette(routes=[Route("/api/chats", guarded)])


def make_scope(cookie: str) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": "GET",
        "scheme": "http",
        "path": "/api/chats",
        "raw_path": b"/api/chats",
        "root_path": "",
        "query_string": b"",
        "headers": [
            (b"host", b"bench.local"),
            (b"cookie", f"{COOKIE}={cookie}".encode()),
        ],
        "client": ("10.0.0.1", 5555),
        "server": ("127.0.0.1", 80),
        "state": {},
    }


def browser_scope(cookie: str) -> dict[str, Any]:
    """What Chrome sends for a fetch() from the IllumiChat web app."""
    scope = make_scope(cookie)
    cookies = (
        "_ga=GA1.1.123456789.1700000000; authjs.csrf-token=abc%7Cdef; "
        f"authjs.callback-url=https%3A%2F%2Fapp.illumichat.com; {COOKIE}={cookie}"
    )
    scope["headers"] = [
        (b"host", b"api.illumichat.com"),
        (
            b"user-agent",
            b"Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 "
            b"(KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36",
        ),
        (b"accept", b"application/json, text/plain, */*"),
        (b"accept-language", b"en-US,en;q=0.9"),
        (b"accept-encoding", b"gzip, deflate, br, zstd"),
        (b"referer", b"https://app.illumichat.com/chats"),
        (b"origin", b"https://app.illumichat.com"),
        (b"sec-ch-ua", b'"Chromium";v="131", "Not_A Brand";v="24"'),
        (b"sec-ch-ua-mobile", b"?0"),
        (b"sec-ch-ua-platform", b'"macOS"'),
        (b"sec-fetch-dest", b"empty"),
        (b"sec-fetch-mode", b"cors"),
        (b"sec-fetch-site", b"same-site"),
        (b"cookie", cookies.encode()),
        (b"connection", b"keep-alive"),
    ]
    return scope


async def one(app: ASGI, scope: dict[str, Any]) -> int:
    status = 0

    async def receive() -> dict[str, Any]:
        return {"type": "http.request", "body": b"", "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        nonlocal status
        if message["type"] == "http.response.start":
            status = message["status"]

    await app(dict(scope), receive, send)
    return status


async def run(rounds: int, batch: int) -> dict[str, float]:
    cookie = encode_session_token(
        {"sub": "u1", "workspace": "w1"}, secret=SECRET, now=time.time(), max_age_s=86400
    )
    scope = make_scope(cookie)
    browser = browser_scope(cookie)
    candidates: dict[str, tuple[ASGI, dict[str, Any]]] = {
        "bare": (bare(), scope),
        "empty_http_mw": (empty_http_mw(), scope),
        "authz": (authz(), scope),
        "authz_uncached": (authz(cached=False), scope),
        "naive": (naive(), scope),
        "bare_browser": (bare(), browser),
        "authz_browser": (authz(), browser),
    }
    for name, (app, request) in candidates.items():
        status = await one(app, request)
        if status != 200:
            raise SystemExit(f"{name} answered {status}, not 200")
        for _ in range(50):
            await one(app, request)
    samples: dict[str, list[float]] = {name: [] for name in candidates}
    for _ in range(rounds):
        for name, (app, request) in candidates.items():
            start = time.perf_counter_ns()
            for _ in range(batch):
                await one(app, request)
            samples[name].append((time.perf_counter_ns() - start) / batch / 1000)
    return {name: statistics.median(values) for name, values in samples.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=30)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args()
    medians = asyncio.run(run(args.rounds, args.batch))
    print(f"median us per request ({args.rounds} rounds x {args.batch} requests)")
    for name, value in medians.items():
        base = medians["bare_browser" if name.endswith("_browser") else "bare"]
        print(f"  {name:14s} {value:8.1f} us   added {value - base:+8.1f} us")
    base = medians["bare"]
    print(
        f"  authz / naive (added cost): {(medians['authz'] - base) / (medians['naive'] - base):.2f}"
    )
    print(
        f"  authz added / empty BaseHTTPMiddleware added: "
        f"{(medians['authz'] - base) / (medians['empty_http_mw'] - base):.2f}"
    )


if __name__ == "__main__":
    main()
