"""Decision core speed: our compiled policy vs pycasbin's Enforcer and FastEnforcer.

Run: .venv/bin/python benchmarks/bench_core.py [--sizes 100,10000,100000,1000000]

For each size N the data set has N memberships and N grants (N/10 workspaces, N/10
assistants). pycasbin gets the same data the obvious way (memberships as `g, user, role,
workspace` lines, grants as `p` lines) and answers "may this user read this assistant";
our core answers the full question (membership, visibility, grant, role) from in-memory
facts. Prints medians and ratios measured in this one run.
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
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
from illumichat_authz.policy import Attributes

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
m = g(r.sub, p.sub, r.dom) && (p.dom == "*" || r.dom == p.dom) && (p.obj == "*" || r.obj == p.obj) && r.act == p.act
"""

ROLES = [Role.OWNER, Role.ADMIN, Role.MEMBER, Role.GUEST]


def build(n: int, tmp: Path) -> tuple[InMemoryFacts, Path, Path, list[tuple[str, str, str]]]:
    rng = random.Random(n)
    n_ws = max(1, n // 10)
    n_asst = max(1, n // 10)
    memberships = [
        Membership(user=f"u{i}", workspace=f"w{i % n_ws}", role=ROLES[i % 4]) for i in range(n)
    ]
    assistants = [
        Assistant(
            id=f"a{j}",
            workspace=f"w{j % n_ws}",
            visibility=list(Visibility)[j % 3],
            creator=f"u{j}",
        )
        for j in range(n_asst)
    ]
    grants = [Grant(user=f"u{rng.randrange(n)}", assistant=f"a{rng.randrange(n_asst)}") for _ in range(n)]
    facts = InMemoryFacts(memberships=memberships, assistants=assistants, grants=grants)
    model = tmp / "naive.conf"
    model.write_text(NAIVE_MODEL)
    policy = tmp / f"naive-{n}.csv"
    with policy.open("w") as fh:
        for role, acts in (("guest", ["assistant:read"]), ("member", ["chat:create"])):
            for act in acts:
                fh.write(f"p, {role}, *, *, {act}\n")
        fh.write("g, member, guest, *\n")
        for m in memberships:
            fh.write(f"g, {m.user}, {m.role.value}, {m.workspace}\n")
        for g in grants:
            a = assistants[int(g.assistant[1:])]
            fh.write(f"p, {g.user}, {a.workspace}, {a.id}, assistant:read\n")
    queries = []
    for _ in range(256):
        i = rng.randrange(n)
        a = assistants[rng.randrange(n_asst)]
        queries.append((f"u{i}", a.workspace, a.id))
    return facts, model, policy, queries


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--sizes", default="100,10000,100000,1000000")
    parser.add_argument("--casbin-max", type=int, default=1_000_000, help="largest N for pycasbin")
    args = parser.parse_args()
    sizes = [int(s) for s in args.sizes.split(",")]
    settings = load_settings()
    rows = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        for n in sizes:
            facts, model, policy_file, queries = build(n, tmp)
            authorizer = Authorizer.from_settings(settings, facts=facts)
            policy = authorizer.core.policy
            principals = {u: Principal(user_id=u, kind=CredentialKind.SESSION) for u, _, _ in queries}
            k = iter(range(10**12))

            def attrs_lookup() -> None:
                policy.evaluate(Attributes("member", "active", "assistant:read", "-", "private"))

            def access() -> None:
                u, ws, a = queries[next(k) & 255]
                authorizer.decide_access(
                    principal=principals[u], action="assistant:read", resource_kind="assistant", resource_id=a
                )

            requests = [
                RequestFacts.build(method="GET", path=f"/api/assistants/{a}") for _, _, a in queries
            ]
            users = [principals[u] for u, _, _ in queries]

            def http() -> None:
                i = next(k) & 255
                authorizer.decide(requests[i], principal=users[i])

            def casbin_attrs() -> None:
                policy.enforcer.enforce("member", "active", "assistant:read", "-")

            row = {
                "n": n,
                "table_us": median_us(attrs_lookup, reps=3000, inner=50),
                "casbin_same_model_us": median_us(casbin_attrs, reps=300),
                "access_us": median_us(access, reps=3000),
                "http_us": median_us(http, reps=2000),
            }
            if n <= args.casbin_max:
                t0 = time.perf_counter()
                enforcer = casbin.Enforcer(str(model), str(policy_file))
                row["enforcer_load_s"] = time.perf_counter() - t0
                t0 = time.perf_counter()
                fast = casbin.FastEnforcer(str(model), str(policy_file), cache_key_order=[1])
                row["fast_load_s"] = time.perf_counter() - t0

                def plain() -> None:
                    u, ws, a = queries[next(k) & 255]
                    enforcer.enforce(u, ws, a, "assistant:read")

                def faster() -> None:
                    u, ws, a = queries[next(k) & 255]
                    fast.enforce(u, ws, a, "assistant:read")

                slow_reps = 200 if n <= 10_000 else 20
                row["enforcer_us"] = median_us(plain, reps=slow_reps, inner=1 if n > 10_000 else 5)
                # Warm FastEnforcer's per-domain cache for the queried workspaces first.
                for u, ws, a in queries:
                    fast.enforce(u, ws, a, "assistant:read")
                row["fast_us"] = median_us(faster, reps=500, inner=5)
            rows.append(row)
            print(_fmt(row), flush=True)
            del facts, authorizer
    print()
    print("| N | compiled table µs | casbin same model µs | core decide_access µs | core HTTP decide µs | pycasbin Enforcer µs | pycasbin FastEnforcer µs | FastEnforcer / core |")
    print("|---|---|---|---|---|---|---|---|")
    for r in rows:
        ratio = r["fast_us"] / r["access_us"] if "fast_us" in r else float("nan")
        print(
            f"| {r['n']:,} | {r['table_us']:.2f} | {r['casbin_same_model_us']:.1f} | {r['access_us']:.2f} | "
            f"{r['http_us']:.2f} | {r.get('enforcer_us', float('nan')):.1f} | {r.get('fast_us', float('nan')):.1f} | {ratio:.0f}x |"
        )
    sys.stdout.flush()


def _fmt(row: dict[str, float]) -> str:
    return "  ".join(f"{k}={v:.2f}" if isinstance(v, float) else f"{k}={v}" for k, v in row.items())


if __name__ == "__main__":
    main()
