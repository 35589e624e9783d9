"""A soak under faults: a fleet of 4 instances on one PostgreSQL and one Redis, under load,
while facts and policies change and PostgreSQL, Redis and one instance are killed.

Loopback only, bounded in time (``--duration``) and requests (``--max-requests``), stops by
itself and kills every child on the way out. The fleet: 2 x ``illumichat-authz serve``
(forward auth, ``/auth`` + the original path) and 2 x uvicorn running ``soak_app`` (a small
app behind ``AuthzMiddleware``), all on one TOML file with ``[database]``, ``[policies]
source = "database"`` and ``[rate_limits]`` on Redis. Threads send a mix of allowed, denied,
public, webhook (signed with Twilio's own ``RequestValidator``) and rate-limited requests.
Meanwhile the script removes a membership, revokes an API key, publishes a candidate policy
and rolls it back, kills PostgreSQL (``pg_ctl stop -m immediate``) and Redis (SIGKILL) and
restarts them on their ports, and SIGKILLs one instance and restarts it.

Every answer is checked afterwards against an oracle at the revisions the answer reports
(``x-authz-revision``, ``x-authz-policy-revision``): an allow at a facts revision at or past
a revocation is a WRONG ALLOW, and so is an allow of the flipped request under the policy
that denies it. A forged webhook, and any webhook on forward auth (which never sees the
body), must be 403 with reason ``invalid_signature`` (``x-authz-problem`` from ``serve``, the
problem+json body from the middleware). An answer under the previous policy revision sent
to an instance after it had answered under the new one fails. 5xx other than 503 fail, 503
fails outside the fault window of a dependency the request needs (503s are counted per
window), and a refused connection fails unless that instance was down.

    .venv/bin/python benchmarks/soak.py            # the full run, about 3 minutes
    .venv/bin/python benchmarks/soak.py --short    # CI's, under 45 s with start-up
"""

from __future__ import annotations

import argparse
import collections
import contextlib
import itertools
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
from twilio.request_validator import RequestValidator

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "tests"))

from illumichat_authz.credentials.authjs import encode_session_token  # noqa: E402
from postgres_server import PostgresServer, _binary, free_port  # noqa: E402
from redis_server import RedisServer  # noqa: E402

CLI = [sys.executable, "-m", "illumichat_authz.cli"]
HOST = "127.0.0.1"
SECRET = "soak-secret-0123456789abcdef0123456789"
TWILIO_TOKEN = "soak-twilio-token-0123456789abcdef"
PUBLIC_URL = "https://soak.example.test"
STALENESS_S = 2.0  # [database] max_staleness_s
MARGIN_S = 2.0  # on top of the staleness bound: scheduling on a busy 2-CPU machine
GRACE_S = 6.0  # after a fault ends: 503s still expected while the instances reconnect
TAIL_S = 3.0  # load at least this long after the last step
LIMIT, WINDOW_S = 5, 60.0  # the ticket route's rate_limit = "5/minute"
DENY = frozenset({401, 403, 404})


# --- The fleet ----------------------------------------------------------------------------


def cli(*args: str) -> str:
    """Run the library's command line; its stdout (a failure raises with its output)."""
    done = subprocess.run([*CLI, *args], capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(args[:2])} failed: {done.stdout}{done.stderr}")
    return done.stdout


@dataclass
class Instance:
    """One decision point: ``serve`` (forward auth) or uvicorn + ``AuthzMiddleware``."""

    name: str
    flavour: str  # "serve" or "asgi"
    config: Path
    log: Path
    port: int = field(default_factory=free_port)
    proc: subprocess.Popen[bytes] | None = None

    def argv(self) -> list[str]:
        if self.flavour == "serve":
            return [*CLI, "serve", "--config", str(self.config), "--host", HOST,
                    "--port", str(self.port), "--log-level", "warning"]  # fmt: skip
        return [sys.executable, "-m", "uvicorn", "soak_app:create_app", "--factory",
                "--app-dir", str(ROOT / "benchmarks"), "--host", HOST, "--port",
                str(self.port), "--lifespan", "off", "--no-access-log",
                "--log-level", "warning"]  # fmt: skip

    def start(self) -> None:
        env = {**os.environ, "SOAK_AUTHZ_CONFIG": str(self.config)}
        with self.log.open("ab") as out:
            self.proc = subprocess.Popen(self.argv(), stdout=out, stderr=out, env=env)

    def kill(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait(timeout=10)

    def wait_ready(self, timeout_s: float = 30.0) -> None:
        """Until the instance answers a public request (``serve``: and /readyz is 200)."""
        path = "/readyz" if self.flavour == "serve" else "/api/widget/a1/config"
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.proc is not None and self.proc.poll() is not None:
                raise RuntimeError(f"{self.name} exited: {self.log.read_text()[-2000:]}")
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"http://{HOST}:{self.port}{path}", timeout=1).status_code == 200:
                    return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} never became ready: {self.log.read_text()[-2000:]}")


