"""The role and visibility rules: scopes, resource, workspace, membership, policy.

:func:`authorize` is a plain function of its lookups: resources of any declared kind come
from ``lookups.resource(kind, id)`` (``workspace`` and ``member`` are special: the id is
the workspace, or a membership), their visibility from the record, grants from
``lookups.has_grant``. Each lookup is wrapped so that its failure is told from a failing
rule (a 503, not a 500); the deny itself is made by the entry point's one ``try``.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from ..decision import Decision, ResourceRef
from ..errors import BadRequestError
from ..facts import Membership, Resource
from ..principal import Principal
from ..reasons import Reason
from ..request import RequestFacts
from ..routes import FROM_RESOURCE, Route, WorkspaceSource
from ..vocab import NO_ROLE, MembershipStatus, Relation, ResourceKind, canonical
from .compiled import Core
from .lookups import Lookups, unavailable
from .trace import Trace, new_tuple

__all__ = ["WORKSPACE_ID", "authorize", "not_found", "workspace_from"]

#: A workspace or resource id: printable, no separators, no lone surrogates.
WORKSPACE_ID = re.compile(r"[^\x00-\x20\x7f/\\\ud800-\udfff]{1,256}\Z")
_FROM_RESOURCE = (FROM_RESOURCE,)

# The values the rules compare and build table keys from, as the canonical plain strings
# the compiled table holds: a key's items then match by identity, and a comparison with a
# plain str is the interpreter's specialised str compare (an Enum member is neither).
_WORKSPACE = canonical(ResourceKind.WORKSPACE)
_MEMBER = canonical(ResourceKind.MEMBER)
_REL_NONE = canonical(Relation.NONE)
_REL_CREATOR = canonical(Relation.CREATOR)
_REL_GRANTEE = canonical(Relation.GRANTEE)
_REL_TARGET_OWNER = canonical(Relation.TARGET_OWNER)
_ACTIVE = canonical(MembershipStatus.ACTIVE)
_INACTIVE = canonical(MembershipStatus.INACTIVE)
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
    for kind, arg in sources:
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


def authorize(
    request: RequestFacts,
    core: Core,
    route: Route,
    params: Mapping[str, str],
    principal: Principal,
    trace: Trace,
    lookups: Lookups,
) -> Decision:
    """Scopes, resource, workspace, membership, then the compiled casbin policy."""
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
        if kind == _WORKSPACE:
            resource_ws = resource_id
        elif kind != _MEMBER:
            try:
                found: Resource | None = lookups.resource(kind, resource_id)
            except BaseException as exc:
                raise unavailable("resource", exc) from None
            if found is None:
                trace.resource = new_tuple(ResourceRef, (kind, resource_id, None))
                return not_found(trace, kind)
            resource_ws = found.workspace
            vis = found.visibility  # None for a kind without one (a chat)
            if found.creator == user:
                rel = _REL_CREATOR
            elif (
                vis is not None
                and kind in core.grant_kinds
                and (
                    (action, kind, vis) in policy.grant_sensitive
                    or (core.conceal_hidden and _read_grant_matters(core, kind, vis))
                )
            ):
                # A grant is looked up only where it can change the verdict (or, when
                # hidden resources are concealed, whether the caller may read it).
                try:
                    granted = lookups.has_grant(user, kind, found.id)
                except BaseException as exc:
                    raise unavailable("has_grant", exc) from None
                if granted:
                    rel = _REL_GRANTEE

    if route.workspace == _FROM_RESOURCE:
        workspace = resource_ws
    else:
        workspace = workspace_from(route.workspace, request, params, principal, resource_ws)
    trace.resource = new_tuple(ResourceRef, (kind, resource_id if spec else workspace, workspace))
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

    try:
        membership: Membership | None = lookups.membership(user, workspace)
    except BaseException as exc:
        raise unavailable("membership", exc) from None
    if membership is None:
        role: str = NO_ROLE
        status: str = _ACTIVE
    else:
        role = membership.role
        status = _ACTIVE if membership.status == _ACTIVE else _INACTIVE
        trace.role = role

    if kind == _MEMBER and resource_id is not None and membership is not None:
        # Only members learn about other members (no target lookup for outsiders).
        try:
            target: Membership | None = lookups.membership(resource_id, workspace)
        except BaseException as exc:
            raise unavailable("membership", exc) from None
        if target is None:
            return not_found(trace, kind)
        if target.role == policy.top_role:  # a plain "owner" from a database is one too
            rel = _REL_TARGET_OWNER

    # Visibility is keyed by kind; a kind that has one always asks the visibility table,
    # so a record without a visibility (a NULL column) is visible to no one instead of
    # skipping that table.
    vkind = kind if vis is not None or kind in core.visibility_kinds else None
    verdict = policy.table.get((role, status, action, rel, vkind, vis)) or policy.verdict(
        role, status, action, rel, vkind, vis
    )
    # Keep what an earlier step said (a rate limit passed uncounted); usually nothing.
    trace.explanation = (
        (*trace.explanation, *verdict.explanation) if trace.explanation else verdict.explanation
    )
    if verdict.allowed:
        return trace.decision(_ALLOWED, verdict.message)
    if core.conceal_hidden and spec is not None:
        kind_spec = core.kinds.get(kind)
        read_action = kind_spec.read_action if kind_spec is not None else ""
        if read_action and read_action != action:
            if not policy.verdict(role, status, read_action, rel, vkind, vis).allowed:
                return not_found(trace, kind)
        elif read_action:
            return not_found(trace, kind)
    return trace.decision(verdict.reason, verdict.message)


def _read_grant_matters(core: Core, kind: str, vis: str) -> bool:
    spec = core.kinds.get(kind)
    return spec is not None and core.policy.grant_matters(spec.read_action, kind, vis)


def not_found(trace: Trace, kind: str) -> Decision:
    # Identical for "missing" and "concealed": the point is that they cannot be told apart.
    trace.explanation = ()
    return trace.decision(Reason.NOT_FOUND, f"{kind} not found")
