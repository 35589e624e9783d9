"""``[policies] source = "database"``: the live policy is the active version of
``authz_policy_versions`` (``policy publish``), on every instance of the fleet.

The rollout's thread is woken by the change feed when the policy state changes (a
notification, or at the latest the feed's poll) and every ``watch_interval_s`` anyway. A
*staged* version is compiled and checked off to the side and reported prepared; an
*active* one is swapped in, from what was prepared (microseconds) or compiled then; a
version that fails its checks is refused here and the last good policy stays. Every
instance writes a heartbeat row (``policy status`` reads them).
"""

from __future__ import annotations

import logging
import os
import secrets
import socket
import tempfile
import threading
import time
from collections.abc import Collection, Iterable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..config import Settings
from ..core import Core
from ..errors import DependencyUnavailableError
from ..stores.sql.policy_versions import POLICY_KEY, InstanceRow, PolicyVersions
from .candidate import PolicyRejected, compile_candidate, write_policy_files
from .live import PolicyRollout

if TYPE_CHECKING:
    from ..authorizer import Authorizer

__all__ = ["DatabaseRollout"]

_log = logging.getLogger("illumichat_authz.rollout")
#: Seconds between two heartbeats (and a change is reported at once).
HEARTBEAT_S = 5.0
#: Compiled versions kept (the live one, the staged one, rollback targets).
_KEPT = 4


class _Wakeup:
    """A change-feed subscriber: a change of the policy state wakes the rollout."""

    def __init__(self, rollout: DatabaseRollout) -> None:
        self.rollout = rollout
        self.applied = -1

    def apply(
        self,
        rev: int,
        keys: Iterable[tuple[str, ...]] | None,
        removed: Collection[tuple[str, ...]] = (),
    ) -> None:
        self.applied = rev
        if keys is None:
            self.rollout._wake()
            return
        for key in keys:
            if key[:1] != POLICY_KEY:
                continue
            if len(key) == 3 and key[1] == "active" and key[2].isdigit():
                self.rollout.activate_prepared(int(key[2]))
            self.rollout._wake()

    def confirm(self, rev: int) -> None:
        pass

    def reset(self, rev: int) -> None:
        self.applied = rev
        self.rollout._wake()  # a gap: the state may have changed in it


class DatabaseRollout(PolicyRollout):
    source = "database"

    def __init__(self, authorizer: Authorizer, settings: Settings, database: Any) -> None:
        super().__init__(authorizer, settings)
        self.versions = PolicyVersions(database.engine)
        self.instance = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self.prepared: int | None = None
        self._cores: dict[int, Core] = {}
        self._refused: dict[int, str] = {}
        self._event = threading.Event()
        self._beat_at = 0.0
        #: (version, prepared) as the last heartbeat wrote them.
        self._reported: tuple[int | None, int | None] = (None, None)
        self.subscriber = _Wakeup(self)
        database.feed.subscribers.append(self.subscriber)

    def load(self) -> None:
        """At start: the active version, compiled and checked, or ``policies.dir`` while
        none was ever published. Raises when the database cannot say which (an instance
        must not start on a policy that may be older than the fleet's)."""
        try:
            state = self.versions.state()
        except DependencyUnavailableError as exc:
            raise DependencyUnavailableError(
                f"policies.source = database: the active policy cannot be read: {exc.message}"
            ) from None
        if state.active is None:
            _log.info("no policy version is active yet: serving policies.dir")
        else:
            self.activate(self._core_of(state.active), state.active)
        self.poll()

    def activate_prepared(self, version: int) -> None:
        """On the change feed's thread: swap to ``version`` now if it is prepared (a
        dictionary read and an assignment); otherwise the rollout's thread compiles it."""
        core = self._cores.get(version)
        if core is not None and version != self.version and version not in self._refused:
            self.activate(core, version)

    # --- the thread ---------------------------------------------------------------------
    def _wake(self) -> None:
        self._event.set()

    def _run(self) -> None:
        interval = self.settings.policies.watch_interval_s
        while not self._stop.is_set():
            self._event.wait(min(interval, HEARTBEAT_S))
            self._event.clear()
            if self._stop.is_set():
                break
            self.poll_safely()

    def poll(self) -> None:
        changed = False
        try:
            state = self.versions.state()
            self.error = None
            if state.staged is not None and state.staged not in (self.prepared, self.version):
                if self._prepare(state.staged) is not None:
                    self.prepared = state.staged
                changed = True
            if state.active is not None and state.active != self.version:
                core = self._prepare(state.active)
                if core is not None:
                    self.activate(core, state.active)
                changed = True
            if state.shadow != self.shadow_version:
                shadow = self._prepare(state.shadow) if state.shadow is not None else None
                if state.shadow is None or shadow is not None:
                    self.set_shadow(shadow, state.shadow)
                changed = True
        except DependencyUnavailableError as exc:
            self.error = exc.message
            _log.warning("policy versions unavailable; policy %s stays live", self._revision())
            return
        # A swap made on the feed's thread (activate_prepared) is reported here too.
        changed = changed or self._reported != (self.version, self.prepared)
        if changed or time.monotonic() - self._beat_at >= HEARTBEAT_S:
            self.heartbeat()

    def heartbeat(self) -> None:
        errors = [f"version {v}: {why}" for v, why in sorted(self._refused.items())[-1:]]
        row_version, row_prepared = self.version, self.prepared
        try:
            self.versions.heartbeat(
                InstanceRow(
                    instance=self.instance,
                    version=row_version,
                    revision=self._revision(),
                    prepared=row_prepared,
                    shadow=self.shadow_version,
                    error=errors[0][:2000] if errors else None,
                    applied_at=self.applied_at,
                    seen_at=time.time(),
                )
            )
            self._beat_at = time.monotonic()
            self._reported = (row_version, row_prepared)
        except DependencyUnavailableError as exc:
            self.error = exc.message

    def close(self, timeout: float = 5.0) -> None:
        super().close(timeout)
        subs = self.authorizer.database.feed.subscribers if self.authorizer.database else []
        if self.subscriber in subs:
            subs.remove(self.subscriber)

    # --- versions -----------------------------------------------------------------------
    def _revision(self) -> str:
        return self.authorizer.core.policy_revision

    def _prepare(self, version: int) -> Core | None:
        """``version`` compiled and checked (kept for later), or ``None`` if refused."""
        if version in self._refused:
            return None
        try:
            return self._core_of(version)
        except DependencyUnavailableError:
            raise  # the database is away: try again, refuse nothing
        except Exception as exc:  # a stored version that is not a policy (bad JSON, names)
            rejected = exc if isinstance(exc, PolicyRejected) else PolicyRejected([repr(exc)])
            self._refused[version] = str(rejected)
            self.refuse(f"version {version}", rejected)
            return None

    def _core_of(self, version: int) -> Core:
        core = self._cores.get(version)
        if core is not None:
            return core
        row = self.versions.get(version)
        if row is None:
            raise PolicyRejected([f"version {version} is not stored"])
        with tempfile.TemporaryDirectory(prefix="illumichat-authz-policy-") as tmp:
            write_policy_files(row.files, Path(tmp))
            core = compile_candidate(self.settings, Path(tmp))
        self._cores[version] = core
        while len(self._cores) > _KEPT:
            oldest = min(v for v in self._cores if v != version)
            del self._cores[oldest]
        return core
