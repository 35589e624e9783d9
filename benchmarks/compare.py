"""Before and after: the same measurements on two source trees, in one run, interleaved.

    .venv/bin/python benchmarks/compare.py --before ../baseline/src --after src [--quick]

The parent starts worker subprocesses for each tree (this interpreter, ``-I``, the tree's
``src`` first on ``sys.path`` and every other ``illumichat_authz`` on it dropped; a worker
whose ``illumichat_authz.__file__`` is not under its tree refuses to run); two per tree by
default, taking the tree's rounds in turn, since one process's own layout (hash seed,
addresses) can bias it by a few per cent. Both workers
build the same fixtures from files the parent writes once: a config TOML (read with
``load_settings``) and a facts JSON (read with ``load_facts_file``), plus the questions.
The parent then asks for rounds alternately (before, after, after, before, ...), so machine
noise falls on both trees alike; a round is a few timed batches of every measurement, GC
off (``_timing.py``). The report gives per tree the median and p99 of the batch means (µs
per call) and the after/before ratio of the medians.

Measured (issue 9's list): ``decide_access`` with in-memory facts; HTTP ``decide`` with the
principal given, with a cached Auth.js session cookie, with the credential cache off; the
ASGI middleware's added cost over a bare Starlette route (in-process ASGI calls, the
middleware app's batch minus the bare app's batch of the same round); a host's own sync
store (a class delegating every method of both ``Facts`` protocols to ``InMemoryFacts``)
against ``InMemoryFacts`` itself; ``adecide_access`` with an async store whose membership
lookup awaits ``asyncio.sleep(0)`` (its other lookups answer without suspending) against
the same call with sync facts, and how many times the rule steps ran (Python frames per
function of the package, counted once with ``sys.setprofile``). A measurement one tree
cannot run (an API it lacks) prints "n/a".
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import datetime as dt
import gc
import hashlib
import itertools
import json
import os
import platform
import random
import statistics
import subprocess
import sys
import tempfile
import time
import tomllib
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

HERE = Path(__file__).resolve().parent
SECRET = "compare-benchmark-secret-0123456789abcdef"
ROLES = ["owner", "admin", "member", "guest"]
VISIBILITIES = ["public", "workspace", "private"]
QUESTIONS = 256  # a power of two: the benchmarks cycle with `i & 255`
MIN_ROUNDS = 10

# (key, label, kind): "time" is µs per call; "delta" is a difference of two batches.
ROWS: list[tuple[str, str, str]] = [
    ("access", "`decide_access`, in-memory facts", "time"),
    ("http", "HTTP `decide`, principal given", "time"),
    ("cookie_cached", "HTTP `decide`, cached session cookie", "time"),
    ("cookie_uncached", "HTTP `decide`, uncached session cookie", "time"),
    ("asgi_bare", "bare Starlette route (ASGI, reference)", "time"),
    ("asgi_mw_delta", "ASGI middleware added, cached cookie", "delta"),
    ("asgi_mw_uncached_delta", "ASGI middleware added, uncached cookie", "delta"),
    ("host_access", "`decide_access`, host's own sync store", "time"),
    ("host_delta", "host's sync store minus `InMemoryFacts`", "delta"),
    ("async1_sync", "`adecide_access`, sync facts, `workspace:read` (one fact)", "time"),
    ("async1", "`adecide_access`, async store, its one fact awaited", "time"),
    ("async1_delta", "async store extra, one awaited fact", "delta"),
    ("async3_sync", "`adecide_access`, sync facts, `assistant:read`", "time"),
    ("async3", "`adecide_access`, async store, `assistant:read` (membership awaited)", "time"),
    ("async3_delta", "async store extra, `assistant:read`", "delta"),
]
#: Rows whose after/before ratio is held to "no slower than today (within 5 %)".
NO_SLOWER = ("access", "http", "cookie_cached", "cookie_uncached", "asgi_mw_delta")


# --- fixtures (parent): files both trees read ----------------------------------------------


def write_fixtures(tmp: Path, n: int) -> None:
    """``config.toml``, ``facts.json`` and ``questions.json`` in ``tmp`` (as bench_core.py)."""
    rng = random.Random(n)
    n_ws = max(1, n // 10)
    n_asst = max(1, n // 10)
    memberships = [
        {"user": f"u{i}", "workspace": f"w{i % n_ws}", "role": ROLES[i % 4]} for i in range(n)
    ]
    # The ASGI benchmark's caller: a member of w0 (u2 is a member of w2 when n_ws > 2).
    memberships.append({"user": "mw-user", "workspace": "w0", "role": "member"})
    assistants = [
        {
            "id": f"a{j}",
            "workspace": f"w{j % n_ws}",
            "visibility": VISIBILITIES[j % 3],
            "creator": f"u{j}",
        }
        for j in range(n_asst)
    ]
    grants = [
        {"user": f"u{rng.randrange(n)}", "assistant": f"a{rng.randrange(n_asst)}"} for _ in range(n)
    ]
    questions = []
    for _ in range(QUESTIONS):
        # Half the questions ask about an assistant in the user's own workspace.
        i = rng.randrange(n)
        a = assistants[rng.randrange(n_asst)]
        if rng.random() < 0.5:
            a = assistants[(i % n_ws) % n_asst]
        questions.append({"user": f"u{i}", "workspace": a["workspace"], "assistant": a["id"]})
    facts = {"memberships": memberships, "assistants": assistants, "grants": grants}
    (tmp / "facts.json").write_text(json.dumps(facts))
    (tmp / "questions.json").write_text(json.dumps(questions))
    (tmp / "config.toml").write_text(
        f'[session]\nsecrets = ["{SECRET}"]\nworkspace_claim = "workspace"\n'
    )


# --- worker ----------------------------------------------------------------------------------


class Unavailable(Exception):
    """This tree cannot run this measurement (reported as n/a, with the reason)."""


@dataclass
class Group:
    """Measurements timed side by side: every batch of each, in turn, ``samples`` times.

    ``deltas`` are (key, variant, base): the variant's batch minus the base's batch just
    before it, so that both see the same moment of the machine.
    """

    fns: dict[str, Callable[[], Any]]
    inner: int
    is_async: bool = False
    deltas: list[tuple[str, str, str]] = field(default_factory=list)


def _isolate(tree: Path) -> None:
    """``tree`` first on ``sys.path``; no other ``illumichat_authz`` reachable (the venv's
    editable install of /work/main appends its src through a .pth file)."""
    keep = []
    for entry in sys.path:
        try:
            if Path(entry).resolve() == tree or (Path(entry) / "illumichat_authz").is_dir():
                continue
        except OSError:
            pass
        keep.append(entry)
    sys.path[:] = [str(tree), *keep, str(HERE)]


def _status(decision: Any) -> int:
    return int(decision.status)


def _credential_caches(root: object, depth: int = 5) -> list[Any]:
    """Every ``CredentialCache`` reachable from ``root`` through the package's objects
    (the core holds it today; the authorizer may hold it after the change)."""
    found: list[Any] = []
    seen: set[int] = set()
    stack: list[tuple[object, int]] = [(root, 0)]
    while stack:
        obj, level = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if type(obj).__name__ == "CredentialCache":
            found.append(obj)
            continue
        if level >= depth:
            continue
        if isinstance(obj, tuple | list):
            values = list(obj)
        elif type(obj).__module__.startswith("illumichat_authz"):
            values = list(getattr(obj, "__dict__", {}).values())
            for cls in type(obj).__mro__:
                for slot in getattr(cls, "__slots__", ()):
                    with contextlib.suppress(AttributeError):
                        values.append(getattr(obj, slot))
        else:
            continue
        stack.extend((v, level + 1) for v in values)
    return found


def _without_cache(authorizer: Any) -> Any:
    caches = _credential_caches(authorizer)
    if not caches:
        raise Unavailable("no CredentialCache found to switch off")
    for cache in caches:
        cache.max_entries = 0
        entries = getattr(cache, "_entries", None)
        if isinstance(entries, dict):
            entries.clear()
    return authorizer


class Worker:
    def __init__(self, tree: Path, fixtures: Path) -> None:
        self.tree = tree
        self.fixtures = fixtures
        self.groups: dict[str, Group] = {}
        self.unavailable: dict[str, str] = {}
        self.statuses: dict[str, str] = {}
        self.evaluations: dict[str, Any] = {}
        self.loop = asyncio.new_event_loop()
        asyncio.set_event_loop(self.loop)
        import _timing  # benchmarks/, put on sys.path by _isolate (-I leaves it off)

        self.timing = _timing

    # The setup of every measurement; each may fail alone (n/a) without stopping the rest.
    def setup(self) -> dict[str, Any]:
        import illumichat_authz as ia

        pkg = Path(ia.__file__).resolve().parent
        if not pkg.is_relative_to(self.tree):
            raise SystemExit(f"illumichat_authz imported from {pkg}, not from {self.tree}")
        self.pkg = pkg
        self.ia = ia
        config = self.fixtures / "config.toml"
        with config.open("rb") as fh:
            self.secret = tomllib.load(fh)["session"]["secrets"][0]
        try:
            self.settings = ia.load_settings(config, environment=False)
        except TypeError:  # a tree without the keyword
            self.settings = ia.load_settings(config)
        self.facts = ia.load_facts_file(self.fixtures / "facts.json")
        self.raw = json.loads((self.fixtures / "facts.json").read_text())
        self.questions = json.loads((self.fixtures / "questions.json").read_text())
        self.authorizer = self.new_authorizer(self.facts)
        for name, build in (
            ("access", self.setup_access),
            ("http", self.setup_http),
            ("cookies", self.setup_cookies),
            ("asgi", self.setup_asgi),
            ("host", self.setup_host),
            ("async1", self.setup_async_one),
            ("async3", self.setup_async_assistant),
        ):
            try:
                build(name)
            except Exception as exc:  # reported as n/a
                self.unavailable[name] = f"{type(exc).__name__}: {exc}"
        for _ in range(2):  # warm every measurement (memos, caches, the CPU's)
            self.round(1, record=False)
        # Everything built so far is permanent: the collection after each round then
        # scans only that round's objects (a full one takes ~0.1 s with casbin loaded).
        gc.collect()
        gc.freeze()
        return {
            "file": str(Path(ia.__file__).resolve()),
            "python": platform.python_version(),
            "implementation": platform.python_implementation(),
            "unavailable": self.unavailable,
            "statuses": self.statuses,
            "evaluations": self.evaluations,
        }

    def new_authorizer(self, facts: Any) -> Any:
        return self.ia.Authorizer.from_settings(self.settings, facts=facts)

    def principal(self, user: str) -> Any:
        return self.ia.Principal(user_id=user, kind=self.ia.CredentialKind.SESSION)

    def fingerprint(self, key: str, statuses: list[int]) -> None:
        counts = Counter(statuses)
        digest = hashlib.sha256(repr(statuses).encode()).hexdigest()[:8]
        summary = " ".join(f"{s}x{c}" for s, c in sorted(counts.items()))
        self.statuses[key] = f"{summary} ({digest})"

    def add(self, name: str, group: Group) -> None:
        self.groups[name] = group

    # --- the measurements -------------------------------------------------------------
    def access_fn(self, authorizer: Any) -> Callable[[], Any]:
        qs = [(self.principal(q["user"]), q["assistant"], q["workspace"]) for q in self.questions]
        counter = itertools.count()
        decide_access = authorizer.decide_access

        def access() -> Any:
            principal, assistant, workspace = qs[next(counter) & 255]
            return decide_access(
                principal=principal,
                action="assistant:read",
                resource_kind="assistant",
                resource_id=assistant,
                workspace=workspace,
            )

        return access

    def setup_access(self, name: str) -> None:
        fn = self.access_fn(self.authorizer)
        self.fingerprint("access", [_status(fn()) for _ in range(QUESTIONS)])
        self.add(name, Group({"access": fn}, inner=50))

    def setup_http(self, name: str) -> None:
        ia = self.ia
        reqs = [
            (
                ia.RequestFacts.build(method="GET", path=f"/api/assistants/{q['assistant']}"),
                self.principal(q["user"]),
            )
            for q in self.questions
        ]
        counter = itertools.count()
        decide = self.authorizer.decide

        def http() -> Any:
            request, principal = reqs[next(counter) & 255]
            return decide(request, principal=principal)

        self.fingerprint("http", [_status(http()) for _ in range(QUESTIONS)])
        self.add(name, Group({"http": http}, inner=50))

    def cookie(self, user: str, workspace: str) -> str:
        from illumichat_authz.testing import minting

        return str(
            minting.session_cookie(
                user,
                secret=self.secret,
                workspace=workspace,
                workspace_claim="workspace",
                expires_in=86400,
            )
        )

    def setup_cookies(self, name: str) -> None:
        ia = self.ia
        reqs = [
            ia.RequestFacts.build(
                method="GET",
                path=f"/api/assistants/{q['assistant']}",
                headers={"cookie": self.cookie(q["user"], q["workspace"])},
            )
            for q in self.questions
        ]
        cached = self.authorizer
        self.uncached = _without_cache(self.new_authorizer(self.facts))
        c1, c2 = itertools.count(), itertools.count()

        def cookie_cached() -> Any:
            return cached.decide(reqs[next(c1) & 255])

        def cookie_uncached() -> Any:
            return self.uncached.decide(reqs[next(c2) & 255])

        statuses = [_status(cookie_cached()) for _ in range(QUESTIONS)]
        self.fingerprint("cookie", statuses)
        if [_status(cookie_uncached()) for _ in range(QUESTIONS)] != statuses:
            raise Unavailable("cached and uncached cookies decide differently")
        # The cache really is off: a decrypt costs several times a cache hit.
        hit = self.timing.median_us(cookie_cached, reps=20, inner=20)
        miss = self.timing.median_us(cookie_uncached, reps=20, inner=20)
        if miss < 2 * hit:
            raise Unavailable(f"uncached ({miss:.1f} µs) not slower than cached ({hit:.1f} µs)")
        self.add(
            name, Group({"cookie_cached": cookie_cached, "cookie_uncached": cookie_uncached}, 10)
        )

    def setup_asgi(self, name: str) -> None:
        from starlette.applications import Starlette
        from starlette.requests import Request
        from starlette.responses import JSONResponse
        from starlette.routing import Route

        from illumichat_authz.integrations.asgi import AuthzMiddleware

        async def chats(request: Request) -> JSONResponse:
            return JSONResponse({"ok": True})

        def app(authorizer: Any | None) -> Starlette:
            starlette = Starlette(routes=[Route("/api/chats", chats)])
            if authorizer is not None:
                starlette.add_middleware(AuthzMiddleware, authorizer=authorizer)
            return starlette

        cookie = self.cookie("mw-user", "w0")
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": "GET",
            "scheme": "http",
            "path": "/api/chats",
            "raw_path": b"/api/chats",
            "root_path": "",
            "query_string": b"",
            "headers": [(b"host", b"bench.local"), (b"cookie", cookie.encode())],
            "client": ("10.0.0.1", 5555),
            "server": ("127.0.0.1", 80),
            "state": {},
        }
        uncached = getattr(self, "uncached", None) or _without_cache(
            self.new_authorizer(self.facts)
        )
        apps = {
            "asgi_bare": app(None),
            "asgi_mw": app(self.authorizer),
            "asgi_mw_uncached": app(uncached),
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": b"", "more_body": False}

        def caller(asgi: Any) -> Callable[[], Any]:
            status = [0]

            async def send(message: dict[str, Any]) -> None:
                if message["type"] == "http.response.start":
                    status[0] = message["status"]

            async def one() -> int:
                await asgi(dict(scope), receive, send)
                return status[0]

            return one

        fns = {key: caller(a) for key, a in apps.items()}
        for key, fn in fns.items():
            got = self.loop.run_until_complete(fn())
            if got != 200:
                raise Unavailable(f"{key} answered {got}, not 200")
        self.add(
            name,
            Group(
                fns,
                inner=10,
                is_async=True,
                deltas=[
                    ("asgi_mw_delta", "asgi_mw", "asgi_bare"),
                    ("asgi_mw_uncached_delta", "asgi_mw_uncached", "asgi_bare"),
                ],
            ),
        )

    def setup_host(self, name: str) -> None:
        host = self.new_authorizer(HostStore(self.facts))
        base = self.access_fn(self.authorizer)
        fn = self.access_fn(host)
        statuses = [_status(fn()) for _ in range(QUESTIONS)]
        if statuses != [_status(base()) for _ in range(QUESTIONS)]:
            raise Unavailable("the host's store decides differently from InMemoryFacts")
        self.add(
            name,
            Group(
                {"host_base": base, "host_access": fn},
                inner=50,
                deltas=[("host_delta", "host_access", "host_base")],
            ),
        )

    def setup_async_one(self, name: str) -> None:
        qs = [(self.principal(q["user"]), q["workspace"]) for q in self.questions]

        def maker(authorizer: Any) -> Callable[[], Any]:
            counter = itertools.count()
            adecide_access = authorizer.adecide_access

            def one() -> Any:
                principal, workspace = qs[next(counter) & 255]
                return adecide_access(
                    principal=principal, action="workspace:read", workspace=workspace
                )

            return one

        members = {(m["user"], m["workspace"]) for m in self.raw["memberships"]}
        pick = next(
            i for i, q in enumerate(self.questions) if (q["user"], q["workspace"]) in members
        )
        self.async_group(name, "async1", maker, pick)

    def setup_async_assistant(self, name: str) -> None:
        qs = [(self.principal(q["user"]), q["assistant"], q["workspace"]) for q in self.questions]

        def maker(authorizer: Any) -> Callable[[], Any]:
            counter = itertools.count()
            adecide_access = authorizer.adecide_access

            def one() -> Any:
                principal, assistant, workspace = qs[next(counter) & 255]
                return adecide_access(
                    principal=principal,
                    action="assistant:read",
                    resource_kind="assistant",
                    resource_id=assistant,
                    workspace=workspace,
                )

            return one

        # For the count: a member of the workspace asking about a private assistant
        # (resource, membership and grant all asked), not its creator.
        members = {(m["user"], m["workspace"]) for m in self.raw["memberships"]}
        private = {
            a["id"]: a["creator"] for a in self.raw["assistants"] if a["visibility"] == "private"
        }
        pick = next(
            i
            for i, q in enumerate(self.questions)
            if (q["user"], q["workspace"]) in members
            and private.get(q["assistant"], q["user"]) != q["user"]
        )
        self.async_group(name, "async3", maker, pick)

    def async_group(
        self, name: str, key: str, maker: Callable[[Any], Callable[[], Any]], pick: int
    ) -> None:
        sync_fn = maker(self.authorizer)
        async_fn = maker(self.new_authorizer(HostAsyncStore(self.facts)))
        run = self.loop.run_until_complete
        statuses = [_status(run(sync_fn())) for _ in range(QUESTIONS)]
        if [_status(run(async_fn())) for _ in range(QUESTIONS)] != statuses:
            raise Unavailable("the async store decides differently from sync facts")
        self.fingerprint(key, statuses)
        # The counts, on question `pick` (each fn cycles: 256 calls bring it back).
        counts = {}
        for label, fn in (("sync", sync_fn), ("async", async_fn)):
            for _ in range(pick):
                run(fn())
            counts[label] = self.count_frames(lambda fn=fn: run(fn()))  # type: ignore[misc]
            for _ in range(QUESTIONS - pick - 1):
                run(fn())
        self.evaluations[key] = compare_counts(counts["sync"], counts["async"])
        self.add(
            name,
            Group(
                {f"{key}_sync": sync_fn, key: async_fn},
                inner=25,
                is_async=True,
                deltas=[(f"{key}_delta", key, f"{key}_sync")],
            ),
        )

    def count_frames(self, call: Callable[[], Any]) -> dict[str, int]:
        """Python frames per function of the package during ``call()`` (a generator or
        coroutine resumed counts once: its frame is the same object)."""
        prefix = str(self.pkg) + os.sep
        frames: dict[Any, list[Any]] = {}

        def profile(frame: Any, event: str, arg: Any) -> None:
            if event == "call" and frame.f_code.co_filename.startswith(prefix):
                seen = frames.setdefault(frame.f_code, [])
                if not any(f is frame for f in seen):
                    seen.append(frame)

        sys.setprofile(profile)
        try:
            call()
        finally:
            sys.setprofile(None)
        out: dict[str, int] = {}
        for code, seen in frames.items():
            module = Path(code.co_filename).resolve().relative_to(self.pkg).with_suffix("")
            out[f"{'.'.join(module.parts)}.{code.co_qualname}"] = len(seen)
        return out

    # --- one round ------------------------------------------------------------------------
    def round(self, samples: int, *, record: bool = True) -> dict[str, Any]:
        out: dict[str, list[float]] = {}
        errors: dict[str, str] = {}
        with self.timing.gc_off():
            for name, group in list(self.groups.items()):
                try:
                    self.run_group(group, samples, out)
                except Exception as exc:  # reported as n/a
                    errors[name] = f"{type(exc).__name__}: {exc}"
                    del self.groups[name]
                    for key in list(out):
                        if key in group.fns or key in {d[0] for d in group.deltas}:
                            del out[key]
        gc.collect()  # outside the timing
        return {"samples": out, "errors": errors} if record else {}

    def run_group(self, group: Group, samples: int, out: dict[str, list[float]]) -> None:
        run = self.loop.run_until_complete
        for _ in range(samples):
            got: dict[str, float] = {}
            for key, fn in group.fns.items():
                if group.is_async:
                    got[key] = run(_abatch_us(fn, group.inner))
                else:
                    got[key] = self.timing.batch_us(fn, group.inner)
                out.setdefault(key, []).append(got[key])
            for key, variant, base in group.deltas:
                out.setdefault(key, []).append(got[variant] - got[base])


async def _abatch_us(fn: Callable[[], Any], inner: int) -> float:
    t0 = time.perf_counter_ns()
    for _ in range(inner):
        await fn()
    return (time.perf_counter_ns() - t0) / inner / 1000


def compare_counts(sync: dict[str, int], async_: dict[str, int]) -> dict[str, Any]:
    """How many times the steps ran with the async store, against sync facts: the largest
    ratio of frames over the functions both ran (the rule steps: 1 with sync facts)."""
    ratios = {f: async_[f] / n for f, n in sync.items() if n and f in async_}
    most = max(ratios.values(), default=0.0)
    return {
        "evaluations": most,
        "replayed": sorted(f for f, r in ratios.items() if r == most and r > 1),
        "calls_sync": sum(sync.values()),
        "calls_async": sum(async_.values()),
    }


class HostStore:
    """A host's own synchronous store: every method of both ``Facts`` protocols (old:
    ``assistant``/``chat``/``has_grant(user, assistant_id)``; new: ``resource(kind, id)``/
    ``has_grant(user, kind, id)``), delegating to the tree's ``InMemoryFacts``, so each
    tree's core calls the methods it knows."""

    def __init__(self, inner: Any) -> None:
        self._facts = inner

    def membership(self, user: str, workspace: str) -> Any:
        return self._facts.membership(user, workspace)

    def resource(self, kind: str, id: str) -> Any:
        return self._facts.resource(kind, id)

    def assistant(self, assistant_id: str) -> Any:
        return self._facts.assistant(assistant_id)

    def chat(self, chat_id: str) -> Any:
        return self._facts.chat(chat_id)

    def has_grant(self, *args: str) -> bool:
        return bool(self._facts.has_grant(*args))


