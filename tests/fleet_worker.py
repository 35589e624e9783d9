"""One instance of a fleet, in a process of its own: ``python tests/fleet_worker.py CONFIG``.

``Authorizer.from_settings`` on the configuration's ``[database]``, driven by JSON lines
on stdin, one answer per line on stdout. Used by the multi-process tests and by
``benchmarks/bench_fleet.py``. Each instance records when its feed applied every revision
(``CLOCK_MONOTONIC``, which every process on the machine shares), so that propagation is
measured from the writer's commit to each cache's eviction.

Commands (``op``): ``decide`` (an HTTP request: method, path, headers), ``access`` (user,
action, kind, id), ``until`` (``access`` repeated until the status is ``want``: when it
was), ``write`` (facts-file JSON to upsert and/or remove, through this instance's own
writer), ``create_key``, ``revoke_key``, ``applied`` (the apply times since a revision),
``status``, ``policy`` (the policy swaps, with ``[policies] source = "database"``),
``quit``.
"""

from __future__ import annotations

import functools
import json
import sys
import time
from collections.abc import Iterable
from typing import Any

from illumichat_authz import Authorizer, CredentialKind, Principal, RequestFacts, load_settings
from illumichat_authz.credentials.apikeys import issue_api_key
from illumichat_authz.facts_file import fact_records


class Recorder:
    """A change-feed subscriber that notes when each revision reached this process."""

    def __init__(self) -> None:
        self.applied = -1
        self.times: dict[int, int] = {}
        self.resets = 0

    def apply(self, rev: int, keys: Iterable[tuple[str, ...]] | None, removed: Any = ()) -> None:
        self.times[rev] = time.monotonic_ns()
        self.applied = rev

    def confirm(self, rev: int) -> None:
        pass

    def reset(self, rev: int) -> None:
        if self.applied >= 0:
            self.resets += 1
        self.applied = rev


def _records(doc: dict[str, Any] | None) -> list[Any]:
    return fact_records(doc) if doc else []


def serve(config: str) -> None:
    authorizer = Authorizer.from_settings(load_settings(config, environment=False))
    database = authorizer.database
    recorder = Recorder()
    database.feed.subscribers.append(recorder)
    deadline = time.monotonic() + 30
    while database.feed.status().applied < 0 or (
        database.settings.listen and not database.feed.status().listening
    ):
        if time.monotonic() > deadline:
            raise SystemExit("the change feed did not start")
        time.sleep(0.005)
    print(json.dumps({"ready": True, "revision": database.feed.status().applied}), flush=True)
    for line in sys.stdin:
        command = json.loads(line)
        op = command["op"]
        out: dict[str, Any] = {}
        if op == "decide":
            request = RequestFacts.build(
                method=command.get("method", "GET"),
                path=command["path"],
                headers=[tuple(h) for h in command.get("headers", [])],
            )
            decision = authorizer.decide(request)
            out = {"status": int(decision.status), "revision": decision.facts_revision}
        elif op in ("access", "until"):
            access = functools.partial(
                authorizer.decide_access,
                principal=Principal(user_id=command["user"], kind=CredentialKind.SESSION),
                action=command["action"],
                resource_kind=command["kind"],
                resource_id=command["id"],
            )

            decision = access()
            if op == "until":
                # Ready to watch: the driver commits only after this line is read.
                print(json.dumps({"watching": True}), flush=True)
                stop = time.monotonic() + command.get("timeout", 5.0)
                slowest = 0
                while decision.status != command["want"] and time.monotonic() < stop:
                    time.sleep(command.get("pause", 0.0001))
                    t0 = time.monotonic_ns()
                    decision = access()
                    slowest = max(slowest, time.monotonic_ns() - t0)
                out = {"at": time.monotonic_ns(), "slowest": slowest}
            out.update(status=int(decision.status), revision=decision.facts_revision)
        elif op == "write":
            before = time.monotonic_ns()
            rev = database.writer.apply(
                upsert=_records(command.get("upsert")), remove=_records(command.get("remove"))
            )
            out = {"revision": rev, "before": before, "after": time.monotonic_ns()}
        elif op == "create_key":
            token, record = issue_api_key(
                user_id=command["user"], workspace=command["workspace"], now=time.time()
            )
            database.api_keys.add(record)
            out = {"token": token, "key_id": record.key_id}
        elif op == "revoke_key":
            before = time.monotonic_ns()
            revoked = authorizer.revoke_api_key(command["key_id"])
            out = {"revoked": revoked, "before": before, "after": time.monotonic_ns()}
        elif op == "applied":
            since = int(command.get("since", 0))
            out = {
                "times": {str(r): t for r, t in recorder.times.items() if r > since},
                "applied": recorder.applied,
                "resets": recorder.resets,
            }
        elif op == "status":
            status = database.feed.status()
            out = {"applied": status.applied, "listening": status.listening}
        elif op == "policy":  # the policy swaps: (version, revision, monotonic ns)
            rollout = authorizer.rollout
            out = {"history": rollout.history if rollout is not None else []}
        elif op == "quit":
            break
        print(json.dumps(out), flush=True)
    authorizer.close()


if __name__ == "__main__":
    serve(sys.argv[1])