def write_config(path: Path, database_url: str, redis_url: str) -> None:
    path.write_text(
        f'[session]\nsecrets = ["{SECRET}"]\n'
        f'[database]\nurl = "{database_url}"\npoll_interval_s = 0.5\n'
        f"max_staleness_s = {STALENESS_S}\n"
        '[policies]\nsource = "database"\nwatch_interval_s = 0.5\n'
        f'[rate_limits]\nstorage = "{redis_url}"\ntimeout_s = 0.5\n'
        "[api_keys]\ncache_ttl_s = 300\n"
        f'[twilio]\nauth_tokens = ["{TWILIO_TOKEN}"]\npublic_base_url = "{PUBLIC_URL}"\n'
    )


FACTS = (
    '{"memberships": [{"user": "bob", "workspace": "w1", "role": "member"},'
    ' {"user": "carol", "workspace": "w1", "role": "member"}],'
    ' "assistants": [{"id": "a1", "workspace": "w1", "visibility": "workspace",'
    ' "creator": "alice"}, {"id": "a2", "workspace": "w1", "visibility": "private",'
    ' "creator": "alice"}]}'
)
#: The candidate policy's one change: members may read billing (the base denies it).
FLIP_RULE = "p, member, active, billing:read, *\n"


def candidate_policy(work: Path) -> Path:
    """A copy of policies/ (without its test tables) where the flipped request is allowed."""
    cand = work / "candidate"
    cand.mkdir()
    for name in ("model.conf", "policy.csv", "routes.toml"):
        shutil.copy(ROOT / "policies" / name, cand / name)
    with (cand / "policy.csv").open("a") as f:
        f.write(FLIP_RULE)
    return cand


def policy_revision(output: str) -> str:
    """The policy revision ``policy publish`` / ``rollback`` printed."""
    found = re.search(r"\(policy ([^)]+)\)", output)
    if found is None:
        raise RuntimeError(f"no policy revision in: {output}")
    return found.group(1)


def facts_revision(database_url: str) -> int:
    """The database's facts revision: the one the change just committed was given."""
    url = database_url.replace("postgresql+psycopg://", "postgresql://")
    with psycopg.connect(url) as conn:
        row = conn.execute("SELECT revision FROM authz_revision").fetchone()
    return int(row[0]) if row else 0


# --- Requests and answers -----------------------------------------------------------------


@dataclass(frozen=True)
class Probe:
    """One kind of request, and which dependencies may make it 503."""

    kind: str
    method: str
    path: str
    headers: dict[str, str]
    form: dict[str, str] | None = None
    needs: frozenset[str] = frozenset()  # "postgres", "redis"


@dataclass(frozen=True)
class Answer:
    t0: float  # sent
    t1: float  # answered (or failed)
    instance: str
    flavour: str
    kind: str
    status: int  # 0: the connection failed
    facts: int | None
    policy: str | None
    reason: str | None = None  # a denial's: the problem document's "reason"


def session_cookie(user: str) -> dict[str, str]:
    token = encode_session_token({"sub": user}, secret=SECRET, now=time.time())
    return {"cookie": f"authjs.session-token={token}"}