class HostAsyncStore:
    """The same, async: the membership lookup really suspends (``asyncio.sleep(0)``), the
    others return without suspending (answered from memory)."""

    def __init__(self, inner: Any) -> None:
        self._facts = inner

    async def membership(self, user: str, workspace: str) -> Any:
        await asyncio.sleep(0)
        return self._facts.membership(user, workspace)

    async def resource(self, kind: str, id: str) -> Any:
        return self._facts.resource(kind, id)

    async def assistant(self, assistant_id: str) -> Any:
        return self._facts.assistant(assistant_id)

    async def chat(self, chat_id: str) -> Any:
        return self._facts.chat(chat_id)

    async def has_grant(self, *args: str) -> bool:
        return bool(self._facts.has_grant(*args))


def worker_main(tree: str, fixtures: str) -> None:
    """Answer the parent on stdin/stdout, one JSON line per command."""
    tree_path = Path(tree).resolve()
    _isolate(tree_path)
    proto = sys.stdout
    sys.stdout = sys.stderr  # anything the library prints must not reach the protocol

    def reply(obj: object) -> None:
        proto.write(json.dumps(obj) + "\n")
        proto.flush()

    try:
        worker = Worker(tree_path, Path(fixtures))
        reply({"ready": worker.setup()})
    except BaseException as exc:  # the parent prints it and goes on
        reply({"error": f"{type(exc).__name__}: {exc}"})
        return
    for line in sys.stdin:
        command = json.loads(line)
        if command["cmd"] == "round":
            reply(worker.round(command["samples"]))
        else:
            return


