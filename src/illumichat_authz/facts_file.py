"""The JSON facts file (docs/policy.md), validated with pydantic so errors name the entry.

Kept apart from ``facts`` so that the decision core's import closure holds no pydantic:
only the CLI, the demo and ``Authorizer.from_settings`` read a facts file.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from .errors import ConfigurationError
from .facts import Assistant, Chat, Grant, InMemoryFacts, Membership, Resource
from .vocab import canonical

__all__ = ["fact_records", "facts_from_document", "load_facts_file", "read_facts_json"]

_ID = Field(min_length=1, max_length=256)
_NAME = Field(min_length=1, max_length=64)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class _MembershipIn(_Strict):
    user: str = _ID
    workspace: str = _ID
    #: Any non-empty role: the policy's ``g`` lines say which exist.
    role: str = _NAME
    status: str = Field(default="active", min_length=1, max_length=64)


class _ResourceIn(_Strict):
    kind: str = _NAME
    id: str = _ID
    workspace: str = _ID
    visibility: str | None = Field(default=None, min_length=1, max_length=64)
    creator: str | None = Field(default=None, min_length=1, max_length=256)


class _AssistantIn(_Strict):
    id: str = _ID
    workspace: str = _ID
    #: One of the assistant kind's visibility values (routes.toml [resources]).
    visibility: str = Field(min_length=1, max_length=64)
    creator: str = _ID


class _ChatIn(_Strict):
    id: str = _ID
    workspace: str = _ID
    assistant: str = _ID
    creator: str = _ID


class _GrantIn(_Strict):
    """``{user, assistant}`` or ``{user, kind, id}``."""

    user: str = _ID
    assistant: str | None = Field(default=None, min_length=1, max_length=256)
    kind: str | None = Field(default=None, min_length=1, max_length=64)
    id: str | None = Field(default=None, min_length=1, max_length=256)

    @model_validator(mode="after")
    def _one_target(self) -> _GrantIn:
        if (self.assistant is None) == (self.kind is None or self.id is None) or (
            self.assistant is not None and (self.kind is not None or self.id is not None)
        ):
            raise ValueError("a grant names either assistant, or kind and id")
        return self

    def target(self) -> tuple[str, str]:
        if self.assistant is not None:
            return ("assistant", self.assistant)
        return (str(self.kind), str(self.id))


class _FactsIn(_Strict):
    memberships: list[_MembershipIn] = Field(default_factory=list)
    resources: list[_ResourceIn] = Field(default_factory=list)
    assistants: list[_AssistantIn] = Field(default_factory=list)
    chats: list[_ChatIn] = Field(default_factory=list)
    grants: list[_GrantIn] = Field(default_factory=list)


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
    generic = [(r.kind, r.id) for r in doc.resources]
    typed = {("assistant", a.id) for a in doc.assistants} | {("chat", c.id) for c in doc.chats}
    clash = {k for k in generic if generic.count(k) > 1 or k in typed}
    if clash:
        problems.append(f"resources: duplicate (kind, id) {sorted(clash)}")
    for i, a in enumerate(doc.assistants):
        if a.workspace not in workspaces:
            problems.append(
                f"assistants[{i}].workspace: no membership names workspace {a.workspace!r}"
            )
    for i, r in enumerate(doc.resources):
        if r.kind in ("assistant", "chat"):
            problems.append(f"resources[{i}].kind: {r.kind}s go in {r.kind}s")
        if r.workspace not in workspaces:
            problems.append(
                f"resources[{i}].workspace: no membership names workspace {r.workspace!r}"
            )
    for i, c in enumerate(doc.chats):
        asst = assistants.get(c.assistant)
        if asst is None:
            problems.append(f"chats[{i}].assistant: unknown assistant {c.assistant!r}")
        elif asst.workspace != c.workspace:
            problems.append(f"chats[{i}].workspace: differs from its assistant's workspace")
    known = set(generic) | typed
    for i, g in enumerate(doc.grants):
        kind, rid = g.target()
        if (kind, rid) not in known:
            where = "assistant" if g.assistant is not None else "id"
            problems.append(f"grants[{i}].{where}: unknown {kind} {rid!r}")
    return problems


def _parse(data: Any, source: str) -> _FactsIn:
    try:
        return _FactsIn.model_validate(data)
    except ValidationError as exc:
        lines = [f"{source}: invalid facts:"]
        for err in exc.errors()[:20]:
            loc = "".join(f"[{p}]" if isinstance(p, int) else f".{p}" for p in err["loc"])
            lines.append(f"  {loc.lstrip('.')}: {err['msg']}")
        raise ConfigurationError("\n".join(lines)) from None


def _records(doc: _FactsIn) -> list[Membership | Resource | Grant]:
    # Roles, statuses, kinds and visibilities as the policy's own string objects
    # (vocab.canonical): the decision table's keys then compare by identity.
    records: list[Membership | Resource | Grant] = [
        Membership(
            user=m.user,
            workspace=m.workspace,
            role=canonical(m.role),
            status=canonical(m.status),
        )
        for m in doc.memberships
    ]
    records += [
        Resource(
            kind=canonical(r.kind),
            id=r.id,
            workspace=r.workspace,
            visibility=None if r.visibility is None else canonical(r.visibility),
            creator=r.creator,
        )
        for r in doc.resources
    ]
    records += [
        Assistant(
            id=a.id,
            workspace=a.workspace,
            visibility=canonical(a.visibility),
            creator=a.creator,
        )
        for a in doc.assistants
    ]
    records += [Chat(**c.model_dump()) for c in doc.chats]
    for g in doc.grants:
        kind, rid = g.target()
        records.append(Grant(user=g.user, kind=canonical(kind), id=rid))
    return records


def fact_records(data: Any, *, source: str = "facts") -> list[Membership | Resource | Grant]:
    """The records of a facts document, checked in shape but not for references: what
    ``facts load`` and ``facts remove`` write, whose references may be in the database."""
    return _records(_parse(data, source))


def facts_from_document(data: Any, *, source: str = "facts") -> InMemoryFacts:
    doc = _parse(data, source)
    problems = _check_references(doc)
    if problems:
        raise ConfigurationError(f"{source}: invalid facts:\n  " + "\n  ".join(problems[:20]))
    facts = InMemoryFacts()
    facts.add(*_records(doc))
    return facts


def read_facts_json(path: str | Path) -> Any:
    """The JSON document in ``path``; :class:`ConfigurationError` naming what is wrong."""
    file = Path(path)
    try:
        return json.loads(file.read_bytes())
    except FileNotFoundError:
        raise ConfigurationError(f"facts file not found: {file}") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigurationError(f"{file}: cannot read facts: {exc}") from None
    except json.JSONDecodeError as exc:
        raise ConfigurationError(f"{file}:{exc.lineno}: invalid JSON: {exc.msg}") from None
    except RecursionError:
        raise ConfigurationError(f"{file}: JSON nested too deeply") from None


def load_facts_file(path: str | Path) -> InMemoryFacts:
    """Read the JSON facts file; raise :class:`ConfigurationError` naming the bad entry."""
    return facts_from_document(read_facts_json(path), source=str(Path(path)))