def signed_webhook(path: str, form: dict[str, str], forged: bool) -> dict[str, str]:
    """The X-Twilio-Signature Twilio would send for ``form`` posted to the public URL."""
    token = "not-the-token" if forged else TWILIO_TOKEN
    signature = RequestValidator(token).compute_signature(PUBLIC_URL + path, form)
    return {"x-twilio-signature": signature}


def probes(api_key: str) -> list[Probe]:
    facts = frozenset({"postgres"})
    sms = {"From": "+15550001111", "To": "+15550002222", "Body": "hello", "MessageSid": "SM1"}
    hook = "/api/sms/webhook/a1"
    return [
        Probe("allowed", "GET", "/api/assistants/a1", session_cookie("carol"), needs=facts),
        Probe("denied", "GET", "/api/assistants/a2", session_cookie("carol"), needs=facts),
        Probe("membership", "GET", "/api/assistants/a1", session_cookie("bob"), needs=facts),
        Probe("api-key", "GET", "/api/assistants",
              {"authorization": f"Bearer {api_key}", "x-workspace-id": "w1"}, needs=facts),
        Probe("policy-flip", "GET", "/api/workspaces/w1/billing", session_cookie("carol"),
              needs=facts),
        Probe("public", "GET", "/api/widget/a1/config", {}),
        Probe("ticket", "POST", "/api/widget/tickets/create", {}, needs=frozenset({"redis"})),
        Probe("webhook", "POST", hook, signed_webhook(hook, sms, forged=False), form=sms),
        Probe("webhook-forged", "POST", hook, signed_webhook(hook, sms, forged=True), form=sms),
    ]  # fmt: skip


def send(client: httpx.Client, instance: Instance, probe: Probe) -> Answer:
    """One request to ``instance`` (forward auth: the original path below /auth)."""
    path = f"/auth{probe.path}" if instance.flavour == "serve" else probe.path
    t0 = time.monotonic()
    try:
        response = client.request(probe.method, path, headers=probe.headers, data=probe.form)
    except httpx.HTTPError:
        return Answer(t0, time.monotonic(), instance.name, instance.flavour, probe.kind, 0,
                      None, None)  # fmt: skip
    facts = response.headers.get("x-authz-revision") or None
    return Answer(t0, time.monotonic(), instance.name, instance.flavour, probe.kind,
                  response.status_code, int(facts) if facts else None,
                  response.headers.get("x-authz-policy-revision") or None,
                  denial_reason(response))  # fmt: skip


def denial_reason(response: httpx.Response) -> str | None:
    """A denial's reason: ``serve`` puts its problem document in ``x-authz-problem`` (a
    proxy drops the body), the middleware answers with it as the problem+json body."""
    if response.status_code < 400:
        return None
    document = response.headers.get("x-authz-problem") or response.text
    try:
        problem = json.loads(document)
    except ValueError:
        return None
    if not isinstance(problem, dict):
        return None
    reason = problem.get("reason", problem.get("code"))
    return str(reason) if reason is not None else None


class Load:
    """Threads sending every probe in turn to one instance each, until told to stop."""

    def __init__(self, fleet: list[Instance], kinds: list[Probe], max_requests: int) -> None:
        self.fleet, self.kinds, self.max_requests = fleet, kinds, max_requests
        self.answers: list[Answer] = []
        self.stop = threading.Event()
        self._lock = threading.Lock()
        self._threads = [
            threading.Thread(target=self._run, args=(inst, n), daemon=True)
            for inst in fleet
            for n in range(2)
        ]

    def start(self) -> None:
        for thread in self._threads:
            thread.start()

    def join(self) -> None:
        self.stop.set()
        for thread in self._threads:
            thread.join(timeout=15)

    def _run(self, instance: Instance, offset: int) -> None:
        base = f"http://{HOST}:{instance.port}"
        order = itertools.cycle(self.kinds[offset:] + self.kinds[:offset])
        with httpx.Client(base_url=base, timeout=5) as client:
            while not self.stop.is_set():
                answer = send(client, instance, next(order))
                with self._lock:
                    self.answers.append(answer)
                    if len(self.answers) >= self.max_requests:
                        self.stop.set()
                time.sleep(0.05 if answer.status == 0 else 0.002)


# --- What happened when -------------------------------------------------------------------