# --- parent ----------------------------------------------------------------------------------


class Process:
    """One worker subprocess, spoken to in JSON lines."""

    def __init__(self, python: str, src: Path, fixtures: Path) -> None:
        env = {**os.environ, "PYTHONPATH": str(src)}
        self.stderr: IO[str] | None = tempfile.TemporaryFile("w+")  # noqa: SIM115 - see stop()
        self.proc = subprocess.Popen(
            [python, "-I", str(Path(__file__).resolve()), "--worker", str(src), str(fixtures)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=self.stderr,
            text=True,
            env=env,
        )

    def ask(self, command: dict[str, Any]) -> dict[str, Any]:
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(command) + "\n")
        self.proc.stdin.flush()
        return self.read()

    def read(self) -> dict[str, Any]:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"a worker died:\n{self.stderr_text()}")
        answer: dict[str, Any] = json.loads(line)
        return answer

    def stderr_text(self) -> str:
        if self.stderr is None:
            return ""
        self.stderr.seek(0)
        return self.stderr.read()[-4000:]

    def stop(self) -> None:
        if self.proc.poll() is None and self.proc.stdin:
            try:
                self.proc.stdin.write(json.dumps({"cmd": "quit"}) + "\n")
                self.proc.stdin.close()
            except OSError:
                pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        if self.stderr is not None:
            self.stderr.close()
            self.stderr = None


