"""Endpoint classification: which route a request is, from the table in ``routes.toml``.

Matching walks a segment trie. At each position a literal segment is tried before a
parameter (so ``/api/widget/tickets/create`` is its own route, not widget ``tickets``),
and a parameter before a trailing ``{name:path}`` wildcard, backtracking when a branch
dead-ends. HEAD is classified as GET. A host layers its own files over the shipped table
(:func:`load_routes` ``host_files``): one trie, and a route two files both declare is a
start-up error naming both.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from .errors import BadRequestError, ConfigurationError
from .paths import canonical_segments
from .reasons import Reason
from .vocab import ResourceKind, canonical

__all__ = [
    "FROM_PRINCIPAL",
    "FROM_RESOURCE",
    "KindSpec",
    "ResourceSpec",
    "Route",
    "RouteClass",
    "RouteMatch",
    "RouteTable",
    "WorkspaceFrom",
    "WorkspaceSource",
    "load_routes",
    "template_segments",
]

_METHOD = re.compile(r"[A-Z]{1,16}\Z")
_MISSING = object()
#: Paths whose classification RouteTable.classify remembers.
_MEMO_SIZE = 4096
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}\Z")
#: ``{name:path}``: the rest of the path, one or more segments (last segment only).
_WILDCARD = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63}):path\}\Z")
_LITERAL = re.compile(r"[A-Za-z0-9\-._~]+\Z")
_RATE = re.compile(r"\s*(\d+)\s*(?:/|per)\s*(second|minute|hour|day)s?\s*\Z")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}\Z")
_ACTION = re.compile(r"[a-z_]+:[a-z_]+\Z")
#: Resource kind names and visibility values: what a policy.csv cell can hold as is.
_KIND_NAME = re.compile(r"[a-z][a-z0-9_]{0,63}\Z")
_VISIBILITY = re.compile(r"[A-Za-z0-9_.-]{1,64}\Z")
#: Kinds whose ids are not looked up as resources: a workspace id is the workspace, a
#: member id is a user whose membership in the route's workspace is the target.
_SPECIAL_KINDS = frozenset({ResourceKind.WORKSPACE.value, ResourceKind.MEMBER.value})
# Path parameter values: anything printable but separators; the ids are compared as is.
_PARAM_VALUE = re.compile(r"[^\x00-\x20\x7f/\\]{1,256}\Z")


class RouteClass(StrEnum):
    PUBLIC = "public"
    WEBHOOK_TWILIO = "webhook:twilio"
    AUTHENTICATED = "authenticated"


@dataclass(frozen=True, slots=True)
class KindSpec:
    """One ``[resources]`` entry of routes.toml: a kind of resource routes act on."""

    name: str
    #: The action that reads a resource of this kind (who may see that it exists).
    read_action: str
    #: Its visibility values (the p2 lines' ``vis`` column); empty: no visibility.
    visibilities: tuple[str, ...] = ()
    #: Whether an explicit grant (``Facts.has_grant``) can widen who may see one.
    grants: bool = False

    @property
    def has_visibility(self) -> bool:
        return bool(self.visibilities)


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    #: A kind ``[resources]`` declares.
    kind: str
    param: str


class WorkspaceFrom(StrEnum):
    """Where a route's workspace comes from."""

    RESOURCE = "resource"  # the resource's own workspace
    PARAM = "param"  # a path parameter
    HEADER = "header"  # a request header (lower-cased name)
    PRINCIPAL = "principal"  # the caller's active or bound workspace


class WorkspaceSource(NamedTuple):
    """One workspace source, parsed at load: ``"header:X-Workspace-Id"`` becomes
    ``WorkspaceSource(WorkspaceFrom.HEADER, "x-workspace-id")``. A named tuple: a route's
    sources are compared and unpacked per request, in C."""

    kind: WorkspaceFrom
    #: The path parameter or (lower-cased) header name; "" for resource and principal.
    name: str = ""

    def __str__(self) -> str:
        return f"{self.kind}:{self.name}" if self.name else str(self.kind)