@dataclass
class Change:
    """A fact change: committed at ``revision``; the probe it turns from allow to deny."""

    name: str
    kind: str
    revision: int
    at: float


@dataclass
class PolicySwitch:
    name: str
    revision: str
    at: float  # when the command returned
    began: float  # when it was started (its commit may reach an instance before it returns)


@dataclass
class Fault:
    name: str
    needs: str  # the dependency: "postgres", "redis", or "instance"
    start: float
    restarting: float = float("inf")  # the restart began: nothing can be served before
    end: float = float("inf")  # restart done (instance: ready again)
    instance: str | None = None

    def covers(self, answer: Answer) -> bool:
        """Whether ``answer`` overlaps the window where a 503 is expected."""
        return answer.t1 >= self.start - 0.2 and answer.t0 <= self.end + GRACE_S

    def covers_down(self, answer: Answer) -> bool:
        """An instance's refused connections: between its kill and its restart being ready."""
        return answer.t1 >= self.start and answer.t0 <= self.end + 0.5


@dataclass
class Timeline:
    changes: list[Change] = field(default_factory=list)
    policies: list[PolicySwitch] = field(default_factory=list)
    faults: list[Fault] = field(default_factory=list)
    base_policy: str = ""
    candidate_policy: str = ""
    t0: float = 0.0  # the load's start: what the +N.NNs in the problems count from


# --- The oracle ---------------------------------------------------------------------------


def problems(answer: Answer, probe: Probe, line: Timeline) -> list[str]:
    """Everything wrong with one answer; an empty list when it is right."""
    where = f"{answer.kind} on {answer.instance} at +{answer.t0 - line.t0:.2f}s"
    status = answer.status
    if status == 0:
        down = any(f.instance == answer.instance and f.covers_down(answer) for f in line.faults)
        return [] if down else [f"connection failed outside its kill: {where}"]
    if status >= 500 and status != 503:
        return [f"{status}: {where}"]
    if status == 503:
        ok = any(f.needs in probe.needs and f.covers(answer) for f in line.faults)
        return [] if ok else [f"503 outside a fault window: {where}"]
    if answer.policy is not None and answer.policy not in (line.base_policy,
                                                           line.candidate_policy):  # fmt: skip
        return [f"unknown policy revision {answer.policy}: {where}"]
    return expected(answer, line, where)


def expected(answer: Answer, line: Timeline, where: str) -> list[str]:
    """The oracle proper: the status this kind must get at the revisions reported."""
    kind, status, allowed = answer.kind, answer.status, 200 <= answer.status < 300
    if kind in ("allowed", "public"):
        return [] if allowed else [f"WRONG DENY {status}: {where}"]
    if kind == "denied":
        return [f"WRONG ALLOW: {where}"] if allowed else _deny_status(status, where)
    if kind == "webhook-forged" or (kind == "webhook" and answer.flavour == "serve"):
        # Forward auth cannot verify a signature (it never sees the body), so it refuses.
        if allowed:
            return [f"WRONG ALLOW: {where}"]
        if status == 403 and answer.reason == "invalid_signature":
            return []
        return [f"{kind} {status} {answer.reason}, not 403 invalid_signature: {where}"]
    if kind == "webhook":
        return [] if status == 200 else [f"webhook {status} {answer.reason}, not 200: {where}"]
    if kind == "ticket":
        return [] if status in (200, 429) else [f"ticket {status}: {where}"]
    if kind == "policy-flip":
        return _policy_flip(answer, line, where)
    return _revocable(answer, line, where)


def _deny_status(status: int, where: str) -> list[str]:
    return [] if status in DENY else [f"unexpected {status}: {where}"]


def _revocable(answer: Answer, line: Timeline, where: str) -> list[str]:
    """Allowed before its change's revision, denied at or after it (and by the time bound)."""
    change = next((c for c in line.changes if c.kind == answer.kind), None)
    allowed = 200 <= answer.status < 300
    if allowed and answer.facts is None:
        return [f"allow without x-authz-revision: {where}"]
    if change is None:
        return [] if allowed else [f"WRONG DENY {answer.status}: {where}"]
    if allowed and answer.facts is not None and answer.facts >= change.revision:
        return [f"WRONG ALLOW at revision {answer.facts} >= {change.revision}: {where}"]
    if allowed and answer.t0 > change.at + STALENESS_S + MARGIN_S:
        return [f"WRONG ALLOW {answer.t0 - change.at:.2f}s after the commit: {where}"]
    if not allowed and answer.facts is not None and answer.facts < change.revision:
        return [f"WRONG DENY {answer.status} at revision {answer.facts}: {where}"]
    return [] if allowed else _deny_status(answer.status, where)