@dataclass
class Tree:
    """One source tree: its worker processes (rounds go to them in turn) and results."""

    label: str
    src: Path
    procs: list[Process] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    error: str | None = None
    samples: dict[str, list[float]] = field(default_factory=dict)
    rounds: list[dict[str, list[float]]] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)

    def start(self, python: str, fixtures: Path, workers: int) -> None:
        if not (self.src / "illumichat_authz" / "__init__.py").is_file():
            self.error = f"no illumichat_authz package under {self.src}"
            return
        self.procs = [Process(python, self.src, fixtures) for _ in range(workers)]

    def ready(self) -> None:
        """Wait for every worker's setup; the first one's facts stand for the tree."""
        for proc in self.procs:
            answer = proc.read()
            if "error" in answer:
                self.error = answer["error"]
                print(f"{self.label} ({self.src}) cannot run: {self.error}", file=sys.stderr)
                print(proc.stderr_text(), file=sys.stderr)
                return
            if not self.info:
                self.info = answer["ready"]
            else:  # all of them must measure the same things
                self.info["unavailable"].update(answer["ready"]["unavailable"])

    def round(self, samples: int) -> None:
        proc = self.procs[len(self.rounds) % len(self.procs)]
        answer = proc.ask({"cmd": "round", "samples": samples})
        self.rounds.append(answer["samples"])
        for key, values in answer["samples"].items():
            self.samples.setdefault(key, []).extend(values)
        self.errors.update(answer["errors"])

    def stop(self) -> None:
        for proc in self.procs:
            proc.stop()

    @property
    def ok(self) -> bool:
        return self.error is None


