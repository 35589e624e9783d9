"""What watches decisions after they are made: the decision log, metrics, traces, shadow
evaluation. One mechanism for all of them, so a public decision method has one call to
make after it decides, and none at all when nothing watches.

An observer is any object with ``allows`` (falsy: it wants no allow, so an allow skips
it) and ``record(decision, request, started_ns)``, called on the deciding thread right
after the decision: it must only count or queue (``audit.DecisionLog.record`` appends to
a bounded queue). ``request`` is ``None`` for decisions without an HTTP request
(``decide_access``); ``started_ns`` is ``time.perf_counter_ns()`` before deciding.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, Protocol

from .decision import Decision
from .request import RequestFacts

__all__ = ["Observer", "Observers"]

_log = logging.getLogger("illumichat_authz")


class Observer(Protocol):
    #: Whether (or at what rate) allows are wanted: falsy means denies only.
    allows: Any

    def record(self, decision: Decision, request: RequestFacts | None, started_ns: int) -> None: ...


class Observers:
    """Several observers as one. An observer that raises is logged and skipped: watching
    a decision can never change it, delay it past the observer's own work, or fail it."""

    __slots__ = ("_all", "allows")

    def __init__(self, observers: Sequence[Observer]) -> None:
        self._all = tuple(observers)
        self.allows = any(o.allows for o in self._all)

    def record(self, decision: Decision, request: RequestFacts | None, started_ns: int) -> None:
        allowed = decision.status == 200
        for observer in self._all:
            if allowed and not observer.allows:
                continue
            try:
                observer.record(decision, request, started_ns)
            except Exception:
                _log.exception("decision observer %s failed", type(observer).__name__)
