"""Shadow mode: a candidate policy decides real traffic beside the live one, enforcing
nothing, and every request on which the two would differ is logged.

An observer (``observers``): the live decision is made and answered as always; the
request, the caller the live decision verified and the facts revision it saw are queued,
and a thread of the shadow decides them again with the candidate. Nothing is counted or
consumed twice: no rate-limit hit (a limited route counts as not limited), no API-key use,
no body read. The facts are read again, at the same or a newer revision; a pair decided at
different facts revisions is not compared (it could differ for that reason alone).
"""

from __future__ import annotations

import collections
import logging
import threading
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING

from ..core import Core
from ..decision import Decision
from ..request import RequestFacts

if TYPE_CHECKING:
    from ..authorizer import Authorizer

__all__ = ["ShadowPolicy", "ShadowStats"]

_log = logging.getLogger("illumichat_authz.shadow")
#: Requests waiting for the shadow's thread; beyond it they are dropped (and counted).
QUEUE = 10_000
#: Differences kept for ``ShadowPolicy.differences`` (the log has them all).
KEPT = 100


@dataclass(frozen=True, slots=True)
class ShadowStats:
    #: Requests decided by both and compared.
    compared: int
    #: ... of which the candidate would have answered otherwise (status or reason).
    differed: int
    #: Not compared: facts moved in between, or a side decided with a 5xx.
    skipped: int
    #: Dropped because the queue was full.
    dropped: int

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Difference:
    route: str | None
    principal: str | None
    live_status: int
    live_reason: str
    shadow_status: int
    shadow_reason: str


class ShadowPolicy:
    """Observes ``authorizer``'s HTTP decisions and decides them again with ``core``."""

    allows = True

    def __init__(self, authorizer: Authorizer, core: Core) -> None:
        self.authorizer = authorizer
        self.core = core
        self.compared = self.differed = self.skipped = self.dropped = 0
        self.differences: collections.deque[Difference] = collections.deque(maxlen=KEPT)
        self._queue: collections.deque[tuple[RequestFacts, Decision]] = collections.deque()
        self._ready = threading.Condition()
        self._busy = False
        self._closed = False
        self._thread = threading.Thread(
            target=self._run, name="illumichat-authz-shadow", daemon=True
        )
        self._thread.start()

    # --- the call site: a bounded append --------------------------------------------
    def record(self, decision: Decision, request: RequestFacts | None, started_ns: int) -> None:
        if request is None:  # decide_access and friends: no request to replay
            return
        if len(self._queue) >= QUEUE:
            self.dropped += 1
            return
        self._queue.append((request, decision))
        if not self._busy:
            with self._ready:
                self._ready.notify()

    # --- the thread -----------------------------------------------------------------
    def _run(self) -> None:
        while not self._closed:
            with self._ready:
                self._busy = False
                self._ready.wait_for(lambda: self._queue or self._closed, timeout=1.0)
                self._busy = True
            while self._queue:
                request, live = self._queue.popleft()
                try:
                    self.compare(request, live)
                except Exception:  # never the live decision's business
                    self.skipped += 1
                    _log.exception("shadow evaluation failed")

    def compare(self, request: RequestFacts, live: Decision) -> Decision | None:
        """Decide ``request`` with the candidate; log and count a difference. (Public for
        tests: the thread calls it for every queued request.)"""
        shadow = self.authorizer.shadow_decide(self.core, request, live.principal)
        if (
            live.status >= 500
            or shadow.status >= 500
            or shadow.facts_revision != live.facts_revision
        ):
            self.skipped += 1
            return None
        self.compared += 1
        if shadow.status == live.status and shadow.reason is live.reason:
            return shadow
        self.differed += 1
        principal = live.principal.user_id if live.principal is not None else None
        diff = Difference(
            live.route or shadow.route,
            principal,
            live.status,
            live.reason.value,
            shadow.status,
            shadow.reason.value,
        )
        self.differences.append(diff)
        _log.warning(
            "shadow policy %s would answer %d %s where %s answered %d %s: %s (principal %s)",
            self.core.policy_revision,
            shadow.status,
            shadow.reason.value,
            live.policy_revision,
            live.status,
            live.reason.value,
            diff.route or "undeclared route",
            principal or "-",
        )
        return shadow

    def drain(self, timeout: float = 5.0) -> None:
        """Wait until every queued request was compared (tests, shutdown)."""
        import time

        deadline = time.monotonic() + timeout
        while (self._queue or self._busy) and time.monotonic() < deadline:
            with self._ready:
                self._ready.notify()
            time.sleep(0.005)

    def stats(self) -> ShadowStats:
        return ShadowStats(self.compared, self.differed, self.skipped, self.dropped)

    def close(self) -> None:
        self._closed = True
        with self._ready:
            self._ready.notify()