def p99(values: list[float]) -> float:
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[98]


def git_describe(src: Path) -> str:
    def git(*args: str) -> str:
        done = subprocess.run(
            ["git", "-C", str(src), *args], capture_output=True, text=True, check=False
        )
        return done.stdout.strip()

    commit = git("rev-parse", "--short", "HEAD")
    if not commit:
        return "not a git tree"
    dirty = git("status", "--porcelain", "--", ".")
    return commit + (" + uncommitted changes" if dirty else "")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def fmt(value: float | None, *, signed: bool = False) -> str:
    if value is None:
        return "n/a"
    return f"{value:+.2f}" if signed else f"{value:.2f}"


def median_of(tree: Tree, key: str) -> float | None:
    values = tree.samples.get(key)
    return statistics.median(values) if values else None


def ratio_interval(before: Tree, after: Tree, key: str, *, draws: int = 200) -> str:
    """A 90 % interval for after/before: the rounds resampled (a before round and the after
    round that followed it stay together), the pooled medians' ratio each time."""
    pairs = [
        (rb[key], ra[key])
        for rb, ra in zip(before.rounds, after.rounds, strict=False)
        if rb.get(key) and ra.get(key)
    ]
    if len(pairs) < MIN_ROUNDS:
        return ""
    rng = random.Random(0)
    ratios = []
    for _ in range(draws):
        drawn = [pairs[rng.randrange(len(pairs))] for _ in pairs]
        b = statistics.median([v for pb, _ in drawn for v in pb])
        a = statistics.median([v for _, pa in drawn for v in pa])
        if b > 0.05 and a > 0:
            ratios.append(a / b)
    if len(ratios) < draws // 2:
        return ""
    ratios.sort()
    return f"{ratios[len(ratios) // 20]:.2f}-{ratios[-1 - len(ratios) // 20]:.2f}"


