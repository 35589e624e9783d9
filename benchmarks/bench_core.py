"""Decision core speed: our compiled policy vs pycasbin's Enforcer and FastEnforcer.

Run: .venv/bin/python benchmarks/bench_core.py [--sizes 100,10000,100000,1000000]

For each size N the data set has N memberships and N grants (N/10 workspaces, N/10
assistants). pycasbin gets the same data the obvious way (memberships as `g, user, role,
workspace` lines, grants as `p` lines, RBAC with domains) and answers "may this user read
this assistant"; our core answers the full question (membership, visibility, grant,
role; reason and explanation included) from in-memory facts through `decide_access`.
Everything is measured in this one run; medians of many batches.
"""

from __future__ import annotations

import argparse
import itertools
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import casbin
from _timing import median_us

from illumichat_authz import (
    Assistant,
    Authorizer,
    CredentialKind,
    Grant,
    InMemoryFacts,
    Membership,
    Principal,
    RequestFacts,
    Role,
    Visibility,
    load_settings,
)
from illumichat_authz.credentials.authjs import encode_session_token

NAIVE_MODEL = """
[request_definition]
r = sub, dom, obj, act

[policy_definition]
p = sub, dom, obj, act

[role_definition]
g = _, _, _

[policy_effect]
e = some(where (p.eft == allow))

[matchers]
m = g(r.sub, p.sub, r.dom) && (p.dom == "*" || r.dom == p.dom) \
&& (p.obj == "*" || r.obj == p.obj) && r.act == p.act
"""

ROLES = [Role.OWNER, Role.ADMIN, Role.MEMBER, Role.GUEST]
SECRET = "benchmark-secret-0123456789abcdef"


@dataclass
class World:
    facts: InMemoryFacts
    policy_file: Path
    queries: list[tuple[str, str, str]] = field(default_factory=list)


