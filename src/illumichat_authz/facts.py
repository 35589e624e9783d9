"""Facts: memberships, resources and grants, behind a small lookup protocol.

The decision core never reads storage; it asks for exactly the facts one request needs
(at most a membership, a resource, a grant, and for member routes the target's
membership). ``Facts`` is the synchronous protocol and ``AsyncFacts`` its async twin;
hosts implement whichever their storage speaks. A store that caches in process and reads
from a database implements ``FetchingFacts`` as well: the driver then asks its cache and
answers a miss with one round trip for every fact the decision needs.

Resources are generic: a :class:`Resource` has a kind (any kind ``routes.toml`` declares
under ``[resources]``, other than the special ``workspace`` and ``member``), an id, the
workspace it lives in, and optionally a visibility and a creator. :class:`Assistant` and
:class:`Chat` are typed helpers for IllumiChat's two kinds. ``InMemoryFacts`` serves tests
and the CLI; the JSON file format is read by ``facts_file.load_facts_file``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable

if TYPE_CHECKING:
    from .core.lookups import Query

__all__ = [
    "Assistant",
    "AsyncFacts",
    "Chat",
    "Facts",
    "FetchingFacts",
    "Grant",
    "InMemoryFacts",
    "Membership",
    "Resource",
]


@dataclass(frozen=True, slots=True, kw_only=True)
class Membership:
    user: str
    workspace: str
    #: Any role the policy's ``g`` lines name (the policy decides what it may do).
    role: str
    status: str = "active"


@dataclass(frozen=True, slots=True, kw_only=True)
class Resource:
    """One resource of a declared kind; ``visibility`` only for kinds that have one."""

    kind: str
    id: str
    workspace: str
    visibility: str | None = None
    creator: str | None = None


@dataclass(frozen=True, slots=True, kw_only=True)
class Assistant(Resource):
    """A :class:`Resource` of kind ``assistant``: it always has a visibility and a creator."""

    kind: str = field(default="assistant", init=False)
    visibility: str
    creator: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Chat(Resource):
    """A :class:`Resource` of kind ``chat``: a conversation with an assistant."""

    kind: str = field(default="chat", init=False)
    assistant: str
    creator: str


@dataclass(frozen=True, slots=True, kw_only=True, init=False)
class Grant:
    """``user`` holds an explicit grant on the resource ``kind``/``id``."""

    user: str
    id: str
    kind: str = "assistant"

    def __init__(
        self,
        *,
        user: str,
        id: str | None = None,
        kind: str = "assistant",
        assistant: str | None = None,
    ) -> None:
        # ``assistant=`` is the convenience spelling of ``kind="assistant", id=...``.
        if (id is None) == (assistant is None):
            raise TypeError("Grant needs exactly one of id= and assistant=")
        object.__setattr__(self, "user", user)
        object.__setattr__(self, "id", id if id is not None else assistant)
        object.__setattr__(self, "kind", kind)


@runtime_checkable
class Facts(Protocol):
    def membership(self, user: str, workspace: str) -> Membership | None: ...
    def resource(self, kind: str, id: str) -> Resource | None: ...
    def has_grant(self, user: str, kind: str, id: str) -> bool: ...


@runtime_checkable
class AsyncFacts(Protocol):
    async def membership(self, user: str, workspace: str) -> Membership | None: ...
    async def resource(self, kind: str, id: str) -> Resource | None: ...
    async def has_grant(self, user: str, kind: str, id: str) -> bool: ...


@runtime_checkable
class FetchingFacts(Protocol):
    """Facts cached in process over a database, read a decision at a time.

    ``cached`` holds the three lookups answered from the cache alone (a miss raises
    ``core.Need``); the driver answers misses with ``fetch`` (or ``afetch``), which reads
    the missing facts together with the ones the same decisions ask next (for a resource:
    ``user``'s membership in its workspace and ``user``'s grant on it) in one round trip,
    and returns every answer it read, by query. A batch of decisions
    (``Authorizer.decide_access_many``) passes all their misses at once.
    """

    cached: Mapping[str, Callable[..., Any]]

    def fetch(self, queries: Sequence[Query], user: str | None = None) -> Mapping[Query, Any]: ...
    async def afetch(
        self, queries: Sequence[Query], user: str | None = None
    ) -> Mapping[Query, Any]: ...


class InMemoryFacts:
    """Dict-backed facts: O(1) lookups, safe to share across threads once built."""

    def __init__(
        self,
        *,
        memberships: Iterable[Membership] = (),
        resources: Iterable[Resource] = (),
        assistants: Iterable[Assistant] = (),
        chats: Iterable[Chat] = (),
        grants: Iterable[Grant] = (),
    ) -> None:
        self._memberships = {(m.user, m.workspace): m for m in memberships}
        # Per kind, then by id (or (user, id)): no key tuple to build per lookup.
        self._resources: dict[str, dict[str, Resource]] = {}
        self._grants: dict[str, set[tuple[str, str]]] = {}
        self.add(*resources, *assistants, *chats, *grants)

    def membership(self, user: str, workspace: str) -> Membership | None:
        return self._memberships.get((user, workspace))

    def resource(self, kind: str, id: str) -> Resource | None:
        of_kind = self._resources.get(kind)
        return of_kind.get(id) if of_kind is not None else None

    def has_grant(self, user: str, kind: str, id: str) -> bool:
        of_kind = self._grants.get(kind)
        return of_kind is not None and (user, id) in of_kind

    # Mutation, for tests and the demo; production stores own their writes.
    def add(self, *items: Membership | Resource | Grant) -> None:
        for item in items:
            if isinstance(item, Membership):
                self._memberships[(item.user, item.workspace)] = item
            elif isinstance(item, Resource):
                self._resources.setdefault(item.kind, {})[item.id] = item
            else:
                self._grants.setdefault(item.kind, set()).add((item.user, item.id))

    def workspaces(self) -> set[str]:
        return {ws for _, ws in self._memberships}

    def __len__(self) -> int:
        resources = sum(len(of_kind) for of_kind in self._resources.values())
        grants = sum(len(of_kind) for of_kind in self._grants.values())
        return len(self._memberships) + resources + grants