def _policy_flip(answer: Answer, line: Timeline, where: str) -> list[str]:
    """Allowed exactly under the candidate policy, by the revision the answer reports."""
    if answer.policy is None:
        return [f"no x-authz-policy-revision: {where}"]
    allowed = 200 <= answer.status < 300
    should = answer.policy == line.candidate_policy
    if allowed and not should:
        return [f"WRONG ALLOW under policy {answer.policy}: {where}"]
    if not allowed and should:
        return [f"WRONG DENY {answer.status} under the candidate policy: {where}"]
    return [] if allowed else _deny_status(answer.status, where)


def rate_limit_problems(answers: list[Answer], line: Timeline) -> tuple[list[str], list[int]]:
    """Admitted tickets: none while Redis is down, at most LIMIT in any WINDOW_S between
    its restarts (a restarted Redis starts counting afresh), exactly LIMIT at each start.
    Returns the problems and each epoch's admissions in its first window."""
    admitted = sorted((a for a in answers if a.kind == "ticket" and a.status == 200),
                      key=lambda a: a.t0)  # fmt: skip
    redis = [f for f in line.faults if f.needs == "redis"]
    found: list[str] = []
    for f in redis:
        found += [f"ticket admitted while Redis was down at +{a.t0 - line.t0:.2f}s"
                  for a in admitted if f.start <= a.t0 and a.t1 <= f.restarting]  # fmt: skip
    bounds = [0.0, *itertools.chain.from_iterable((f.start, f.restarting) for f in redis), 1e18]
    firsts: list[int] = []
    for lo, hi in zip(bounds[::2], bounds[1::2], strict=True):
        epoch = [a for a in admitted if lo <= a.t1 and a.t0 <= hi]
        for a, b in zip(epoch, epoch[LIMIT:], strict=False):
            if b.t1 - a.t0 < WINDOW_S:
                found.append(f"over the limit: {LIMIT + 1} tickets admitted within "
                             f"{b.t1 - a.t0:.1f}s from +{a.t0 - line.t0:.2f}s")  # fmt: skip
        if epoch:
            firsts.append(sum(1 for a in epoch if a.t0 < epoch[0].t0 + WINDOW_S))
    found += [f"an epoch admitted {n} tickets in its first window, not {LIMIT}"
              for n in firsts if n != LIMIT]  # fmt: skip
    return found, firsts


def stale_policy_problems(answers: list[Answer], line: Timeline, names: list[str]) -> list[str]:
    """An answer under the previous policy revision, sent on an instance after that
    instance had already answered under the new one (and before the next switch)."""
    found: list[str] = []
    previous = line.base_policy
    for k, switch in enumerate(line.policies):
        until = line.policies[k + 1].began if k + 1 < len(line.policies) else float("inf")
        for name in names:
            mine = [a for a in answers if a.instance == name]
            seen = min((a.t1 for a in mine if a.policy == switch.revision
                        and a.t1 >= switch.at), default=None)  # fmt: skip
            if seen is None:
                continue
            found += [f"STALE POLICY {previous[:12]} after the {switch.name} reached "
                      f"{name} at +{seen - line.t0:.2f}s: {a.kind} on {name} at "
                      f"+{a.t0 - line.t0:.2f}s"
                      for a in mine if seen < a.t0 < until and a.policy == previous]  # fmt: skip
        previous = switch.revision
    return found


# --- Measurements -------------------------------------------------------------------------


