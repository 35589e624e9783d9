"""Facts: memberships, assistants, chats and grants, behind a small lookup protocol.

The decision core never reads storage; it asks for exactly the facts one request needs
(at most a membership, a resource, a grant, and for member routes the target's
membership). ``Facts`` is the synchronous protocol and ``AsyncFacts`` its async twin;
hosts implement whichever their storage speaks. ``InMemoryFacts`` serves tests and the
CLI; ``load_facts_file`` reads the JSON format documented in docs/policy.md.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol, runtime_checkable

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .errors import ConfigurationError

__all__ = [
    "Assistant",
    "AsyncFacts",
    "Chat",
    "Facts",
    "Grant",
    "InMemoryFacts",
    "Membership",
    "Resource",
    "load_facts_file",
]

_ID = Field(min_length=1, max_length=256)


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    user: str
    workspace: str
    #: Any role the policy's g lines and rules name (the policy decides, not an enum).
    role: str
    status: str = "active"


@dataclass(frozen=True, slots=True, kw_only=True)
class Assistant:
    id: str
    workspace: str
    #: One of the assistant kind's visibility values (routes.toml [resources]).
    visibility: str
    creator: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """A resource of any kind routes.toml declares (a document, ...): the generic record."""

    kind: str
    id: str
    workspace: str
    visibility: str | None = None
    creator: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Chat:
    id: str
    workspace: str
    assistant: str
    creator: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Grant:
    user: str
    assistant: str


@runtime_checkable
class Facts(Protocol):
    def membership(self, user: str, workspace: str) -> Membership | None: ...
    def assistant(self, assistant_id: str) -> Assistant | None: ...
    def chat(self, chat_id: str) -> Chat | None: ...
    def has_grant(self, user: str, assistant_id: str) -> bool: ...


@runtime_checkable
class AsyncFacts(Protocol):
    async def membership(self, user: str, workspace: str) -> Membership | None: ...
    async def assistant(self, assistant_id: str) -> Assistant | None: ...
    async def chat(self, chat_id: str) -> Chat | None: ...
    async def has_grant(self, user: str, assistant_id: str) -> bool: ...


class InMemoryFacts:
    """Dict-backed facts: O(1) lookups, safe to share across threads once built."""

    def __init__(
        self,
        *,
        memberships: Iterable[Membership] = (),
        assistants: Iterable[Assistant] = (),
        chats: Iterable[Chat] = (),
        grants: Iterable[Grant] = (),
        resources: Iterable[Resource] = (),
        resource_grants: Iterable[tuple[str, str, str]] = (),
    ) -> None:
        self._memberships = {(m.user, m.workspace): m for m in memberships}
        self._assistants = {a.id: a for a in assistants}
        self._chats = {c.id: c for c in chats}
        self._grants = {(g.user, g.assistant) for g in grants}
        self._resources = {(r.kind, r.id): r for r in resources}
        #: (user, kind, id) grants on resources of other kinds.
        self._resource_grants = set(resource_grants)

    def membership(self, user: str, workspace: str) -> Membership | None:
        return self._memberships.get((user, workspace))

    def assistant(self, assistant_id: str) -> Assistant | None:
        return self._assistants.get(assistant_id)

    def chat(self, chat_id: str) -> Chat | None:
        return self._chats.get(chat_id)

    def has_grant(self, user: str, assistant_id: str) -> bool:
        return (user, assistant_id) in self._grants

    def resource(self, kind: str, resource_id: str) -> Resource | None:
        return self._resources.get((kind, resource_id))

    # Mutation, for tests and the demo; production stores own their writes.
    def add(self, *items: Membership | Assistant | Chat | Grant) -> None:
        for item in items:
            if isinstance(item, Membership):
                self._memberships[(item.user, item.workspace)] = item
            elif isinstance(item, Assistant):
                self._assistants[item.id] = item
            elif isinstance(item, Chat):
                self._chats[item.id] = item
            else:
                self._grants.add((item.user, item.assistant))

    def workspaces(self) -> set[str]:
        return {ws for _, ws in self._memberships}

    def __len__(self) -> int:
        return len(self._memberships) + len(self._assistants) + len(self._chats) + len(self._grants)


# --- The JSON file format, validated with pydantic so errors name the entry at fault ---


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _MembershipIn(_Strict):
    user: str = _ID
    workspace: str = _ID
    role: str = Field(min_length=1, max_length=64)
    status: str = Field(default="active", min_length=1, max_length=64)


class _AssistantIn(_Strict):
    id: str = _ID
    workspace: str = _ID
    visibility: str = Field(min_length=1, max_length=64)
    creator: str = _ID


class _ChatIn(_Strict):
    id: str = _ID
    workspace: str = _ID
    assistant: str = _ID
    creator: str = _ID


class _ResourceIn(_Strict):
    kind: str = Field(min_length=1, max_length=64)
    id: str = _ID
    workspace: str = _ID
    visibility: str | None = Field(default=None, min_length=1, max_length=64)
    creator: str | None = Field(default=None, min_length=1, max_length=256)


class _GrantIn(_Strict):
    """``{user, assistant}``, or ``{user, kind, id}`` for a resource of any kind."""

    user: str = _ID
    assistant: str | None = Field(default=None, min_length=1, max_length=256)
    kind: str | None = Field(default=None, min_length=1, max_length=64)
    id: str | None = Field(default=None, min_length=1, max_length=256)

    def target(self) -> tuple[str, str]:
        if self.assistant is not None and self.kind is None and self.id is None:
            return ("assistant", self.assistant)
        if self.assistant is None and self.kind is not None and self.id is not None:
            return (self.kind, self.id)
        raise ValueError("a grant gives either assistant, or kind and id")


class _FactsIn(_Strict):
    memberships: list[_MembershipIn] = Field(default_factory=list)
    assistants: list[_AssistantIn] = Field(default_factory=list)
    chats: list[_ChatIn] = Field(default_factory=list)
    grants: list[_GrantIn] = Field(default_factory=list)
    resources: list[_ResourceIn] = Field(default_factory=list)


def _check_references(doc: _FactsIn) -> list[str]:
    """Facts that point at nothing are almost always a data bug: refuse them at load."""
    problems: list[str] = []
    workspaces = {m.workspace for m in doc.memberships}
    assistants = {a.id: a for a in doc.assistants}
    seen: set[tuple[str, str]] = set()
    for i, m in enumerate(doc.memberships):
        if (m.user, m.workspace) in seen:
            problems.append(
                f"memberships[{i}]: duplicate membership of {m.user!r} in {m.workspace!r}"
            )
        seen.add((m.user, m.workspace))
    for kind, ids in (
        ("assistants", [a.id for a in doc.assistants]),
        ("chats", [c.id for c in doc.chats]),
    ):
        dup = {x for x in ids if ids.count(x) > 1}
        if dup:
            problems.append(f"{kind}: duplicate ids {sorted(dup)}")
    for i, a in enumerate(doc.assistants):
        if a.workspace not in workspaces:
            problems.append(
                f"assistants[{i}].workspace: no membership names workspace {a.workspace!r}"
            )
    for i, c in enumerate(doc.chats):
        asst = assistants.get(c.assistant)
        if asst is None:
            problems.append(f"chats[{i}].assistant: unknown assistant {c.assistant!r}")
        elif asst.workspace != c.workspace:
            problems.append(f"chats[{i}].workspace: differs from its assistant's workspace")
    resources = {(r.kind, r.id) for r in doc.resources}
    for i, r in enumerate(doc.resources):
        if r.kind in ("assistant", "chat"):
            problems.append(f"resources[{i}].kind: {r.kind}s go in {r.kind}s")
        if r.workspace not in workspaces:
            problems.append(
                f"resources[{i}].workspace: no membership names workspace {r.workspace!r}"
            )
    for i, g in enumerate(doc.grants):
        try:
            kind, rid = g.target()
        except ValueError as exc:
            problems.append(f"grants[{i}]: {exc}")
            continue
        if kind == "assistant" and rid not in assistants:
            problems.append(f"grants[{i}].assistant: unknown assistant {rid!r}")
        elif kind != "assistant" and (kind, rid) not in resources:
            problems.append(f"grants[{i}]: unknown {kind} {rid!r}")
    return problems


def facts_from_document(data: Any, *, source: str = "facts") -> InMemoryFacts:
    try:
        doc = _FactsIn.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: invalid facts:"]
        for err in exc.errors()[:20]:
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            lines.append(f"  {loc.lstrip('.')}: {err['msg']}")
        raise ConfigurationError("\n".join(lines)) from None
    problems = _check_references(doc)
    if problems:
        raise ConfigurationError(f"{source}: invalid facts:\n  " + "\n  ".join(problems[:20]))
    return InMemoryFacts(
        memberships=[Membership(**m.model_dump()) for m in doc.memberships],
        assistants=[Assistant(**a.model_dump()) for a in doc.assistants],
        chats=[Chat(**c.model_dump()) for c in doc.chats],
        grants=[Grant(user=g.user, assistant=g.assistant) for g in doc.grants if g.assistant],
        resources=[Resource(**r.model_dump()) for r in doc.resources],
        resource_grants=[(g.user, *g.target()) for g in doc.grants if g.assistant is None],
    )


def load_facts_file(path: str | Path) -> InMemoryFacts:
    """Read the JSON facts file; raise :class:`ConfigurationError` naming the bad entry."""
    file = Path(path)
    try:
        data = json.loads(file.read_bytes())
    except FileNotFoundError:
        raise ConfigurationError(f"facts file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{file}: cannot read facts: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{file}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise ConfigurationError(f"{file}: JSON nested too deeply") from None
    return facts_from_document(data, source=str(file))