FROM_RESOURCE = WorkspaceSource(WorkspaceFrom.RESOURCE)
FROM_PRINCIPAL = WorkspaceSource(WorkspaceFrom.PRINCIPAL)


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    method: str
    template: str
    route_class: RouteClass
    action: str
    resource: ResourceSpec | None = None
    #: Ordered workspace sources: the first that names a workspace wins.
    workspace: tuple[WorkspaceSource, ...] = ()
    rate_limit: str | None = None
    #: While the rate limit cannot be counted: "refuse" (503) or "pass" (uncounted).
    rate_limit_unavailable: str = "refuse"
    #: For webhooks: the path parameter naming whose signing secret applies.
    signer: str | None = None
    #: Where the route was declared, for error messages ("routes.toml route #3").
    origin: str = ""
    #: "METHOD /template": how decisions, logs and rate-limit keys name the route.
    id: str = field(init=False, default="")

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.method} {self.template}")


class RouteMatch(NamedTuple):
    route: Route
    params: Mapping[str, str]


@dataclass(slots=True)
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    param: _Node | None = None
    param_name: str | None = None
    #: The route that named the parameter at this position (for conflict messages).
    param_origin: str = ""
    #: ``{name:path}`` routes below this node, per method: they own every deeper path.
    wildcard: dict[str, Route] = field(default_factory=dict)
    wildcard_name: str | None = None
    routes: dict[str, Route] = field(default_factory=dict)