def recovery(fault: Fault, answers: list[Answer], good: set[int], names: list[str]) -> float:
    """Fault end -> the first right, non-503 answer needing that dependency, on every
    instance (an instance kill: on that instance); infinite if one never came."""
    worst = 0.0
    for name in [fault.instance] if fault.instance else names:
        firsts = [a.t1 for i, a in enumerate(answers) if i in good and a.instance == name
                  and a.t0 >= fault.end and a.status not in (0, 503)
                  and (fault.instance or _needs(a.kind, fault.needs))]  # fmt: skip
        worst = max(worst, (min(firsts) - fault.end) if firsts else float("inf"))
    return worst


_NEEDS: dict[str, frozenset[str]] = {}


def _needs(kind: str, dependency: str) -> bool:
    return dependency in _NEEDS.get(kind, frozenset())


def staleness(change: Change, answers: list[Answer], names: list[str]) -> tuple[float, float]:
    """Commit -> the last allow at an older revision, and -> every instance answering at
    the new one (or later)."""
    last = max((a.t1 - change.at for a in answers if a.kind == change.kind
                and 200 <= a.status < 300 and a.t1 > change.at), default=0.0)  # fmt: skip
    spread = 0.0
    for name in names:
        at = [a.t1 for a in answers if a.instance == name and a.t0 >= change.at
              and a.facts is not None and a.facts >= change.revision]  # fmt: skip
        spread = max(spread, (min(at) - change.at) if at else float("inf"))
    return max(last, 0.0), spread


def propagation(switch: PolicySwitch, answers: list[Answer], names: list[str]) -> float:
    """Command returned -> every instance answering with that policy revision."""
    worst = 0.0
    for name in names:
        at = [a.t1 for a in answers if a.instance == name and a.t0 >= switch.at - 1.0
              and a.policy == switch.revision]  # fmt: skip
        later = [t for t in at if t >= switch.at]
        worst = max(worst, (min(later) - switch.at) if later else float("inf"))
    return worst


# --- The run ------------------------------------------------------------------------------


@dataclass
class Plan:
    """When each event happens, as a fraction of the duration; and how long faults last."""

    duration: float
    outage: float

    def at(self, fraction: float, t0: float) -> float:
        return t0 + fraction * self.duration


def wait_until(when: float, stop: threading.Event) -> None:
    while time.monotonic() < when and not stop.is_set():
        time.sleep(0.02)


def run_scenario(env: Env, load: Load, plan: Plan, line: Timeline) -> None:
    """The changes and faults, in order, each at its moment of the run."""
    t0 = time.monotonic()
    steps: list[tuple[float, Callable[[], None]]] = [
        (0.10, lambda: revoke(env, line)),
        (0.20, lambda: publish(env, line)),
        (0.30, lambda: kill_postgres(env, line, plan.outage)),
        (0.50, lambda: kill_redis(env, line, plan.outage)),
        (0.64, lambda: rollback(env, line)),
        (0.74, lambda: kill_instance(env, line)),
    ]
    for fraction, step in steps:
        wait_until(plan.at(fraction, t0), load.stop)
        if load.stop.is_set():
            return
        step()
    # On a busy machine the steps run late: load goes on after the last restart long enough
    # to see the recovery, even past the planned end.
    wait_until(max(plan.at(1.0, t0), time.monotonic() + TAIL_S), load.stop)


@dataclass
class Env:
    work: Path
    config: Path
    database_url: str
    pg: PostgresServer
    redis: RedisServer
    fleet: list[Instance]
    api_key: str
    candidate: Path


def revoke(env: Env, line: Timeline) -> None:
    gone = env.work / "gone.json"
    gone.write_text('{"memberships": [{"user": "bob", "workspace": "w1", "role": "member"}]}')
    cli("facts", "remove", "--config", str(env.config), str(gone))
    line.changes.append(Change("membership removal", "membership",
                               facts_revision(env.database_url), time.monotonic()))  # fmt: skip
    cli("keys", "revoke", "--config", str(env.config), env.api_key)
    line.changes.append(Change("API key revocation", "api-key",
                               facts_revision(env.database_url), time.monotonic()))  # fmt: skip


def publish(env: Env, line: Timeline) -> None:
    began = time.monotonic()
    out = cli("policy", "publish", "--config", str(env.config), str(env.candidate))
    line.candidate_policy = policy_revision(out)
    line.policies.append(PolicySwitch("publish", line.candidate_policy, time.monotonic(), began))


