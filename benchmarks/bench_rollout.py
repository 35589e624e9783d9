"""Policy rollout: how long a swap pauses decisions, and how soon every instance of a
fleet enforces a published version, in one run.

    .venv/bin/python benchmarks/bench_rollout.py [--quick]

- swap pause: one thread decides (``decide_access``, in memory) back to back while another
  swaps two compiled policies every millisecond; the per-decision latency is compared with
  the same loop without swaps (same run), and the swap itself is timed;
- propagation: a throwaway PostgreSQL (tests/postgres_server.py) and 4 instance processes
  (tests/fleet_worker.py, ``[policies] source = "database"``); two versions are staged
  (each instance compiles them off to the side), then activated in turn: from just
  before the activating transaction to the slowest instance's swap (``CLOCK_MONOTONIC``,
  shared by every process), and the same for a rollback.
"""

from __future__ import annotations

import argparse
import platform
import shutil
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
sys.path.insert(0, str(HERE.parent / "tests"))
sys.path.insert(0, str(HERE.parent / "tests" / "stores" / "sql"))

from _timing import pct  # noqa: E402
from test_fleet_processes import Instance, write_config  # noqa: E402

from illumichat_authz import Authorizer, CredentialKind, Principal, Settings  # noqa: E402
from illumichat_authz.compile import build_core  # noqa: E402
from illumichat_authz.rollout import compile_candidate, policy_files  # noqa: E402
from illumichat_authz.stores.sql import migrate  # noqa: E402
from illumichat_authz.stores.sql.engine import create_engine  # noqa: E402
from illumichat_authz.stores.sql.policy_versions import PolicyVersions  # noqa: E402
from illumichat_authz.testing import FactsBuilder  # noqa: E402
from postgres_server import PostgresServer  # noqa: E402

POLICIES = HERE.parent / "policies"
ALICE = Principal(user_id="alice", kind=CredentialKind.SESSION)


def variant(tmp: Path) -> Path:
    target = tmp / "v2"
    if target.exists():
        return target
    shutil.copytree(POLICIES, target)
    shutil.rmtree(target / "tests")
    csv = target / "policy.csv"
    csv.write_text(
        csv.read_text().replace(
            "p, member, active, settings:read, *\n", "p, admin, active, settings:read, *\n"
        )
    )
    return target


def swap_pause(tmp: Path, seconds: float) -> None:
    settings = Settings.model_validate({"policies": {"dir": str(POLICIES)}})
    old = build_core(settings)
    new = compile_candidate(settings, variant(tmp))
    builder = FactsBuilder()
    builder.workspace("w1").member("alice", role="member")
    authz = Authorizer(core=old, facts=builder.facts)

    def loop(swapping: bool) -> list[float]:
        stop = threading.Event()
        swaps: list[float] = []

        def swapper() -> None:
            while not stop.is_set():
                t = time.perf_counter_ns()
                authz.core = new if authz.core is old else old
                swaps.append((time.perf_counter_ns() - t) / 1000)
                time.sleep(0.001)

        thread = threading.Thread(target=swapper) if swapping else None
        if thread is not None:
            thread.start()
        samples: list[float] = []
        deadline = time.perf_counter() + seconds
        clock = time.perf_counter_ns
        while time.perf_counter() < deadline:
            t = clock()
            authz.decide_access(principal=ALICE, action="settings:read", workspace="w1")
            samples.append((clock() - t) / 1000)
        stop.set()
        if thread is not None:
            thread.join()
            print(f"  swaps: {len(swaps):,}, one swap p50 {statistics.median(swaps):.2f} µs")
        return samples

    quiet = loop(False)
    swapping = loop(True)
    print("| decisions | p50 | p99 | p99.9 | max | n |")
    print("|---|---|---|---|---|---|")
    for label, s in (("no swap", quiet), ("a swap every ms", swapping)):
        print(
            f"| {label} | {statistics.median(s):.2f} µs | {pct(s, 0.99):.2f} µs | "
            f"{pct(s, 0.999):.2f} µs | {max(s):,.0f} µs | {len(s):,} |"
        )
    print(f"  p99 with swaps / without: {pct(swapping, 0.99) / pct(quiet, 0.99):.2f}")


def propagation(tmp: Path, rounds: int, n: int) -> None:
    server = PostgresServer()
    server.start()
    fleet: list[Instance] = []
    try:
        url = server.create_database()
        config = write_config(tmp / "authz.toml", url, poll=30.0)
        config.write_text(
            config.read_text()
            + f'[policies]\ndir = "{POLICIES}"\nsource = "database"\nwatch_interval_s = 30\n'
        )
        engine = create_engine(url)
        migrate.upgrade(engine)
        versions = PolicyVersions(engine)
        settings = Settings.model_validate({"policies": {"dir": str(POLICIES)}})
        two = variant(tmp)
        ids = []
        for directory in (POLICIES, two):
            files = policy_files(settings, directory)
            ids.append(
                versions.stage(files, compile_candidate(settings, directory).policy_revision)
            )
        versions.activate(ids[0])
        fleet = [Instance(config) for _ in range(n)]
        # Both versions prepared everywhere: stage the other one and wait for it.
        versions.stage_existing(ids[1])
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            live = versions.instances()
            if len(live) == n and all(i.prepared == ids[1] for i in live):
                break
            time.sleep(0.01)
        lags: list[float] = []
        writes: list[float] = []
        from_start: list[float] = []
        for r in range(rounds):
            target = ids[(r + 1) % 2]
            before = {id(i): len(i.ask(op="policy")["history"]) for i in fleet}
            t0 = time.monotonic_ns()
            versions.activate(target)
            committed = time.monotonic_ns()
            slowest = -(10**12)
            for inst in fleet:
                for _ in range(2000):
                    history = inst.ask(op="policy")["history"]
                    if len(history) > before[id(inst)]:
                        break
                    time.sleep(0.001)
                version, _rev, at = history[-1]
                assert version == target, (version, target)
                slowest = max(slowest, at - committed)
            lags.append(slowest / 1e6)
            from_start.append((slowest + committed - t0) / 1e6)
            writes.append((committed - t0) / 1e6)
        for label, s in (
            ("the activating transaction ", writes),
            (f"its commit returning to all {n} instances swapped (< 0: before)", lags),
            (f"its start to all {n} instances swapped", from_start),
        ):
            print(f"| {label} | {statistics.median(s):.2f} ms | {pct(s, 0.99):.2f} ms | "
                  f"{max(s):.2f} ms | {len(s)} |")  # fmt: skip
        engine.dispose()
    finally:
        for inst in fleet:
            inst.close()
        server.remove()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--quick", action="store_true")
    args = parser.parse_args()
    print(f"# bench_rollout ({platform.python_version()}, {platform.machine()})")
    with tempfile.TemporaryDirectory() as tmp:
        print("## swap pause")
        swap_pause(Path(tmp), 1.0 if args.quick else 3.0)
        print("## propagation (4 instances, PostgreSQL notifications; the 30 s poll is off)")
        print("| measured | p50 | p99 | max | rounds |")
        print("|---|---|---|---|---|")
        propagation(Path(tmp), 10 if args.quick else 100, 4)


if __name__ == "__main__":
    main()
