"""The live policy of one ``Authorizer``, and how a new one replaces it.

The swap is one attribute assignment (``authorizer.core = core``): every decision reads
the core once, when it starts (``Authorizer._decide``), so it is decided wholly by the old
policy or wholly by the new one, and no decision waits for a lock. What comes before the
swap is slow (casbin enforces every point of the compiled table: ~150 ms) and is done off
the request path, by the thread of the rollout, never by a request.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from ..compile import policy_revision, revision_paths
from ..config import Settings
from ..core import Core
from .candidate import PolicyRejected, compile_candidate, policy_names
from .shadow import ShadowPolicy

if TYPE_CHECKING:
    from ..authorizer import Authorizer

__all__ = ["FileRollout", "PolicyRollout", "RolloutStatus"]

_log = logging.getLogger("illumichat_authz.rollout")


@dataclass(frozen=True)
class RolloutStatus:
    #: ``files`` or ``database``.
    source: str
    #: The live policy's revision (its files' digest) and, from the database, its version.
    revision: str
    version: int | None
    #: When it became live (seconds since the epoch).
    applied_at: float
    #: The last candidate refused, and why (``None``: none since the live one).
    refused_revision: str | None = None
    refused: str | None = None
    #: The policy evaluated in shadow, if any, and what it found.
    shadow_revision: str | None = None
    shadow_version: int | None = None
    shadow: dict[str, int] = field(default_factory=dict)
    #: Why the source could not be read last time (``None``: it could).
    error: str | None = None

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class PolicyRollout:
    """Swaps an authorizer's policy for checked candidates; says where it stands."""

    source = "files"

    def __init__(self, authorizer: Authorizer, settings: Settings) -> None:
        self.authorizer = authorizer
        self.settings = settings
        self.version: int | None = None
        self.applied_at = time.time()
        #: (version, revision, monotonic ns) of every swap, newest last (the last 100).
        self.history: list[tuple[int | None, str, int]] = []
        self.refused_revision: str | None = None
        self.refused: str | None = None
        self.error: str | None = None
        self.shadow: ShadowPolicy | None = None
        self.shadow_version: int | None = None
        self._lock = threading.Lock()  # one swap at a time
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # --- the swap -----------------------------------------------------------------------
    def activate(self, core: Core, version: int | None = None) -> None:
        """Make ``core`` (already checked) the live policy: one assignment."""
        with self._lock:
            self.authorizer.core = core
            self.version = version
            self.applied_at = time.time()
            self.refused = self.refused_revision = None
            self.history.append((version, core.policy_revision, time.monotonic_ns()))
            del self.history[:-100]
        _log.info(
            "policy %s%s is live",
            core.policy_revision,
            "" if version is None else f" (version {version})",
        )

    def refuse(self, revision: str, exc: PolicyRejected) -> None:
        """A candidate failed: the live policy stays; the refusal is logged and shown."""
        self.refused_revision = revision
        self.refused = str(exc)
        _log.error(
            "policy candidate %s refused, policy %s stays live: %s",
            revision,
            self.authorizer.core.policy_revision,
            exc,
        )

    def set_shadow(self, core: Core | None, version: int | None = None) -> None:
        """Evaluate ``core`` beside the live policy (``None``: stop)."""
        old = self.shadow
        if (
            old is not None
            and core is not None
            and old.core.policy_revision == core.policy_revision
        ):
            return
        self.shadow = ShadowPolicy(self.authorizer, core) if core is not None else None
        self.shadow_version = version if core is not None else None
        if old is not None:
            self.authorizer.unobserve(old)
            old.close()
        if self.shadow is not None:
            self.authorizer.observe(self.shadow)
            _log.info("policy %s evaluated in shadow", core.policy_revision if core else "")

    def status(self) -> RolloutStatus:
        shadow = self.shadow
        return RolloutStatus(
            source=self.source,
            revision=self.authorizer.core.policy_revision,
            version=self.version,
            applied_at=self.applied_at,
            refused_revision=self.refused_revision,
            refused=self.refused,
            shadow_revision=shadow.core.policy_revision if shadow is not None else None,
            shadow_version=self.shadow_version,
            shadow=shadow.stats().as_dict() if shadow is not None else {},
            error=self.error,
        )

    # --- the thread ---------------------------------------------------------------------
    def start(self) -> PolicyRollout:
        if self._thread is None:
            self._stop.clear()
            self._thread = threading.Thread(
                target=self._run, name="illumichat-authz-rollout", daemon=True
            )
            self._thread.start()
        return self

    def close(self, timeout: float = 5.0) -> None:
        self._stop.set()
        self._wake()
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        if self.shadow is not None:
            self.authorizer.unobserve(self.shadow)
            self.shadow.close()
            self.shadow = None

    def _wake(self) -> None:
        """Look again now (a notification arrived)."""

    def _run(self) -> None:
        interval = self.settings.policies.watch_interval_s
        while not self._stop.wait(interval):
            self.poll_safely()

    def poll_safely(self) -> None:
        """``poll``, and whatever it raises logged and shown: the thread never dies, and
        the live policy stays."""
        try:
            self.poll()
        except Exception as exc:
            self.error = f"{type(exc).__name__}: {exc}".splitlines()[0][:300]
            _log.exception("policy rollout: %s; policy %s stays live", self.error,
                           self.authorizer.core.policy_revision)  # fmt: skip

    def poll(self) -> None:
        """Look at the source once; swap if it changed and the candidate passes."""
        raise NotImplementedError