def rollback(env: Env, line: Timeline) -> None:
    began = time.monotonic()
    out = cli("policy", "rollback", "--config", str(env.config))
    line.policies.append(PolicySwitch("rollback", policy_revision(out), time.monotonic(), began))


def kill_postgres(env: Env, line: Timeline, outage: float) -> None:
    fault = Fault("PostgreSQL killed", "postgres", time.monotonic())
    line.faults.append(fault)
    env.pg._run(_binary("pg_ctl"), "-D", str(env.pg.data), "-m", "immediate", "-w", "stop")
    time.sleep(outage)
    fault.restarting = time.monotonic()
    env.pg.start()
    fault.end = time.monotonic()


def kill_redis(env: Env, line: Timeline, outage: float) -> None:
    fault = Fault("Redis killed", "redis", time.monotonic())
    line.faults.append(fault)
    env.redis.kill()
    time.sleep(outage)
    fault.restarting = time.monotonic()
    env.redis.start()
    fault.end = time.monotonic()


def kill_instance(env: Env, line: Timeline) -> None:
    victim = env.fleet[2]  # the first uvicorn + middleware instance
    fault = Fault(f"instance {victim.name} killed", "instance", time.monotonic(),
                  instance=victim.name)  # fmt: skip
    line.faults.append(fault)
    victim.kill()
    time.sleep(1.0)
    fault.restarting = time.monotonic()
    victim.start()
    victim.wait_ready()
    fault.end = time.monotonic()


@contextlib.contextmanager
def fleet_up(work: Path) -> Iterator[Env]:
    """PostgreSQL, Redis, schema, facts, an API key, the base policy and 4 instances; all
    of it stopped and removed on the way out, whatever happens."""
    pg = PostgresServer()
    redis = RedisServer(port=free_port())
    fleet: list[Instance] = []
    try:
        pg.start()
        redis.start()
        url = pg.create_database()
        config = work / "authz.toml"
        write_config(config, url, redis.url)
        cli("db", "upgrade", "--config", str(config))
        (work / "facts.json").write_text(FACTS)
        cli("facts", "load", "--config", str(config), str(work / "facts.json"))
        key = cli("keys", "create", "--config", str(config), "--user", "carol",
                  "--workspace", "w1").splitlines()[0]  # fmt: skip
        cli("policy", "publish", "--config", str(config), str(ROOT / "policies"))
        for name, flavour in (("serve-1", "serve"), ("serve-2", "serve"),
                              ("asgi-1", "asgi"), ("asgi-2", "asgi")):  # fmt: skip
            fleet.append(Instance(name, flavour, config, work / f"{name}.log"))
        for inst in fleet:
            inst.start()
        for inst in fleet:
            inst.wait_ready()
        yield Env(work, config, url, pg, redis, fleet, key, candidate_policy(work))
    finally:
        for inst in fleet:
            inst.kill()
        redis.kill()
        shutil.rmtree(redis.directory, ignore_errors=True)
        pg.remove()


# --- The report ---------------------------------------------------------------------------


def _cell(counts: collections.Counter[tuple[str, str, int]], kind: str, flavour: str) -> str:
    return " ".join(f"{status or 'down'}:{n}" for (k, f, status), n in sorted(counts.items())
                    if k == kind and f == flavour)  # fmt: skip


