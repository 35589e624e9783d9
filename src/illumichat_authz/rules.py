"""The role and visibility rules: scopes, resource, workspace, membership, casbin policy.

``rules`` is a plain function of its facts. A synchronous store is called directly (no
generator at all); for any other, ``replayed`` runs the rules, yields the query for the
first fact they are missing (``Replay`` raises ``Need``), and runs them again with the
answer: the same code either way, at most one run per fact.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from ._trace import Trace, failure
from .decision import Decision, ResourceRef
from .errors import BadRequestError
from .facts import Assistant, Chat, Facts, Membership
from .principal import Principal
from .queries import FactsByQuery, NeedAssistant, NeedChat, NeedGrant, NeedMembership, Query
from .reasons import Reason
from .request import RequestFacts
from .routes import FROM_RESOURCE, Route, WorkspaceSource
from .vocab import NO_ROLE, MembershipStatus, Relation, ResourceKind, Role

if TYPE_CHECKING:
    from collections.abc import Generator

    from .core import Core

__all__ = ["WORKSPACE_ID", "Need", "Replay", "authorize", "replayed", "rules"]

#: A workspace or resource id: printable, no separators, no lone surrogates.
WORKSPACE_ID = re.compile(r"[^\x00-\x20\x7f/\\\ud800-\udfff]{1,256}\Z")
_FROM_RESOURCE = (FROM_RESOURCE,)
_new_tuple = tuple.__new__

# Enum members read once: attribute access on an Enum class costs a lookup per use.
_ASSISTANT = ResourceKind.ASSISTANT
_CHAT = ResourceKind.CHAT
_WORKSPACE = ResourceKind.WORKSPACE
_MEMBER = ResourceKind.MEMBER
_REL_NONE = Relation.NONE
_REL_CREATOR = Relation.CREATOR
_REL_GRANTEE = Relation.GRANTEE
_REL_TARGET_OWNER = Relation.TARGET_OWNER
_ACTIVE = MembershipStatus.ACTIVE
_INACTIVE = MembershipStatus.INACTIVE
_OWNER = Role.OWNER
_ALLOWED = Reason.ALLOWED


def workspace_from(
    sources: tuple[WorkspaceSource, ...],
    request: RequestFacts,
    params: Mapping[str, str],
    principal: Principal,
    resource_ws: str | None,
) -> str | None:
    """The first of the route's workspace sources (``Route.workspace``) that names one
    (a header that is present but unusable is a 400, never a reason to fall through to
    the next)."""
    for source in sources:
        kind, arg = source.kind, source.name
        value: str | None = None
        if kind == "principal":
            value = principal.workspace
        elif kind == "header":
            for name, found in request.headers:
                if name == arg:
                    if value is not None:
                        raise BadRequestError(
                            f"more than one {arg} header", reason=Reason.BAD_HEADER
                        )
                    value = found
            if value is not None:
                value = value.strip(" \t")  # RFC 9110 OWS only, not all of Unicode
                if not WORKSPACE_ID.match(value):
                    raise BadRequestError(f"malformed {arg} header", reason=Reason.BAD_HEADER)
        elif kind == "param":
            value = params.get(arg)
        elif kind == "resource":
            value = resource_ws
        if value:
            return value
    return None


class Need(BaseException):
    """Raised by :class:`Replay` for a fact the driver has not answered yet.

    A ``BaseException`` so that the rules' ``except Exception`` never swallows it.
    """

    def __init__(self, query: Query) -> None:
        self.query = query


class Replay(FactsByQuery):
    """Facts answered so far by the driver; asking for another raises :class:`Need`.

    The rules are a plain function of their facts, so they can simply be run again once
    the driver has the missing answer: for synchronous facts (called directly) they run
    once with no generator at all; for async ones at most once per fact (four at most).
    """

    __slots__ = ("answers",)

    def __init__(self) -> None:
        self.answers: dict[Query, Any] = {}

    def ask(self, query: NeedMembership | NeedAssistant | NeedChat | NeedGrant) -> Any:
        try:
            return self.answers[query]
        except KeyError:
            raise Need(query) from None


def authorize(
    request: RequestFacts,
    core: Core,
    route: Route,
    params: Mapping[str, str],
    principal: Principal,
    trace: Trace,
    facts: Facts | None,
) -> Decision | Generator[Query, Any, Decision]:
    """The rules over ``facts`` when they answer directly, else a flow that asks for them."""
    if facts is not None:
        return rules(request, core, route, params, principal, trace, facts)
    return replayed(request, core, route, params, principal, trace)


def replayed(
    request: RequestFacts,
    core: Core,
    route: Route,
    params: Mapping[str, str],
    principal: Principal,
    trace: Trace,
) -> Generator[Query, Any, Decision]:
    replay = Replay()
    while True:
        try:
            return rules(request, core, route, params, principal, trace, replay)
        except Need as need:
            try:
                replay.answers[need.query] = yield need.query
            except Exception as exc:  # thrown in: a failed lookup (AuthzError) or worse
                return failure(exc, trace)


def rules(
    request: RequestFacts,
    core: Core,
    route: Route,
    params: Mapping[str, str],
    principal: Principal,
    trace: Trace,
    facts: Facts | Replay,
) -> Decision:
    """Scopes, resource, workspace, membership, then the compiled casbin policy.

    A plain function of its facts (see :class:`Replay`); maps its own failures to a
    deny, as ``decide`` does.
    """
    try:
        # The per-request path: enum members come from module constants (see the top).
        action = route.action
        user = principal.user_id
        scopes = principal.scopes
        if scopes is not None and action not in scopes:
            return trace.decision(
                Reason.SCOPE_NOT_GRANTED, f"this credential's scopes do not include {action}"
            )

        spec = route.resource
        kind: str = _WORKSPACE
        resource_id: str | None = None
        resource_ws: str | None = None
        vis: str | None = None
        rel: str = _REL_NONE
        policy = core.policy
        if spec is not None:
            kind = spec.kind
            resource_id = params.get(spec.param)
        if resource_id is not None:
            if kind is _WORKSPACE:
                resource_ws = resource_id
            elif kind is _ASSISTANT or kind is _CHAT:
                found: Assistant | Chat | None = (
                    facts.assistant(resource_id) if kind is _ASSISTANT else facts.chat(resource_id)
                )
                if found is None:
                    trace.resource = _new_tuple(ResourceRef, (kind, resource_id, None))
                    return not_found(trace, kind)
                resource_ws = found.workspace
                if kind is _ASSISTANT:
                    vis = found.visibility  # type: ignore[union-attr]
                if found.creator == user:
                    rel = _REL_CREATOR
                elif (
                    vis is not None
                    and (
                        (action, kind, vis) in policy.grant_sensitive
                        or (core.conceal_hidden and _concealed_grant_matters(core, vis))
                    )
                    and facts.has_grant(user, found.id)
                ):
                    rel = _REL_GRANTEE

        if route.workspace == _FROM_RESOURCE:
            workspace = resource_ws
        else:
            workspace = workspace_from(route.workspace, request, params, principal, resource_ws)
        trace.resource = _new_tuple(
            ResourceRef, (kind, resource_id if spec else workspace, workspace)
        )
        if workspace is None:
            return trace.decision(
                Reason.MISSING_WORKSPACE, "no workspace given (X-Workspace-Id) and none is active"
            )
        if principal.workspace_bound and workspace != principal.workspace:
            if core.conceal_hidden and spec is not None:
                return not_found(trace, kind)
            return trace.decision(
                Reason.WORKSPACE_MISMATCH, "this credential is bound to another workspace"
            )

        membership: Membership | None = facts.membership(user, workspace)
        if membership is None:
            role: str = NO_ROLE
            status: str = _ACTIVE
        else:
            role = membership.role
            status = _ACTIVE if membership.status == _ACTIVE else _INACTIVE
            trace.role = role

        if kind is _MEMBER and resource_id is not None and membership is not None:
            # Only members learn about other members (no target lookup for outsiders).
            target: Membership | None = facts.membership(resource_id, workspace)
            if target is None:
                return not_found(trace, kind)
            if target.role == _OWNER:  # a plain "owner" from a database is an owner too
                rel = _REL_TARGET_OWNER

        # Visibility is keyed by kind; the kind that has one (an assistant) always asks the
        # visibility table, so a record without a visibility (a NULL column) is visible to
        # no one instead of skipping that table.
        vkind = kind if vis is not None or kind is _ASSISTANT else None
        verdict = policy.table.get((role, status, action, rel, vkind, vis)) or policy.verdict(
            role, status, action, rel, vkind, vis
        )
        trace.explanation = verdict.explanation
        if verdict.allowed:
            return trace.decision(_ALLOWED, verdict.message)
        if core.conceal_hidden and spec is not None:
            read_action = core.routes.read_actions.get(spec.kind)
            if read_action is not None and read_action != action:
                if not policy.verdict(role, status, read_action, rel, vkind, vis).allowed:
                    return not_found(trace, kind)
            elif read_action is not None:
                return not_found(trace, kind)
        return trace.decision(verdict.reason, verdict.message)
    except Exception as exc:
        return failure(exc, trace)


def _concealed_grant_matters(core: Core, vis: str) -> bool:
    # A grant is looked up only where it can change the verdict (policy.grant_sensitive)
    # or, when hidden resources are concealed, whether the caller may read the assistant.
    read_action = core.routes.read_actions.get(_ASSISTANT, "")
    return core.policy.grant_matters(read_action, _ASSISTANT, vis)


def not_found(trace: Trace, kind: str) -> Decision:
    # Identical for "missing" and "concealed": the point is that they cannot be told apart.
    trace.explanation = ()
    return trace.decision(Reason.NOT_FOUND, f"{kind} not found")
