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
from .vocab import ResourceKind

__all__ = [
    "ResourceSpec",
    "Route",
    "RouteClass",
    "RouteMatch",
    "RouteTable",
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
    #: The route that named the parameter at this position (for conflict messages).
    param_origin: str = ""
    #: ``{name:path}`` routes below this node, per method: they own every deeper path.
    wildcard: dict[str, Route] = field(default_factory=dict)
    wildcard_name: str | None = None
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
        if match is None and segments and segments[-1] == "" and self.path_exists(segments[:-1]):
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

    def path_exists(self, segments: tuple[str, ...]) -> bool:
        """Whether some method is declared for this path (for diagnostics)."""
        return any(self.match(m, segments) for m in {r.method for r in self.routes})


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
    segments = _split_template(path)
    for i, seg in enumerate(segments):
        last = i == len(segments) - 1
        pm = _PARAM.match(seg) or _WILDCARD.match(seg)
        if pm:
            names.append(pm.group(1))
            if seg.endswith(":path}") and (not last or raw["class"] != RouteClass.PUBLIC):
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
    routes, read_actions = _document(data, source=source)
    return RouteTable(routes, read_actions=read_actions)


def _document(
    data: Mapping[str, Any], *, source: str
) -> tuple[list[Route], dict[ResourceKind, str]]:
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
    return routes, read_actions


def load_routes(path: str | Path, *, host_files: Sequence[str | Path] = ()) -> RouteTable:
    """The table in ``path``, with each of ``host_files`` layered over it.

    Host files hold ``[[route]]`` entries in the same format (the host app's own
    endpoints: docs, health checks, static files); ``[resources]`` stays the main table's.
    A host route that another file already declares is a :class:`ConfigurationError`
    naming both files: layering adds routes, it never replaces one.
    """
    routes, read_actions = _document(_read(Path(path)), source=str(path))
    for host_file in host_files:
        data = _read(Path(host_file))
        if "resources" in data:
            raise ConfigurationError(
                f"{host_file}: [resources] belongs to the main route table ({path}), "
                "not to a host routes file"
            )
        routes.extend(_document(data, source=str(host_file))[0])
    return RouteTable(routes, read_actions=read_actions)


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