def files_digest(settings: Settings, directory: Path) -> str | None:
    """The digest of what a watched directory holds (``policy_names``, and the host's
    route files), or ``None`` while one of them cannot be read."""
    digest = hashlib.sha256()
    try:
        names = policy_names(settings, directory)
        for path in [*(directory / n for n in names), *settings.policies.host_routes]:
            data = Path(path).read_bytes()
            digest.update(str(path).encode() + b"\0" + len(data).to_bytes(8, "big") + data)
    except OSError:
        return None
    return digest.hexdigest()


class FileRollout(PolicyRollout):
    """``[policies] watch``: the files are looked at every ``watch_interval_s``; a change
    is compiled and checked, then swapped in, or refused (and retried only when the files
    change again). ``shadow_dir``: a candidate evaluated in shadow, watched the same way."""

    source = "files"

    def __init__(self, authorizer: Authorizer, settings: Settings) -> None:
        super().__init__(authorizer, settings)
        pol = settings.policies
        self._seen = self._pending = files_digest(settings, pol.dir)
        self._shadow_seen: str | None = None
        if pol.shadow_dir is not None:
            self._shadow_seen = files_digest(settings, pol.shadow_dir)
            self._load_shadow()

    def poll(self) -> None:
        pol = self.settings.policies
        if pol.watch:
            seen = files_digest(self.settings, pol.dir)
            # Acted on once it reads the same twice, an interval apart: a file an editor
            # is still writing is never compiled half-written.
            settled, self._pending = seen == self._pending, seen
            if seen is not None and settled and seen != self._seen:
                self._seen = seen
                try:
                    core = compile_candidate(self.settings, pol.dir)
                except PolicyRejected as exc:
                    self.refuse(_revision_of(self.settings, pol.dir), exc)
                else:
                    if core.policy_revision != self.authorizer.core.policy_revision:
                        self.activate(core)
        if pol.shadow_dir is not None:
            seen = files_digest(self.settings, pol.shadow_dir)
            if seen is not None and seen != self._shadow_seen:
                self._shadow_seen = seen
                self._load_shadow()

    def _load_shadow(self) -> None:
        directory = self.settings.policies.shadow_dir
        assert directory is not None
        try:
            self.set_shadow(compile_candidate(self.settings, directory))
        except PolicyRejected as exc:
            self.refuse(_revision_of(self.settings, directory), exc)


def _revision_of(settings: Settings, directory: Path) -> str:
    return policy_revision(revision_paths(settings, directory))
