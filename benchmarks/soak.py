"""A soak under faults (issue 11 item 5) -- FIRST PIECE, WORK IN PROGRESS.

What this piece does (loopback only, bounded in time, stops by itself):
a throwaway PostgreSQL (tests/postgres_server.py), ``db upgrade``, facts, an API key,
2 x ``illumichat-authz serve`` on one ``[database]`` config, threads sending allowed,
denied and public requests to /auth, a membership removal and a key revocation mid-run,
and a PostgreSQL kill (``pg_ctl stop -m immediate``) and restart.  Oracle (time based):
an allow of a revoked credential later than commit + max_staleness_s + margin is a
WRONG ALLOW; any 5xx other than 503 is a failure; a 503 outside a fault window (+ margin)
is a failure.

TODO (not done yet): redis + [rate_limits], 2 x uvicorn + AuthzMiddleware, webhooks,
SIGKILL of an instance, revision-based oracle (x-authz-revision), policy publish/rollback
(``policy publish --help`` exists now), tests/fleet/test_soak.py, docs/CHANGELOG.
"""

from __future__ import annotations

import argparse
import collections
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from illumichat_authz.credentials.authjs import encode_session_token  # noqa: E402
from postgres_server import PostgresServer, _binary, free_port  # noqa: E402

CLI = [sys.executable, "-m", "illumichat_authz.cli"]
SECRET = "soak-secret-0123456789abcdef0123456789"
STALENESS = 5.0
MARGIN = 3.0


def cli(*args: str) -> str:
    return subprocess.run([*CLI, *args], check=True, capture_output=True, text=True).stdout


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--duration", type=float, default=60.0)
    parser.add_argument("--short", action="store_true")
    args = parser.parse_args()
    duration = 20.0 if args.short else args.duration
    work = Path(tempfile.mkdtemp(prefix="authz-soak-"))
    pg = PostgresServer()
    pg.start()
    procs: list[subprocess.Popen[bytes]] = []
    try:
        url = pg.create_database()
        config = work / "authz.toml"
        config.write_text(
            f'[session]\nsecrets = ["{SECRET}"]\n[database]\nurl = "{url}"\n'
            f"poll_interval_s = 0.5\nmax_staleness_s = {STALENESS}\n"
            "[api_keys]\ncache_ttl_s = 300\n"
        )
        cli("db", "upgrade", "--config", str(config))
        facts = work / "facts.json"
        facts.write_text(
            '{"memberships": [{"user": "bob", "workspace": "w1", "role": "member"},'
            ' {"user": "carol", "workspace": "w1", "role": "member"}],'
            ' "assistants": [{"id": "a1", "workspace": "w1", "visibility": "workspace",'
            ' "creator": "alice"}, {"id": "a2", "workspace": "w1", "visibility": "private",'
            ' "creator": "alice"}]}'
        )
        cli("facts", "load", "--config", str(config), str(facts))
        key = cli(
            "keys", "create", "--config", str(config), "--user", "carol", "--workspace", "w1"
        ).splitlines()[0]
        ports = [free_port(), free_port()]
        for p in ports:
            procs.append(
                subprocess.Popen(
                    [*CLI, "serve", "--config", str(config), "--port", str(p)],
                    stdout=subprocess.DEVNULL,
                    stderr=subprocess.DEVNULL,
                )
            )
        for p in ports:
            deadline = time.monotonic() + 30
            while True:
                try:
                    if httpx.get(f"http://127.0.0.1:{p}/readyz", timeout=1).status_code == 200:
                        break
                except httpx.HTTPError:
                    pass
                if time.monotonic() > deadline:
                    raise SystemExit(f"instance {p} never became ready")
                time.sleep(0.1)

        def cookie(user: str) -> dict[str, str]:
            token = encode_session_token({"sub": user}, secret=SECRET, now=time.time())
            return {"cookie": f"authjs.session-token={token}"}

        kinds = {
            "allowed": ("/api/assistants/a1", cookie("carol")),
            "denied": ("/api/assistants/a2", cookie("carol")),
            "revoked-membership": ("/api/assistants/a1", cookie("bob")),
            "revoked-key": (
                "/api/assistants",
                {"authorization": f"Bearer {key}", "x-workspace-id": "w1"},
            ),
        }
        revoked_at: dict[str, float] = {}
        faults: list[tuple[float, float]] = []
        stats: collections.Counter[tuple[str, int]] = collections.Counter()
        failures: list[str] = []
        last_allow: dict[str, float] = {}
        lock = threading.Lock()
        stop = time.monotonic() + duration

        def in_fault(t: float) -> bool:
            return any(a - 0.5 <= t <= b + MARGIN for a, b in faults) or (
                faults and faults[-1][1] == float("inf")
            )

        def worker(port: int) -> None:
            with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=5) as c:
                while time.monotonic() < stop:
                    for kind, (path, headers) in kinds.items():
                        t = time.monotonic()
                        try:
                            code = c.get(f"/auth{path}", headers=headers).status_code
                        except httpx.HTTPError:
                            code = 0
                        with lock:
                            stats[(kind, code)] += 1
                            if 200 <= code < 300:
                                last_allow[kind] = t
                            late = kind in revoked_at and t > revoked_at[kind] + STALENESS + MARGIN
                            if 200 <= code < 300 and late:
                                failures.append(f"WRONG ALLOW {kind} on {port}")
                            if kind == "denied" and 200 <= code < 300:
                                failures.append(f"WRONG ALLOW denied on {port}")
                            if code >= 500 and code != 503:
                                failures.append(f"{code} {kind} on {port}")
                            if (code == 503 or code == 0) and not in_fault(t):
                                failures.append(f"{code} outside a fault: {kind} on {port}")
                    time.sleep(0.005)

        threads = [threading.Thread(target=worker, args=(p,)) for p in ports for _ in range(2)]
        for th in threads:
            th.start()
        time.sleep(duration * 0.2)
        gone = work / "gone.json"
        gone.write_text('{"memberships": [{"user": "bob", "workspace": "w1", "role": "member"}]}')
        cli("facts", "remove", "--config", str(config), str(gone))
        revoked_at["revoked-membership"] = time.monotonic()
        cli("keys", "revoke", "--config", str(config), key)
        revoked_at["revoked-key"] = time.monotonic()
        time.sleep(duration * 0.2)
        faults.append((time.monotonic(), float("inf")))
        pg._run(_binary("pg_ctl"), "-D", str(pg.data), "-m", "immediate", "-w", "stop")
        time.sleep(min(5.0, duration * 0.1))
        pg.start()
        faults[-1] = (faults[-1][0], time.monotonic())
        for th in threads:
            th.join()
        print("statuses by kind:")
        for (kind, code), n in sorted(stats.items()):
            print(f"  {kind:20} {code}: {n}")
        print(f"requests served: {sum(stats.values())}")
        for kind, at in revoked_at.items():
            stale = max(0.0, last_allow.get(kind, 0.0) - at)
            print(f"longest staleness {kind}: {stale:.3f} s (bound {STALENESS} s)")
        for a, b in faults:
            print(f"fault window: PostgreSQL down {b - a:.2f} s")
        wrong = sum(1 for f in failures if f.startswith("WRONG ALLOW"))
        print(f"wrong allows: {wrong}")
        print(f"failures: {len(failures)}")
        for f in sorted(set(failures))[:20]:
            print(f"  {f}")
        return 1 if failures else 0
    finally:
        for p in procs:
            p.kill()
            p.wait()
        pg.remove()


if __name__ == "__main__":
    sys.exit(main())