def report(before: Tree, after: Tree, args: argparse.Namespace, started: float) -> Iterator[str]:
    labels = {key: label for key, label, _ in ROWS}
    ratios: dict[str, float] = {}
    yield ""
    yield (
        "| measurement | before median µs | after median µs | after/before "
        "| before p99 µs | after p99 µs |"
    )
    yield "|---|---|---|---|---|---|"
    for key, label, kind in ROWS:
        signed = kind == "delta"
        b, a = median_of(before, key), median_of(after, key)
        # A ratio of differences means something only while both are positive.
        ratio = "n/a" if a is None or b is None else "-"
        if a is not None and b is not None and b > 0.05 and a > 0:
            ratios[key] = a / b
            ratio = f"{a / b:.2f}"
        p99s = [
            fmt(p99(t.samples[key]), signed=signed) if t.samples.get(key) else "n/a"
            for t in (before, after)
        ]
        yield (
            f"| {label} | {fmt(b, signed=signed)} | {fmt(a, signed=signed)} | {ratio} "
            f"| {p99s[0]} | {p99s[1]} |"
        )
    for key, what in (("async1", "`workspace:read`"), ("async3", "`assistant:read`")):
        cells = [
            f"{ev['evaluations']:g}" if (ev := t.info.get("evaluations", {}).get(key)) else "n/a"
            for t in (before, after)
        ]
        yield (
            f"| rule steps run per decision, async store, {what} (1 with sync facts) "
            f"| {cells[0]} | {cells[1]} | | | |"
        )
    yield ""
    yield (
        "Medians and p99 of batch means (µs per call); a difference row is the variant's "
        "batch minus its base's batch of the same round. Rule steps: Python frames of the "
        "most replayed function of the package in one decision, over the sync run's."
    )

    intervals = {key: ratio_interval(before, after, key) for key, _, _ in ROWS}
    yield ""
    yield "after/before, 90 % interval (bootstrap over rounds; the noise to expect):"
    for key, label, _kind in ROWS:
        if intervals[key]:
            yield f"  {intervals[key]}  {label}"

    yield ""
    yield "Checks (issue 9's numbers):"
    for key in NO_SLOWER:
        if key in ratios:
            verdict = "ok" if ratios[key] <= 1.05 else "SLOWER than 1.05"
            interval = f", interval {intervals[key]}" if intervals[key] else ""
            yield f"  {labels[key]}: {ratios[key]:.2f} ({verdict}{interval})"
    for tree in (before, after):
        host = median_of(tree, "host_delta")
        if host is not None:
            yield f"  {tree.label}: host's sync store minus InMemoryFacts {host:+.2f} µs (<= 0.3)"
    for key in ("async1", "async3"):
        for tree in (before, after):
            ev = tree.info.get("evaluations", {}).get(key)
            if ev:
                steps = ", ".join(ev["replayed"]) or "none"
                yield (
                    f"  {tree.label}, {key}: steps ran {ev['evaluations']:g}x with the async "
                    f"store (most replayed: {steps}); package frames {ev['calls_sync']} "
                    f"sync, {ev['calls_async']} async"
                )
    mine, theirs = before.info.get("statuses", {}), after.info.get("statuses", {})
    for what in sorted(set(mine) & set(theirs)):
        same = "same" if mine[what] == theirs[what] else "DIFFER"
        yield f"  decisions, {what}: {same} (before {mine[what]}; after {theirs[what]})"
    unavailable = [
        f"  {tree.label}: {what}: {why}"
        for tree in (before, after)
        for what, why in {**tree.info.get("unavailable", {}), **tree.errors}.items()
    ] + [f"  {tree.label}: the whole tree: {tree.error}" for tree in (before, after) if tree.error]
    if unavailable:
        yield ""
        yield "n/a because:"
        yield from unavailable

    yield ""
    yield "Machine and run:"
    load = os.getloadavg()
    yield f"- date: {dt.datetime.now(dt.UTC):%Y-%m-%d %H:%M} UTC"
    yield (
        f"- CPU: {os.cpu_count()} logical CPUs ({len(os.sched_getaffinity(0))} usable), "
        f"{cpu_model()}; load average {load[0]:.2f} / {load[1]:.2f} / {load[2]:.2f} at the end"
    )
    for tree in (before, after):
        python = tree.info.get("python", "?")
        where = tree.info.get("file", "not imported")
        yield f"- {tree.label}: {tree.src} ({git_describe(tree.src)}), Python {python}, {where}"
    yield (
        f"- {len(after.rounds or before.rounds)} rounds x {args.samples} batches per "
        f"measurement and tree, interleaved, {args.workers} worker processes per tree; "
        f"{args.size:,} memberships and grants, "
        f"{QUESTIONS} questions; {time.time() - started:.0f} s in all"
    )