class RouteTable:
    """An immutable set of routes with a trie for matching."""

    def __init__(self, routes: list[Route], *, kinds: Mapping[str, KindSpec]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        #: The resource kinds ``[resources]`` declares, by name.
        self.kinds: Mapping[str, KindSpec] = MappingProxyType(dict(kinds))
        #: Each kind's read action (``kinds[name].read_action``).
        self.read_actions: Mapping[str, str] = {k: s.read_action for k, s in kinds.items()}
        self._root = _Node()
        for route in routes:
            self._insert(route)
        self._memo: dict[tuple[str, str], RouteMatch | None] = {}
        #: Every method some route declares.
        self.methods: frozenset[str] = frozenset(r.method for r in self.routes)
        #: The kind of resource each action acts on, where its routes name one.
        self.action_kinds: Mapping[str, str] = {
            r.action: r.resource.kind for r in self.routes if r.resource is not None
        }

    def _insert(self, route: Route) -> None:
        node = self._root
        for seg in _split_template(route.template):
            w = _WILDCARD.match(seg)
            if w:
                self._insert_wildcard(node, route, w.group(1))
                return
            if node.wildcard:
                raise _covered(route, next(iter(node.wildcard.values())))
            m = _PARAM.match(seg)
            if m:
                if node.param is None:
                    node.param = _Node()
                    node.param_name = m.group(1)
                    node.param_origin = route.origin
                elif node.param_name != m.group(1):
                    raise ConfigurationError(
                        f"{route.origin}: parameter {{{m.group(1)}}} in {route.id} at the position "
                        f"where {node.param_origin} has {{{node.param_name}}}; "
                        "use one name per position"
                    )
                node = node.param
            else:
                node = node.literals.setdefault(seg, _Node())
        if route.method in node.routes:
            other = node.routes[route.method]
            raise ConfigurationError(
                f"{route.origin}: {route.id} shadows {other.origin} ({other.id}): "
                "the second can never match"
            )
        node.routes[route.method] = route

    @staticmethod
    def _insert_wildcard(node: _Node, route: Route, name: str) -> None:
        # A wildcard owns its whole subtree: were it allowed beside deeper routes, a
        # public `/api/{rest:path}` would quietly make every undeclared /api path public.
        below = _first_route(node.literals.values()) or (
            _first_route([node.param]) if node.param is not None else None
        )
        if below is not None:
            raise _covered(route, below)
        if node.wildcard_name not in (None, name):
            other = next(iter(node.wildcard.values()))
            raise ConfigurationError(
                f"{route.origin}: {{{name}:path}} in {route.id} at the position where "
                f"{other.origin} has {{{node.wildcard_name}:path}}; use one name per position"
            )
        if route.method in node.wildcard:
            other = node.wildcard[route.method]
            raise ConfigurationError(
                f"{route.origin}: {route.id} shadows {other.origin} ({other.id}): "
                "the second can never match"
            )
        node.wildcard_name = name
        node.wildcard[route.method] = route

    def classify(self, method: str, raw_path: str, max_length: int) -> RouteMatch | None:
        """:func:`canonical_segments` then :meth:`match`, remembered per (method, path).

        Routes never change after load, so a path's match is a pure function of the path:
        recent ones are kept (bounded; the whole memo is dropped when full, so a flood of
        distinct paths costs each its own work and no more). Non-canonical paths raise
        ``BadRequestError`` every time and are never kept.
        """
        key = (method, raw_path)
        found = self._memo.get(key, _MISSING)
        if found is not _MISSING and len(raw_path) <= max_length:
            return found  # type: ignore[return-value]
        segments = canonical_segments(raw_path, max_length=max_length)
        match = self.match(method, segments)
        if match is None and segments and segments[-1] == "" and self._declared(segments[:-1]):
            # `/api/chats/` beside a declared `/api/chats`: frameworks may dispatch the two
            # alike (Flask strict_slashes=False, optional-slash regexes), so an "undeclared"
            # verdict here could let past what the declared route denies. 400, as always.
            raise BadRequestError(
                "non-canonical request path: trailing '/' on a route declared without one",
                reason=Reason.NON_CANONICAL_PATH,
            )
        if match is not None:
            match = RouteMatch(match.route, MappingProxyType(match.params))
        if len(self._memo) >= _MEMO_SIZE:
            self._memo.clear()
        self._memo[key] = match
        return match

    def match(self, method: str, segments: tuple[str, ...]) -> RouteMatch | None:
        """The route for ``method`` and decoded ``segments``, or ``None`` if undeclared."""
        lookup = "GET" if method == "HEAD" else method
        params: dict[str, str] = {}
        route = self._walk(self._root, segments, 0, lookup, params)
        return RouteMatch(route, params) if route is not None else None

    def _walk(
        self, node: _Node, segments: tuple[str, ...], i: int, method: str, params: dict[str, str]
    ) -> Route | None:
        if i == len(segments):
            return node.routes.get(method)
        seg = segments[i]
        child = node.literals.get(seg)
        if child is not None:
            found = self._walk(child, segments, i + 1, method, params)
            if found is not None:
                return found
        if node.param is not None and node.param_name and _PARAM_VALUE.match(seg):
            params[node.param_name] = seg
            found = self._walk(node.param, segments, i + 1, method, params)
            if found is not None:
                return found
            del params[node.param_name]
        wildcard = node.wildcard.get(method)
        if wildcard is not None and node.wildcard_name:
            rest = segments[i:]
            # Canonical paths have no empty segment but a final one (a trailing '/').
            if all(_PARAM_VALUE.match(s) for s in rest[:-1]) and (
                rest[-1] == "" or _PARAM_VALUE.match(rest[-1])
            ):
                params[node.wildcard_name] = "/".join(rest)
                return wildcard
        return None

    def match_template(self, method: str, template: str) -> Route | None:
        """The route a framework's path template falls under, or ``None``.

        ``template`` is in this table's syntax (literals, ``{name}``, ``{name:path}``); a
        framework parameter only matches a parameter (or wildcard) of ours, since a literal
        of ours would classify one of its values only. For route checks at start-up.
        """
        lookup = "GET" if method == "HEAD" else method
        return self._walk_template(self._root, template_segments(template), 0, lookup)

    def _walk_template(
        self, node: _Node, segments: tuple[str, ...], i: int, method: str
    ) -> Route | None:
        if i == len(segments):
            return node.routes.get(method)
        seg = segments[i]
        if _WILDCARD.match(seg):
            return node.wildcard.get(method)
        if not _PARAM.match(seg):
            child = node.literals.get(seg)
            if child is not None:
                found = self._walk_template(child, segments, i + 1, method)
                if found is not None:
                    return found
        if node.param is not None and (_PARAM.match(seg) or _PARAM_VALUE.match(seg)):
            found = self._walk_template(node.param, segments, i + 1, method)
            if found is not None:
                return found
        return node.wildcard.get(method)

    def _declared(self, segments: tuple[str, ...]) -> bool:
        """Whether some method is declared for this path."""
        return any(self.match(m, segments) for m in self.methods)


def _split_template(template: str) -> list[str]:
    return [] if template == "/" else template[1:].split("/")


def template_segments(template: str) -> tuple[str, ...]:
    """A template's segments (``/admin/`` ends with an empty one, as its paths do)."""
    return tuple(_split_template(template))


def _first_route(nodes: Iterable[_Node]) -> Route | None:
    for node in nodes:
        for route in (*node.routes.values(), *node.wildcard.values()):
            return route
        below = _first_route([*node.literals.values(), *([node.param] if node.param else [])])
        if below is not None:
            return below
    return None


def _covered(route: Route, other: Route) -> ConfigurationError:
    return ConfigurationError(
        f"{route.origin}: {route.id} and {other.origin} ({other.id}) overlap: a {{name:path}} "
        "route must own every path below it"
    )


def _workspace_sources(raw: Any, origin: str) -> tuple[WorkspaceSource, ...]:
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise ConfigurationError(f"{origin}: workspace must be a string or a list of strings")
    out: list[WorkspaceSource] = []
    for src in items:
        kind, _, arg = src.partition(":")
        if kind == "resource" and not arg:
            out.append(FROM_RESOURCE)
        elif kind == "principal" and not arg:
            out.append(FROM_PRINCIPAL)
        elif kind == "param" and arg:
            out.append(WorkspaceSource(WorkspaceFrom.PARAM, arg))
        elif kind == "header" and _HEADER_NAME.match(arg):
            out.append(WorkspaceSource(WorkspaceFrom.HEADER, arg.lower()))
        else:
            raise ConfigurationError(f"{origin}: unknown workspace source {src!r}")
    return tuple(out)


def _path_parameters(path: Any, *, public: bool, origin: str) -> list[str]:
    """The parameter names of a route's path template, which must be well formed."""
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigurationError(f"{origin}: path must start with '/'")
    names: list[str] = []
    segments = _split_template(path)
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        pm = _PARAM.match(seg) or _WILDCARD.match(seg)
        if pm:
            names.append(pm.group(1))
            if seg.endswith(":path}") and (not last or not public):
                raise ConfigurationError(
                    f"{origin}: {seg} must be the last segment of a public route "
                    f"(it matches any path below {path.rsplit('/', 1)[0] or '/'})"
                )
        elif seg == "" and last:
            pass  # a trailing '/' (`/admin/`): its own path, as the request's is
        elif not _LITERAL.match(seg):
            raise ConfigurationError(f"{origin}: bad path segment {seg!r} in {path!r}")
        elif seg in (".", ".."):
            # Canonical paths never hold dot segments (they are a 400): unreachable.
            raise ConfigurationError(
                f"{origin}: dot segment {seg!r} in {path!r}: no request can ever match it"
            )
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{origin}: repeated parameter name in {path!r}")
    return names


def _resource_spec(
    res: Any, names: list[str], kinds: Mapping[str, KindSpec], origin: str
) -> ResourceSpec:
    if not isinstance(res, dict) or set(res) != {"kind", "param"}:
        raise ConfigurationError(f"{origin}: resource must be {{ kind = ..., param = ... }}")
    kind = res["kind"]
    if not isinstance(kind, str) or kind not in kinds:
        raise ConfigurationError(
            f"{origin}: resource kind {kind!r} is not declared in [resources] "
            f"(declared: {', '.join(sorted(kinds)) or 'none'})"
        )
    if res["param"] not in names:
        raise ConfigurationError(f"{origin}: resource param {res['param']!r} not in the path")
    return ResourceSpec(canonical(kind), res["param"])


def _route_from(raw: Any, origin: str, kinds: Mapping[str, KindSpec]) -> list[Route]:
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{origin}: must be a table")
    allowed = {
        "methods",
        "path",
        "class",
        "action",
        "resource",
        "workspace",
        "rate_limit",
        "rate_limit_unavailable",
        "signer",
    }
    unknown = set(raw) - allowed
    if unknown:
        raise ConfigurationError(f"{origin}: unknown key(s) {sorted(unknown)}")
    for key in ("methods", "path", "class", "action"):
        if key not in raw:
            raise ConfigurationError(f"{origin}: missing key {key!r}")
    methods, path, action = raw["methods"], raw["path"], raw["action"]
    if not isinstance(methods, list) or not methods:
        raise ConfigurationError(f"{origin}: methods must be a non-empty list")
    for m in methods:
        if not isinstance(m, str) or not _METHOD.match(m) or m == "HEAD":
            raise ConfigurationError(
                f"{origin}: bad method {m!r} (upper-case; HEAD is classified as GET)"
            )
    names = _path_parameters(path, public=raw["class"] == RouteClass.PUBLIC, origin=origin)
    try:
        route_class = RouteClass(raw["class"])
    except ValueError:
        raise ConfigurationError(
            f"{origin}: class must be one of {[c.value for c in RouteClass]}"
        ) from None
    if not isinstance(action, str) or not _ACTION.match(action):
        raise ConfigurationError(f"{origin}: action must look like 'resource:verb'")
    resource = _resource_spec(raw["resource"], names, kinds, origin) if "resource" in raw else None
    workspace = _workspace_sources(raw.get("workspace"), origin)
    for src in workspace:
        if src.kind is WorkspaceFrom.PARAM and src.name not in names:
            raise ConfigurationError(f"{origin}: workspace '{src}' names no path parameter")
    if route_class is RouteClass.AUTHENTICATED and resource is None and not workspace:
        raise ConfigurationError(
            f"{origin}: an authenticated route needs a resource or a workspace"
        )
    if not workspace and resource is not None:
        workspace = (FROM_RESOURCE,)
    if (
        resource is not None
        and resource.kind not in (ResourceKind.WORKSPACE, ResourceKind.MEMBER)
        and workspace != (FROM_RESOURCE,)
    ):
        # A looked-up resource lives in one workspace: the role that counts is the one
        # there. A header or parameter would let a caller pick a workspace where they
        # hold a bigger role than in the resource's own.
        raise ConfigurationError(
            f"{origin}: a {resource.kind} route takes its workspace from the resource; "
            "remove workspace (or set workspace = ['resource'])"
        )
    if (
        resource is not None
        and resource.kind == ResourceKind.MEMBER
        and not any(s.kind is WorkspaceFrom.PARAM for s in workspace)
    ):
        raise ConfigurationError(f"{origin}: a member resource needs workspace = ['param:...']")
    rate_limit = raw.get("rate_limit")
    if rate_limit is not None and (not isinstance(rate_limit, str) or not _RATE.match(rate_limit)):
        raise ConfigurationError(f"{origin}: rate_limit must look like '5/minute'")
    when_unavailable = raw.get("rate_limit_unavailable", "refuse")
    if when_unavailable not in ("refuse", "pass"):
        raise ConfigurationError(f"{origin}: rate_limit_unavailable must be 'refuse' or 'pass'")
    if "rate_limit_unavailable" in raw and rate_limit is None:
        raise ConfigurationError(f"{origin}: rate_limit_unavailable needs a rate_limit")
    signer = raw.get("signer")
    if route_class is RouteClass.WEBHOOK_TWILIO:
        if not isinstance(signer, str) or signer not in names:
            raise ConfigurationError(f"{origin}: a webhook needs signer = '<path parameter>'")
    elif signer is not None:
        raise ConfigurationError(f"{origin}: signer is only for webhook routes")
    return [
        Route(
            method=m,
            template=path,
            route_class=route_class,
            action=canonical(action),
            resource=resource,
            workspace=workspace,
            rate_limit=rate_limit,
            rate_limit_unavailable=when_unavailable,
            signer=signer,
            origin=origin,
        )
        for m in methods
    ]


def routes_from_document(data: Mapping[str, Any], *, source: str) -> RouteTable:
    kinds = _kinds(data.get("resources", {}), source)
    return RouteTable(_document(data, source=source, kinds=kinds), kinds=kinds)


def _kinds(raw: Any, source: str) -> dict[str, KindSpec]:
    """``[resources]``: ``name = { read_action, visibility = [...], grants = bool }``."""
    if not isinstance(raw, dict):
        raise ConfigurationError(f"{source}: [resources] must be a table")
    kinds: dict[str, KindSpec] = {}
    for name, spec in raw.items():
        where = f"{source}: resources.{name}"
        if not _KIND_NAME.match(name):
            raise ConfigurationError(f"{where}: a kind is a lower-case name (letters, _, digits)")
        if not isinstance(spec, dict):
            raise ConfigurationError(f"{where}: must be {{ read_action = ..., ... }}")
        unknown = set(spec) - {"read_action", "visibility", "grants"}
        if unknown:
            raise ConfigurationError(
                f"{where}: unknown key(s) {sorted(unknown)}; "
                "allowed: read_action, visibility, grants"
            )
        read_action = spec.get("read_action")
        if not isinstance(read_action, str) or not _ACTION.match(read_action):
            raise ConfigurationError(f"{where}: needs read_action = 'kind:verb'")
        visibility = spec.get("visibility", [])
        if (
            not isinstance(visibility, list)
            or not all(isinstance(v, str) and _VISIBILITY.match(v) for v in visibility)
            or len(set(visibility)) != len(visibility)
        ):
            raise ConfigurationError(
                f'{where}: visibility must be a list of distinct values, e.g. ["public", "private"]'
            )
        grants = spec.get("grants", False)
        if not isinstance(grants, bool):
            raise ConfigurationError(f"{where}: grants must be true or false")
        if grants and not visibility:
            raise ConfigurationError(f"{where}: grants widen visibility: declare visibility too")
        if name in _SPECIAL_KINDS and (visibility or grants):
            raise ConfigurationError(f"{where}: a {name} has no visibility or grants")
        kinds[name] = KindSpec(
            name=canonical(name),
            read_action=canonical(read_action),
            visibilities=tuple(canonical(v) for v in visibility),
            grants=grants,
        )
    return kinds


def _document(
    data: Mapping[str, Any], *, source: str, kinds: Mapping[str, KindSpec]
) -> list[Route]:
    unknown = set(data) - {"route", "resources"}
    if unknown:
        raise ConfigurationError(f"{source}: unknown top-level key(s) {sorted(unknown)}")
    raw_routes = data.get("route", [])
    if not isinstance(raw_routes, list):
        raise ConfigurationError(f"{source}: 'route' must be an array of tables ([[route]])")
    routes: list[Route] = []
    for i, raw in enumerate(raw_routes, start=1):
        routes.extend(_route_from(raw, f"{source} route #{i}", kinds))
    return routes


def load_routes(path: str | Path, *, host_files: Sequence[str | Path] = ()) -> RouteTable:
    """The table in ``path``, with each of ``host_files`` layered over it.

    Host files hold ``[[route]]`` entries in the same format (the host app's own
    endpoints: docs, health checks, static files); ``[resources]`` stays the main table's,
    and host routes may name the kinds it declares.
    A host route that another file already declares is a :class:`ConfigurationError`
    naming both files: layering adds routes, it never replaces one.
    """
    data = _read(Path(path))
    kinds = _kinds(data.get("resources", {}), str(path))
    routes = _document(data, source=str(path), kinds=kinds)
    for host_file in host_files:
        data = _read(Path(host_file))
        if "resources" in data:
            raise ConfigurationError(
                f"{host_file}: [resources] belongs to the main route table ({path}), "
                "not to a host routes file"
            )
        routes.extend(_document(data, source=str(host_file), kinds=kinds))
    return RouteTable(routes, kinds=kinds)


def _read(file: Path) -> dict[str, Any]:
    try:
        with file.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigurationError(f"route table not found: {file}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{file}: TOML syntax error: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{file}: not valid UTF-8 (TOML files are UTF-8)") from None