def report(answers: list[Answer], kinds: list[Probe], line: Timeline, names: list[str],
           t0: float) -> int:  # fmt: skip
    """Print the numbers; 1 if anything was wrong."""
    by_kind = {p.kind: p for p in kinds}
    _NEEDS.update({p.kind: p.needs for p in kinds})
    found: list[str] = []
    good: set[int] = set()
    for i, answer in enumerate(answers):
        wrong = problems(answer, by_kind[answer.kind], line)
        found += wrong
        if not wrong:
            good.add(i)
    limit_problems, firsts = rate_limit_problems(answers, line)
    found += limit_problems
    found += stale_policy_problems(answers, line, names)
    down = sum(1 for a in answers if a.status == 0)
    print(f"requests served: {len(answers) - down} (sent {len(answers)}, "
          f"{down} to an instance that was down)")  # fmt: skip
    print("statuses by kind (serve | asgi):")
    counts = collections.Counter((a.kind, a.flavour, a.status) for a in answers)
    for probe in kinds:
        cells = [_cell(counts, probe.kind, flavour) for flavour in ("serve", "asgi")]
        print(f"  {probe.kind:15} {cells[0]:32} | {cells[1]}")
    fivexx = collections.Counter((a.kind, a.status) for a in answers if a.status >= 500)
    print("5xx by kind: " + (", ".join(f"{k} {s}: {n}" for (k, s), n in sorted(fivexx.items()))
                             or "none"))  # fmt: skip
    print(f"500s: {sum(n for (_, s), n in fivexx.items() if s != 503)}")
    print(f"503s outside a fault window: {sum(1 for f in found if f.startswith('503'))}")
    print(f"wrong allows: {sum(1 for f in found if f.startswith('WRONG ALLOW'))}")
    print(f"wrong denies: {sum(1 for f in found if f.startswith('WRONG DENY'))}")
    print("answers under the previous policy after its switch reached the instance: "
          f"{sum(1 for f in found if f.startswith('STALE POLICY'))}")  # fmt: skip
    print(f"rate limit: {LIMIT} per {WINDOW_S:.0f} s across the fleet; admitted in each "
          f"Redis epoch's first window: {firsts}")  # fmt: skip
    for change in line.changes:
        last, spread = staleness(change, answers, names)
        print(f"staleness of the {change.name} (revision {change.revision}): last allow "
              f"{last:.3f} s after the commit, all {len(names)} instances at its revision "
              f"after {spread:.3f} s")  # fmt: skip
    for switch in line.policies:
        print(f"policy {switch.name} ({switch.revision[:12]}): all {len(names)} instances "
              f"answer with it {propagation(switch, answers, names):.3f} s after the "
              "command returned")  # fmt: skip
    for fault in line.faults:
        took = recovery(fault, answers, good, names)
        unavailable = sum(1 for a in answers if a.status == 503 and fault.covers(a))
        print(f"fault {fault.name}: +{fault.start - t0:.1f}s to +{fault.end - t0:.1f}s "
              f"({fault.end - fault.start:.2f} s); recovery {took:.3f} s after the restart"
              + (f", {took + fault.end - fault.start:.3f} s after the kill"
                 if fault.instance else "") + f"; 503s in its window: {unavailable}")  # fmt: skip
        if took > GRACE_S:
            found.append(f"{fault.name}: no recovery within {GRACE_S} s")
    print(f"failures: {len(found)}")
    for problem in sorted(set(found))[:25]:
        print(f"  {problem}")
    return 1 if found else 0


def print_errors(fleet: list[Instance]) -> None:
    """The instances' logged errors (not the expected warnings of denials), for a failure."""
    for inst in fleet:
        lines = [x for x in inst.log.read_text().splitlines() if "WARNING" not in x
                 and not x.startswith(("denied with", "request "))]  # fmt: skip
        print(f"--- {inst.name}: {len(lines)} log lines besides denials ---")
        print("\n".join(lines[-30:]))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--duration", type=float, default=170.0, help="seconds of load")
    parser.add_argument("--max-requests", type=int, default=400_000)
    parser.add_argument("--short", action="store_true", help="CI's: 24 s, 4 s faults")
    args = parser.parse_args()
    plan = Plan(24.0, 4.0) if args.short else Plan(args.duration, 8.0)
    work = Path(tempfile.mkdtemp(prefix="authz-soak-"))
    try:
        with fleet_up(work) as env:
            line = Timeline(base_policy=policy_revision(
                cli("policy", "status", "--config", str(env.config))))  # fmt: skip
            kinds = probes(env.api_key)
            load = Load(env.fleet, kinds, args.max_requests)
            t0 = line.t0 = time.monotonic()
            load.start()
            try:
                run_scenario(env, load, plan, line)
            finally:
                load.join()
            code = report(load.answers, kinds, line, [i.name for i in env.fleet], t0)
            if code:
                print_errors(env.fleet)
            return code
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