def parent_main(args: argparse.Namespace) -> int:
    started = time.time()
    before = Tree("before", Path(args.before).resolve())
    after = Tree("after", Path(args.after).resolve())
    trees = (before, after)
    with tempfile.TemporaryDirectory(prefix="compare-") as tmp:
        fixtures = Path(tmp)
        write_fixtures(fixtures, args.size)
        try:
            for tree in trees:
                tree.start(args.python, fixtures, args.workers)
            for tree in trees:  # all set up at once (imports, policy compile, minting)
                tree.ready()
            if not any(t.ok for t in trees):
                return 1
            print(
                f"timing for {args.seconds:.0f} s: before {before.src}, after {after.src}",
                file=sys.stderr,
                flush=True,
            )
            t0 = last = time.monotonic()
            while len(after.rounds or before.rounds) < args.max_rounds and (
                time.monotonic() - t0 < args.seconds
                or len(after.rounds or before.rounds) < MIN_ROUNDS
            ):
                # before, after, after, before, ...: neither tree always goes first.
                for tree in trees if len(after.rounds) % 2 == 0 else trees[::-1]:
                    if tree.ok:
                        tree.round(args.samples)
                if time.monotonic() - last > 15:
                    last = time.monotonic()
                    done = len(after.rounds or before.rounds)
                    print(f"  {done} rounds, {last - t0:.0f} s", file=sys.stderr, flush=True)
        finally:
            for tree in trees:
                tree.stop()
    for line in report(before, after, args, started):
        print(line)
    return 0


