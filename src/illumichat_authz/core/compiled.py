"""The compiled configuration: everything a decision depends on but the request, the
lookups and the time. Built once at start-up (``illumichat_authz.compile.build_core``);
frozen and free of caches, so one ``Core`` serves any number of threads and loops.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Literal

from ..credentials.twilio import TwilioSignatureVerifier
from ..net import IPNetwork
from ..policy import Policy
from ..ratelimit import RateLimitSpec
from ..routes import (
    FROM_PRINCIPAL,
    FROM_RESOURCE,
    KindSpec,
    ResourceSpec,
    Route,
    RouteClass,
    RouteTable,
    WorkspaceFrom,
    WorkspaceSource,
)
from ..vocab import ResourceKind, canonical
from .authn import Authenticators

__all__ = ["Core", "kinds_of"]


def kinds_of(routes: RouteTable) -> dict[str, KindSpec]:
    """The resource kinds ``routes.toml`` declares under ``[resources]``, with the two the
    rules know without a lookup (a workspace is its own id, a member a membership; neither
    has a read action, a visibility or grants)."""
    kinds: dict[str, KindSpec] = dict(routes.kinds)
    for special in (ResourceKind.WORKSPACE, ResourceKind.MEMBER):
        kinds.setdefault(special, KindSpec(special, ""))
    return kinds


@dataclass(frozen=True, slots=True, kw_only=True)
class Core:
    """Everything a decision depends on except the request, the lookups and the time."""

    routes: RouteTable
    policy: Policy
    authenticators: Authenticators = field(default_factory=Authenticators)
    twilio: TwilioSignatureVerifier | None = None
    trusted_proxies: tuple[IPNetwork, ...] = ()
    #: Forward auth believes X-Forwarded-Prefix from ``trusted_proxies`` (``[proxies]``).
    forwarded_prefix: bool = False
    public_base_url: str | None = None
    undeclared: Literal["deny", "authenticated"] = "deny"
    allow_preflight: bool = True
    conceal_hidden: bool = False
    max_path_length: int = 2048
    max_body_bytes: int = 64 * 1024
    rate_limits: Mapping[str, RateLimitSpec] = field(default_factory=dict)
    #: The policy files' digest (the first 12 hex digits of their SHA-256): which policy
    #: a decision was made under, in the decision log; "" when built without files.
    policy_revision: str = ""
    #: What the adapters do at start-up with framework routes the table does not classify
    #: (``[routes] check_app``); not a decision input.
    check_app: Literal["warn", "error", "off"] = "warn"
    #: Resource kind -> its spec (``workspace`` and ``member`` included). A plain dict,
    #: never changed after start-up (a dict's get is cheaper than a mapping proxy's).
    kinds: Mapping[str, KindSpec] = field(init=False, repr=False, compare=False)
    #: The kinds with grants (a set test on the per-request path).
    grant_kinds: frozenset[str] = field(init=False, repr=False, compare=False)
    #: The kinds whose records carry a visibility (a record without one sees no one).
    visibility_kinds: frozenset[str] = field(init=False, repr=False, compare=False)
    #: (action, resource kind or None) -> the synthetic route ``decide_access`` evaluates,
    #: for every action of the policy and declared kind: one lookup validates and finds it.
    access_routes: Mapping[tuple[str, str | None], Route] = field(
        init=False, repr=False, compare=False
    )

    def __post_init__(self) -> None:
        kinds = kinds_of(self.routes)
        object.__setattr__(self, "kinds", kinds)
        object.__setattr__(self, "grant_kinds", frozenset(k for k, s in kinds.items() if s.grants))
        visible = frozenset(k for k, s in kinds.items() if s.has_visibility)
        object.__setattr__(self, "visibility_kinds", visible)
        # Keyed by the kinds' plain values: what a caller passes as ``resource_kind``.
        plain = [canonical(kind) for kind in kinds]
        routes = {
            (action, kind): _access_route(action, kind)
            for action in self.policy.actions
            for kind in (None, *plain)
        }
        object.__setattr__(self, "access_routes", MappingProxyType(routes))


_FROM_WORKSPACE_PARAM = WorkspaceSource(WorkspaceFrom.PARAM, "workspace")


def _access_route(action: str, resource_kind: str | None) -> Route:
    """The synthetic route ``decide_access`` evaluates (``Core.access_routes``)."""
    spec = ResourceSpec(resource_kind, "id") if resource_kind else None
    sources: tuple[WorkspaceSource, ...] = (_FROM_WORKSPACE_PARAM, FROM_PRINCIPAL)
    if resource_kind == "member":
        sources = (_FROM_WORKSPACE_PARAM,)
    elif spec is not None:
        sources = (FROM_RESOURCE,)
    return Route(
        method="ACCESS",
        template=f"/{resource_kind or 'workspace'}",
        route_class=RouteClass.AUTHENTICATED,
        action=action,
        resource=spec,
        workspace=sources,
        origin="decide_access",
    )
