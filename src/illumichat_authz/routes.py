"""Endpoint classification: which route a request is, from the table in ``routes.toml``.

Matching walks a segment trie. At each position a literal segment is tried before a
parameter (so ``/api/widget/tickets/create`` is its own route, not widget ``tickets``),
backtracking when the literal branch dead-ends. HEAD is classified as GET.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from types import MappingProxyType
from typing import Any, NamedTuple

from .errors import ConfigurationError
from .paths import canonical_segments
from .vocab import ResourceKind

__all__ = [
    "ResourceSpec",
    "Route",
    "RouteClass",
    "RouteMatch",
    "RouteTable",
    "load_routes",
]

_METHOD = re.compile(r"[A-Z]{1,16}\Z")
_MISSING = object()
#: Paths whose classification RouteTable.classify remembers.
_MEMO_SIZE = 4096
_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]{0,63})\}\Z")
_LITERAL = re.compile(r"[A-Za-z0-9\-._~]+\Z")
_RATE = re.compile(r"\s*(\d+)\s*(?:/|per)\s*(second|minute|hour|day)s?\s*\Z")
_HEADER_NAME = re.compile(r"[A-Za-z0-9-]{1,64}\Z")
# Path parameter values: anything printable but separators; the ids are compared as is.
_PARAM_VALUE = re.compile(r"[^\x00-\x20\x7f/\\]{1,256}\Z")


class RouteClass(StrEnum):
    PUBLIC = "public"
    WEBHOOK_TWILIO = "webhook:twilio"
    AUTHENTICATED = "authenticated"


@dataclass(frozen=True, slots=True)
class ResourceSpec:
    kind: ResourceKind
    param: str


@dataclass(frozen=True, slots=True, kw_only=True)
class Route:
    method: str
    template: str
    route_class: RouteClass
    action: str
    resource: ResourceSpec | None = None
    #: Ordered sources: "resource", "param:NAME", "header:name" (lower-cased), "principal".
    workspace: tuple[str, ...] = ()
    rate_limit: str | None = None
    #: For webhooks: the path parameter naming whose signing secret applies.
    signer: str | None = None
    #: Where the route was declared, for error messages ("routes.toml route #3").
    origin: str = ""
    #: "METHOD /template": how decisions, logs and rate-limit keys name the route.
    id: str = field(init=False, default="")
    #: ``workspace`` parsed once: (kind, argument) pairs, e.g. ("header", "x-workspace-id").
    workspace_plan: tuple[tuple[str, str], ...] = field(init=False, default=(), repr=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "id", f"{self.method} {self.template}")
        plan = tuple((kind, arg) for kind, _, arg in (s.partition(":") for s in self.workspace))
        object.__setattr__(self, "workspace_plan", plan)


class RouteMatch(NamedTuple):
    route: Route
    params: Mapping[str, str]


@dataclass(slots=True)
class _Node:
    literals: dict[str, _Node] = field(default_factory=dict)
    param: _Node | None = None
    param_name: str | None = None
    routes: dict[str, Route] = field(default_factory=dict)


class RouteTable:
    """An immutable set of routes with a trie for matching."""

    def __init__(self, routes: list[Route], *, read_actions: Mapping[ResourceKind, str]) -> None:
        self.routes: tuple[Route, ...] = tuple(routes)
        self.read_actions: Mapping[ResourceKind, str] = dict(read_actions)
        self._root = _Node()
        for route in routes:
            self._insert(route)
        self._memo: dict[tuple[str, str], RouteMatch | None] = {}
        #: Every method some route declares.
        self.methods: frozenset[str] = frozenset(r.method for r in self.routes)
        #: The kind of resource each action acts on, where its routes name one.
        self.action_kinds: Mapping[str, ResourceKind] = {
            r.action: r.resource.kind for r in self.routes if r.resource is not None
        }

    def _insert(self, route: Route) -> None:
        node = self._root
        for seg in _split_template(route.template):
            m = _PARAM.match(seg)
            if m:
                if node.param is None:
                    node.param = _Node()
                    node.param_name = m.group(1)
                elif node.param_name != m.group(1):
                    raise ConfigurationError(
                        f"{route.origin}: parameter {{{m.group(1)}}} at the position where another "
                        f"route has {{{node.param_name}}}; use one name per position"
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
        match = self.match(method, canonical_segments(raw_path, max_length=max_length))
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
        return None

    def path_exists(self, segments: tuple[str, ...]) -> bool:
        """Whether some method is declared for this path (for diagnostics)."""
        return any(self.match(m, segments) for m in {r.method for r in self.routes})


def _split_template(template: str) -> list[str]:
    return [] if template == "/" else template[1:].split("/")


def _workspace_sources(raw: Any, origin: str) -> tuple[str, ...]:
    if raw is None:
        return ()
    items = [raw] if isinstance(raw, str) else raw
    if not isinstance(items, list) or not all(isinstance(s, str) for s in items):
        raise ConfigurationError(f"{origin}: workspace must be a string or a list of strings")
    out: list[str] = []
    for src in items:
        kind, _, arg = src.partition(":")
        if kind in ("resource", "principal") and not arg:
            out.append(kind)
        elif kind == "param" and arg:
            out.append(f"param:{arg}")
        elif kind == "header" and _HEADER_NAME.match(arg):
            out.append(f"header:{arg.lower()}")
        else:
            raise ConfigurationError(f"{origin}: unknown workspace source {src!r}")
    return tuple(out)


def _route_from(raw: Any, origin: str) -> list[Route]:
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
    if not isinstance(path, str) or not path.startswith("/"):
        raise ConfigurationError(f"{origin}: path must start with '/'")
    names: list[str] = []
    for seg in _split_template(path):
        pm = _PARAM.match(seg)
        if pm:
            names.append(pm.group(1))
        elif not _LITERAL.match(seg):
            raise ConfigurationError(f"{origin}: bad path segment {seg!r} in {path!r}")
        elif seg in (".", ".."):
            # Canonical paths never hold dot segments (they are a 400): unreachable.
            raise ConfigurationError(
                f"{origin}: dot segment {seg!r} in {path!r}: no request can ever match it"
            )
    if len(set(names)) != len(names):
        raise ConfigurationError(f"{origin}: repeated parameter name in {path!r}")
    try:
        route_class = RouteClass(raw["class"])
    except ValueError:
        raise ConfigurationError(
            f"{origin}: class must be one of {[c.value for c in RouteClass]}"
        ) from None
    if not isinstance(action, str) or not re.fullmatch(r"[a-z_]+:[a-z_]+", action):
        raise ConfigurationError(f"{origin}: action must look like 'resource:verb'")
    resource = None
    if "resource" in raw:
        res = raw["resource"]
        if not isinstance(res, dict) or set(res) != {"kind", "param"}:
            raise ConfigurationError(f"{origin}: resource must be {{ kind = ..., param = ... }}")
        try:
            kind = ResourceKind(res["kind"])
        except ValueError:
            raise ConfigurationError(
                f"{origin}: resource kind must be one of {[k.value for k in ResourceKind]}"
            ) from None
        if res["param"] not in names:
            raise ConfigurationError(f"{origin}: resource param {res['param']!r} not in the path")
        resource = ResourceSpec(kind, res["param"])
    workspace = _workspace_sources(raw.get("workspace"), origin)
    for src in workspace:
        if src.startswith("param:") and src[6:] not in names:
            raise ConfigurationError(f"{origin}: workspace {src!r} names no path parameter")
    if route_class is RouteClass.AUTHENTICATED and resource is None and not workspace:
        raise ConfigurationError(
            f"{origin}: an authenticated route needs a resource or a workspace"
        )
    if not workspace and resource is not None:
        workspace = ("resource",)
    if (
        resource is not None
        and resource.kind is ResourceKind.MEMBER
        and not any(s.startswith("param:") for s in workspace)
    ):
        raise ConfigurationError(f"{origin}: a member resource needs workspace = ['param:...']")
    rate_limit = raw.get("rate_limit")
    if rate_limit is not None and (not isinstance(rate_limit, str) or not _RATE.match(rate_limit)):
        raise ConfigurationError(f"{origin}: rate_limit must look like '5/minute'")
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
            action=action,
            resource=resource,
            workspace=workspace,
            rate_limit=rate_limit,
            signer=signer,
            origin=origin,
        )
        for m in methods
    ]


def routes_from_document(data: Mapping[str, Any], *, source: str) -> RouteTable:
    unknown = set(data) - {"route", "resources"}
    if unknown:
        raise ConfigurationError(f"{source}: unknown top-level key(s) {sorted(unknown)}")
    raw_routes = data.get("route", [])
    if not isinstance(raw_routes, list):
        raise ConfigurationError(f"{source}: 'route' must be an array of tables ([[route]])")
    read_actions: dict[ResourceKind, str] = {}
    for kind_name, spec in dict(data.get("resources", {})).items():
        try:
            kind = ResourceKind(kind_name)
        except ValueError:
            raise ConfigurationError(f"{source}: resources.{kind_name}: unknown kind") from None
        if not isinstance(spec, dict) or not isinstance(spec.get("read_action"), str):
            raise ConfigurationError(f"{source}: resources.{kind_name}: needs read_action")
        read_actions[kind] = spec["read_action"]
    routes: list[Route] = []
    for i, raw in enumerate(raw_routes, start=1):
        routes.extend(_route_from(raw, f"{source} route #{i}"))
    return RouteTable(routes, read_actions=read_actions)


def load_routes(path: str | Path) -> RouteTable:
    file = Path(path)
    try:
        with file.open("rb") as fh:
            data = tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigurationError(f"route table not found: {file}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigurationError(f"{file}: TOML syntax error: {exc}") from None
    except UnicodeDecodeError:
        raise ConfigurationError(f"{file}: not valid UTF-8 (TOML files are UTF-8)") from None
    return routes_from_document(data, source=str(file))