def main() -> None:
    if len(sys.argv) == 4 and sys.argv[1] == "--worker":
        worker_main(sys.argv[2], sys.argv[3])
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", required=True, help="the baseline tree's src directory")
    parser.add_argument("--after", required=True, help="the changed tree's src directory")
    parser.add_argument(
        "--seconds", type=float, default=None, help="time spent timing (default 120; --quick 15)"
    )
    parser.add_argument("--max-rounds", type=int, default=10**9, help="stop after this many")
    parser.add_argument("--samples", type=int, default=3, help="batches per measurement a round")
    parser.add_argument("--size", type=int, default=1000, help="memberships and grants")
    parser.add_argument("--quick", action="store_true", help="a ~30 s look")
    parser.add_argument("--python", default=sys.executable, help="the workers' interpreter")
    parser.add_argument(
        "--workers",
        type=int,
        default=None,
        help="worker processes per tree, taking rounds in turn (default 2, --quick 1): a "
        "process's own layout (hash seed, addresses) can bias it by a few per cent",
    )
    args = parser.parse_args()
    if args.seconds is None:
        args.seconds = 15.0 if args.quick else 120.0
    if args.workers is None:
        args.workers = 1 if args.quick else 2
    raise SystemExit(parent_main(args))


if __name__ == "__main__":
    main()