def build(n: int, tmp: Path) -> World:
    rng = random.Random(n)
    n_ws = max(1, n // 10)
    n_asst = max(1, n // 10)
    memberships = [
        Membership(user=f"u{i}", workspace=f"w{i % n_ws}", role=ROLES[i % 4]) for i in range(n)
    ]
    visibilities = list(Visibility)
    assistants = [
        Assistant(
            id=f"a{j}", workspace=f"w{j % n_ws}", visibility=visibilities[j % 3], creator=f"u{j}"
        )
        for j in range(n_asst)
    ]
    grants = [
        Grant(user=f"u{rng.randrange(n)}", assistant=f"a{rng.randrange(n_asst)}") for _ in range(n)
    ]
    policy_file = tmp / f"naive-{n}.csv"
    with policy_file.open("w") as fh:
        fh.write("p, guest, *, *, assistant:read\np, member, *, *, chat:create\n")
        for m in memberships:
            fh.write(f"g, {m.user}, {m.role.value}, {m.workspace}\n")
        for g in grants:
            a = assistants[int(g.assistant[1:])]
            fh.write(f"p, {g.user}, {a.workspace}, {a.id}, assistant:read\n")
    world = World(
        InMemoryFacts(memberships=memberships, assistants=assistants, grants=grants), policy_file
    )
    for _ in range(256):
        # Half the queries ask about an assistant in the user's own workspace.
        i = rng.randrange(n)
        a = assistants[rng.randrange(n_asst)]
        if rng.random() < 0.5:
            a = assistants[(i % n_ws) % n_asst]
        world.queries.append((f"u{i}", a.workspace, a.id))
    return world


def measure(n: int, tmp: Path, model: Path, casbin_max: int, enforcer_max: int) -> dict[str, float]:
    world = build(n, tmp)
    settings = load_settings(overrides={"session": {"secrets": [SECRET], "workspace_claim": "ws"}})
    authorizer = Authorizer.from_settings(settings, facts=world.facts)
    uncached = Authorizer.from_settings(settings, facts=world.facts)
    uncached.credential_cache.max_entries = 0
    queries = world.queries
    principals = [Principal(user_id=u, kind=CredentialKind.SESSION) for u, _, _ in queries]
    requests = [
        RequestFacts.build(method="GET", path=f"/api/assistants/{a}") for _, _, a in queries
    ]
    now = time.time()

    def mint(user: str, ws: str) -> str:
        return encode_session_token({"sub": user, "ws": ws}, secret=SECRET, now=now)

    cookies = [
        RequestFacts.build(
            method="GET",
            path=f"/api/assistants/{a}",
            headers={"cookie": "authjs.session-token=" + mint(u, ws)},
        )
        for u, ws, a in queries
    ]
    counter = itertools.count()

    def access() -> None:
        i = next(counter) & 255
        authorizer.decide_access(
            principal=principals[i],
            action="assistant:read",
            resource_kind="assistant",
            resource_id=queries[i][2],
        )

    def http() -> None:
        i = next(counter) & 255
        authorizer.decide(requests[i], principal=principals[i])

    def http_cookie_cached() -> None:
        authorizer.decide(cookies[next(counter) & 255])

    def http_cookie_uncached() -> None:
        uncached.decide(cookies[next(counter) & 255])

    policy = authorizer.core.policy

    def table() -> None:
        policy.verdict("member", "active", "assistant:read", "-", "assistant", "private")

    def casbin_same_model() -> None:
        policy.enforcer.enforce("member", "active", "assistant:read", "-")

    for c in cookies:  # warm the credential cache
        authorizer.decide(c)
    row: dict[str, float] = {
        "n": n,
        "table_us": median_us(table, reps=3000, inner=50),
        "casbin_same_model_us": median_us(casbin_same_model, reps=300),
        "access_us": median_us(access, reps=3000),
        "http_us": median_us(http, reps=2000),
        "cookie_cached_us": median_us(http_cookie_cached, reps=2000),
        "cookie_uncached_us": median_us(http_cookie_uncached, reps=500),
    }
    if n <= casbin_max:
        t0 = time.perf_counter()
        enforcer = casbin.Enforcer(str(model), str(world.policy_file))
        row["enforcer_load_s"] = time.perf_counter() - t0
        t0 = time.perf_counter()
        fast = casbin.FastEnforcer(str(model), str(world.policy_file), cache_key_order=[1])
        row["fast_load_s"] = time.perf_counter() - t0
        # pycasbin's first enforce in a workspace (domain) builds that domain's role links.
        # Time one cold call, warm every workspace the questions touch, then ask pycasbin
        # the very same 256 questions as our core, in the same order.
        t0 = time.perf_counter()
        fast.enforce(*queries[0], "assistant:read")
        row["fast_cold_s"] = time.perf_counter() - t0
        for u, ws, a in queries:
            fast.enforce(u, ws, a, "assistant:read")
        k = itertools.count()
        # The plain Enforcer builds a domain's role links on its first enforce there (the
        # cold path: seconds at 10k); time one, then its warm steady state on the
        # questions of four workspaces (warming all 256 would take many minutes).
        few = [q for q in queries if q[1] in {w for _, w, _ in queries[:4]}][:16]

        def plain() -> None:
            u, ws, a = few[next(k) % len(few)]
            enforcer.enforce(u, ws, a, "assistant:read")

        def faster() -> None:
            u, ws, a = queries[next(k) & 255]
            fast.enforce(u, ws, a, "assistant:read")

        # The plain Enforcer scans every policy line: seconds per call at large N, so few reps.
        if n <= enforcer_max:
            t0 = time.perf_counter()
            enforcer.enforce(*few[0], "assistant:read")
            row["enforcer_cold_s"] = time.perf_counter() - t0
            for u, ws, a in few:
                enforcer.enforce(u, ws, a, "assistant:read")
            reps = 200 if n <= 1000 else (10 if n <= 10_000 else 3)
            row["enforcer_us"] = median_us(plain, reps=reps, inner=1, warmup=1)
        row["fast_us"] = median_us(faster, reps=500, inner=5)
    return row


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,10000,100000,1000000")
    parser.add_argument(
        "--casbin-max",
        type=int,
        default=1_000_000,
        help="largest N given to pycasbin (it loads 2N policy lines: ~a minute at 1M)",
    )
    parser.add_argument(
        "--enforcer-max",
        type=int,
        default=10_000,
        help="largest N given to the plain Enforcer (it scans every line with role lookups: "
        "minutes per call beyond 10k)",
    )
    args = parser.parse_args()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        model = tmp / "naive.conf"
        model.write_text(NAIVE_MODEL)
        for n in (int(s) for s in args.sizes.split(",")):
            row = measure(n, tmp, model, args.casbin_max, args.enforcer_max)
            rows.append(row)
            print("  ".join(f"{k}={v:,.2f}" for k, v in row.items()), flush=True)
    nan = float("nan")
    print()
    print(
        "| N | table µs | casbin enforce, same model µs | decide_access µs | decisions/s "
        "| HTTP decide µs | Enforcer µs | FastEnforcer µs | FastEnforcer ÷ decide_access |"
    )
    print("|---|---|---|---|---|---|---|---|---|")
    for r in rows:
        fast = r.get("fast_us", nan)
        print(
            f"| {int(r['n']):,} | {r['table_us']:.2f} | {r['casbin_same_model_us']:.1f} "
            f"| {r['access_us']:.2f} | {1e6 / r['access_us']:,.0f} | {r['http_us']:.2f} "
            f"| {r.get('enforcer_us', nan):,.1f} | {fast:.1f} | {fast / r['access_us']:.0f}x |"
        )
    print()
    print(
        "| N | session cookie, cached µs | session cookie, uncached µs "
        "| Enforcer cold s | FastEnforcer cold s | FastEnforcer load s |"
    )
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(
            f"| {int(r['n']):,} | {r['cookie_cached_us']:.2f} | {r['cookie_uncached_us']:.2f} "
            f"| {r.get('enforcer_cold_s', nan):.2f} | {r.get('fast_cold_s', nan):.2f} "
            f"| {r.get('fast_load_s', nan):.2f} |"
        )


if __name__ == "__main__":
    main()
