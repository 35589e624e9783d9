"""Policy versions in the database: what ``policy publish``, ``rollback`` and ``status``
write and read, and each instance's heartbeat.

A change of the state (a version staged, activated or shadowed) is a write like any fact's:
it bumps the facts revision and logs the key ``("policy",)`` in the same transaction, so
the change feed tells every instance within a millisecond (and its poll, at the latest, a
``poll_interval_s`` later). Publishing is two-phase, because compiling a policy takes
~150 ms and a swap takes microseconds: the version is first *staged* (every instance
compiles and checks it off to the side and reports it prepared), then *activated* (every
prepared instance swaps at once).
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Engine, func, insert, select, update

from .engine import unreachable
from .schema import policy_instances, policy_state, policy_versions
from .writes import bump_revision, log_changes

__all__ = ["POLICY_KEY", "InstanceRow", "PolicyState", "PolicyVersions", "VersionRow"]

#: The change-log key of a policy state change (the facts caches ignore it).
POLICY_KEY = ("policy",)


@dataclass(frozen=True, slots=True)
class PolicyState:
    active: int | None
    staged: int | None
    shadow: int | None


@dataclass(frozen=True, slots=True)
class VersionRow:
    version: int
    revision: str
    files: dict[str, str]
    created_at: float
    note: str | None
    activated_at: float | None


@dataclass(frozen=True, slots=True)
class InstanceRow:
    instance: str
    version: int | None
    revision: str | None
    prepared: int | None
    shadow: int | None
    error: str | None
    applied_at: float | None
    seen_at: float

    def as_dict(self) -> dict[str, Any]:
        return {f: getattr(self, f) for f in self.__slots__}


class PolicyVersions:
    def __init__(self, engine: Engine) -> None:
        self.engine = engine

    # --- reads --------------------------------------------------------------------------
    def state(self) -> PolicyState:
        with unreachable(), self.engine.connect() as conn:
            row = conn.execute(
                select(policy_state.c.active, policy_state.c.staged, policy_state.c.shadow).where(
                    policy_state.c.id == 1
                )
            ).first()
        return PolicyState(None, None, None) if row is None else PolicyState(*row)

    def get(self, version: int) -> VersionRow | None:
        with unreachable(), self.engine.connect() as conn:
            row = conn.execute(
                select(policy_versions).where(policy_versions.c.version == version)
            ).first()
        if row is None:
            return None
        files = json.loads(row.files)
        if not isinstance(files, dict) or not all(
            isinstance(k, str) and isinstance(v, str) for k, v in files.items()
        ):
            raise ValueError(f"policy version {version}: files are not a JSON object of texts")
        return VersionRow(
            row.version, row.revision, files, row.created_at, row.note, row.activated_at
        )

    def versions(self) -> list[VersionRow]:
        with unreachable(), self.engine.connect() as conn:
            rows = conn.execute(select(policy_versions).order_by(policy_versions.c.version)).all()
        return [
            VersionRow(r.version, r.revision, {}, r.created_at, r.note, r.activated_at)
            for r in rows
        ]

    def previous(self) -> int | None:
        """The version active before the active one (rollback's default)."""
        active = self.state().active
        with unreachable(), self.engine.connect() as conn:
            return conn.execute(
                select(policy_versions.c.version)
                .where(policy_versions.c.activated_at.is_not(None))
                .where(policy_versions.c.version != (active if active is not None else -1))
                .order_by(policy_versions.c.activated_at.desc())
                .limit(1)
            ).scalar()

    def instances(self) -> list[InstanceRow]:
        with unreachable(), self.engine.connect() as conn:
            rows = conn.execute(select(policy_instances).order_by(policy_instances.c.instance))
            return [InstanceRow(*row) for row in rows]

    # --- writes (each one transaction, each one a revision) ------------------------------
    def stage(
        self,
        files: Mapping[str, str],
        revision: str,
        note: str | None = None,
        *,
        staged: bool = True,
    ) -> int:
        """Store the next version (and stage it: every instance prepares it); its number."""
        now = time.time()
        with unreachable(), self.engine.begin() as conn:
            rev = bump_revision(conn)
            version = (
                int(
                    conn.execute(
                        select(func.coalesce(func.max(policy_versions.c.version), 0))
                    ).scalar_one()
                )
                + 1
            )
            conn.execute(
                insert(policy_versions).values(
                    version=version,
                    revision=revision,
                    files=json.dumps(dict(files), sort_keys=True),
                    created_at=now,
                    note=note,
                )
            )
            if staged:
                self._set(conn, now, staged=version)
            log_changes(conn, rev, [POLICY_KEY], now)
        return version

    def stage_existing(self, version: int) -> None:
        """Stage a stored version again (rollback)."""
        self._change(staged=version)

    def unstage(self) -> None:
        self._change(staged=None)

    def activate(self, version: int) -> None:
        """Make ``version`` the one every instance enforces."""
        now = time.time()
        with unreachable(), self.engine.begin() as conn:
            rev = bump_revision(conn)
            conn.execute(
                update(policy_versions)
                .where(policy_versions.c.version == version)
                .values(activated_at=now)
            )
            self._set(conn, now, active=version, staged=None)
            # The version in the key: an instance that prepared it swaps on the
            # notification alone, without reading the state back.
            log_changes(conn, rev, [(*POLICY_KEY, "active", str(version))], now)

    def set_shadow(self, version: int | None) -> None:
        self._change(shadow=version)

    def _change(self, **values: int | None) -> None:
        now = time.time()
        with unreachable(), self.engine.begin() as conn:
            rev = bump_revision(conn)
            self._set(conn, now, **values)
            log_changes(conn, rev, [POLICY_KEY], now)

    def heartbeat(self, row: InstanceRow) -> None:
        values = row.as_dict()
        with unreachable(), self.engine.begin() as conn:
            done = conn.execute(
                update(policy_instances)
                .where(policy_instances.c.instance == row.instance)
                .values(**values)
            )
            if not done.rowcount:
                conn.execute(insert(policy_instances).values(**values))

    @staticmethod
    def _set(conn: Any, now: float, **values: int | None) -> None:
        done = conn.execute(
            update(policy_state).where(policy_state.c.id == 1).values(changed_at=now, **values)
        )
        if not done.rowcount:
            conn.execute(insert(policy_state).values(id=1, changed_at=now, **values))
