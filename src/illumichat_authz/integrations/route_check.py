"""The framework's routes against the route table, at start-up (``[routes] check_app``).

Two sources of truth drift apart silently: a FastAPI path, a Flask rule or a Django URL
the table does not classify is denied on every request (``undeclared_route``), and a
``require("assistant:update")`` on the table's ``assistant:read`` route refuses every
request. This module lists both before the first request: one small function per
framework turns its routes into :class:`AppRoute` (paths in the table's template syntax),
and :func:`check_routes` compares them with the table. Each adapter calls one function
from ``install()`` / ``init_app()`` / its middleware; ``illumichat-authz policy check
--app module:app`` calls :func:`check_app`.

Nothing here imports a framework at import time: each function imports its own.
``require(action)`` records what it demands with :func:`mark` (an attribute on the
FastAPI dependency or the Flask view); DRF views say it with ``authz_action``.
"""

from __future__ import annotations

import logging
import re
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, TypeVar

from ..errors import ConfigurationError
from ..policy_check import Finding

if TYPE_CHECKING:
    from ..authorizer import Authorizer
    from ..core import Core
    from ..routes import RouteTable

__all__ = [
    "STATE_KEY",
    "AppRoute",
    "Requirement",
    "check_app",
    "check_asgi",
    "check_django",
    "check_fastapi",
    "check_flask_on_first_request",
    "check_routes",
    "check_wsgi",
    "django_routes",
    "enforce",
    "flask_routes",
    "install_fastapi_check",
    "mark",
    "starlette_routes",
]

log = logging.getLogger("illumichat_authz.integrations")

F = TypeVar("F", bound=Callable[..., Any])
#: The attribute :func:`mark` sets.
_ATTRIBUTE = "authz_requirement"
#: Where FastAPI's ``install()`` keeps the authorizer on ``app.state``.
STATE_KEY = "illumichat_authz"
#: Methods not compared: HEAD is classified as GET; OPTIONS are preflights or automatic.
_SKIPPED = frozenset({"HEAD", "OPTIONS"})
_STARLETTE_PARAM = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*)(?::([A-Za-z_]+))?\}")
# Flask and Django converters: <name>, <int:name>, <path:name>, <any(a,b):name>.
_ANGLE_PARAM = re.compile(r"<(?:([A-Za-z_][A-Za-z0-9_]*)(?:\([^)]*\))?:)?([A-Za-z_][A-Za-z0-9_]*)>")
_REGEX_GROUP = re.compile(r"\(\?P<([A-Za-z_][A-Za-z0-9_]*)>([^()]*)\)")
_PLAIN = re.compile(r"[A-Za-z0-9\-._~]*\Z")


@dataclass(frozen=True, slots=True)
class Requirement:
    """What a ``require()`` / ``authorized()`` / view demands of the table."""

    #: The action the table must declare for the request (``None``: any).
    action: str | None
    #: It names its resource itself (``require(action, resource=...)``): ``decide_access``
    #: decides, so the table's action for the path does not matter.
    names_resource: bool = False
    #: It finds the authorizer on ``app.state`` (FastAPI: put there by ``install()``).
    uses_app_state: bool = False


@dataclass(frozen=True, slots=True)
class AppRoute:
    """One framework route: its methods (``None``: any), its path as a table template
    (``None``: not expressible), what it requires, and where it was declared."""

    methods: tuple[str, ...] | None
    template: str | None
    requirements: tuple[Requirement, ...]
    origin: str


def mark(target: F, requirement: Requirement) -> F:
    """Record ``requirement`` on a dependency or view, for :func:`check_routes`."""
    setattr(target, _ATTRIBUTE, requirement)
    return target


def _requirement(obj: Any) -> Requirement | None:
    found = getattr(obj, _ATTRIBUTE, None)
    return found if isinstance(found, Requirement) else None


def check_routes(
    table: RouteTable, routes: Iterable[AppRoute], *, undeclared: str = "deny"
) -> list[Finding]:
    """Every framework route the table does not classify, and every requirement the
    table's action for that route disagrees with (warnings: ``enforce`` decides)."""
    findings: list[Finding] = []
    for app_route in routes:
        origin, template = app_route.origin, app_route.template
        if template is None:
            findings.append(Finding("warning", f"{origin}: its path cannot be checked"))
            continue
        own_resource = any(r.names_resource for r in app_route.requirements)
        if app_route.methods is None:
            # Any method (a Django function view): declared if some method is.
            found = [r for m in sorted(table.methods) if (r := table.match_template(m, template))]
            if not found and not (own_resource and undeclared == "authenticated"):
                findings.append(_unclassified(origin, "*", template, undeclared))
            pairs = [(r.method, r) for r in found]
        else:
            pairs = []
            for method in app_route.methods:
                if method in _SKIPPED:
                    continue
                route = table.match_template(method, template)
                if route is not None:
                    pairs.append((method, route))
                elif not (own_resource and undeclared == "authenticated"):
                    findings.append(_unclassified(origin, method, template, undeclared))
        for method, route in pairs:
            for req in app_route.requirements:
                if req.action is not None and not req.names_resource and req.action != route.action:
                    findings.append(
                        Finding(
                            "warning",
                            f"{origin}: {method} {template} requires {req.action!r}, but "
                            f"{route.origin} declares {route.id} as {route.action!r}: every "
                            "request to it is refused (500)",
                        )
                    )
    return findings


def _unclassified(origin: str, method: str, template: str, undeclared: str) -> Finding:
    verdict = (
        "any signed-in caller may use it, with no policy check"
        if undeclared == "authenticated"
        else "it is denied as undeclared_route"
    )
    return Finding(
        "warning",
        f"{origin}: {method} {template} is not in the route table: {verdict}; declare it "
        "in a host routes file ([policies] host_routes)",
    )


def enforce(findings: list[Finding], mode: str, *, app: str) -> None:
    """Log the findings; raise :class:`ConfigurationError` on an error finding, or on any
    finding when ``mode`` is ``"error"``."""
    if mode == "off" or not findings:
        return
    fatal = mode == "error" or any(f.severity == "error" for f in findings)
    if fatal:
        lines = "\n".join(f"  {f}" for f in findings)
        raise ConfigurationError(f"route check of {app} ([routes] check_app = {mode!r}):\n{lines}")
    for finding in findings:
        log.warning("route check of %s: %s", app, finding)


# --- Starlette and FastAPI ----------------------------------------------------------------


def _starlette_template(path: str) -> str | None:
    def convert(m: re.Match[str]) -> str:
        return f"{{{m.group(1)}:path}}" if m.group(2) == "path" else f"{{{m.group(1)}}}"

    return _template(path, _STARLETTE_PARAM, convert)


def _template(
    path: str, pattern: re.Pattern[str], convert: Callable[[re.Match[str]], str]
) -> str | None:
    """``path`` in the table's syntax: a segment that is one parameter becomes one of
    ours; a segment mixing text and parameters (``file-{id}.txt``) a plain parameter."""
    if not path.startswith("/"):
        return None
    out: list[str] = []
    for seg in path[1:].split("/") if path != "/" else []:
        whole = pattern.fullmatch(seg)
        if whole is not None:
            out.append(convert(whole))
        elif pattern.search(seg):
            out.append("{_}")
        else:
            out.append(seg)
    return "/" + "/".join(out)


def _dependency_calls(route: Any) -> Iterator[Any]:
    stack = [getattr(route, "dependant", None)]
    while stack:
        dependant = stack.pop()
        if dependant is None:
            continue
        yield dependant.call
        stack.extend(dependant.dependencies)


def starlette_routes(routes: Iterable[Any], prefix: str = "") -> list[AppRoute]:
    """Starlette's (and FastAPI's) routes, through ``Mount`` and ``Host``."""
    from starlette.routing import Host, Mount, WebSocketRoute

    found: list[AppRoute] = []
    for route in routes:
        name = getattr(route, "name", None) or type(route).__name__
        if isinstance(route, Mount):
            inner = route.routes
            if inner:
                found.extend(starlette_routes(inner, prefix + route.path))
            else:  # a mounted ASGI app (StaticFiles...): everything below the mount
                path = f"{prefix}{route.path}/{{path:path}}"
                found.append(AppRoute(None, _starlette_template(path), (), f"mount {name!r}"))
        elif isinstance(route, Host):
            found.extend(starlette_routes(route.routes, prefix))
        elif hasattr(route, "path"):
            methods: tuple[str, ...] | None
            if isinstance(route, WebSocketRoute):
                methods = ("GET",)
            else:
                raw = getattr(route, "methods", None)
                methods = tuple(sorted(raw)) if raw else None
            reqs = tuple(r for c in _dependency_calls(route) if (r := _requirement(c)))
            path = prefix + route.path
            found.append(AppRoute(methods, _starlette_template(path), reqs, f"route {name!r}"))
    return found


def check_fastapi(app: Any, table: RouteTable, *, undeclared: str, behind: bool) -> list[Finding]:
    """A FastAPI or Starlette app's routes; ``behind``: ``AuthzMiddleware`` decides every
    request first (else only routes that use our dependencies are ours to check)."""
    from .asgi import AuthzMiddleware

    behind = behind or any(m.cls is AuthzMiddleware for m in getattr(app, "user_middleware", ()))
    routes = starlette_routes(app.routes)
    if not behind:
        routes = [r for r in routes if r.requirements]
    findings = check_routes(table, routes, undeclared=undeclared)
    installed = getattr(getattr(app, "state", None), STATE_KEY, None) is not None
    if not installed:
        findings.extend(_not_installed(routes, behind=behind))
    return findings


def _not_installed(routes: Iterable[AppRoute], *, behind: bool) -> list[Finding]:
    # Behind the middleware a plain require() reads its decision; one that names its
    # resource (decide_access) still needs the authorizer that install() stores.
    return [
        Finding(
            "error",
            f"{r.origin}: its dependency needs install(app, authorizer=...), which was not "
            "called: every request to it would be a 500",
        )
        for r in routes
        if any(q.uses_app_state and (q.names_resource or not behind) for q in r.requirements)
    ]


def install_fastapi_check(app: Any, authorizer: Authorizer) -> None:
    """Check ``app`` when it starts (its lifespan), once every route is declared: a
    ``ConfigurationError`` there is a failed start-up (uvicorn exits)."""
    from contextlib import asynccontextmanager

    from .asgi import AuthzMiddleware

    router = app.router
    original = router.lifespan_context

    @asynccontextmanager
    async def lifespan(inner: Any) -> Any:
        # An AuthzMiddleware in front checks the app itself (check_asgi).
        fronted = getattr(app.state, _FRONTED, False) or any(
            m.cls is AuthzMiddleware for m in app.user_middleware
        )
        if not fronted and authorizer.core.check_app != "off":
            core = authorizer.core
            findings = check_fastapi(app, core.routes, undeclared=core.undeclared, behind=False)
            enforce(findings, core.check_app, app=f"the app {type(app).__name__}")
        async with original(inner) as state:
            yield state

    router.lifespan_context = lifespan


#: ``app.state`` flag: an AuthzMiddleware wrapping the app from outside checked it.
_FRONTED = "illumichat_authz_fronted"


def check_asgi(app: Any, authorizer: Authorizer) -> None:
    """From ``AuthzMiddleware.__init__``: check the Starlette or FastAPI app it wraps.

    Wrapped from outside (``AuthzMiddleware(app)``), ``app`` is the application. Added
    with ``app.add_middleware``, Starlette builds it when the app starts and ``app`` is
    the next layer down: the routes are at the bottom of that chain, and the exception
    handlers on the way say whether ``install()`` was called.
    """
    core = authorizer.core
    if core.check_app == "off":
        return
    name = "the app behind AuthzMiddleware"
    if hasattr(app, "state") and hasattr(app, "routes"):
        setattr(app.state, _FRONTED, True)
        findings = check_fastapi(app, core.routes, undeclared=core.undeclared, behind=True)
        name = f"the app {type(app).__name__}"
    else:
        layer, handlers = app, None
        for _ in range(64):
            if hasattr(layer, "routes") or not hasattr(layer, "app"):
                break
            handlers = getattr(layer, "_exception_handlers", handlers)
            layer = layer.app
        if not hasattr(layer, "routes"):
            return  # not Starlette: nothing to compare
        routes = starlette_routes(layer.routes)
        findings = check_routes(core.routes, routes, undeclared=core.undeclared)
        if handlers is not None and any(r.requirements for r in routes):
            from .fastapi import AuthzDenied

            if AuthzDenied not in handlers:
                findings.extend(_not_installed(routes, behind=True))
    enforce(findings, core.check_app, app=name)


# --- Flask ----------------------------------------------------------------------------------


def _angle_template(path: str) -> str | None:
    def convert(m: re.Match[str]) -> str:
        return f"{{{m.group(2)}:path}}" if m.group(1) == "path" else f"{{{m.group(2)}}}"

    return _template(path, _ANGLE_PARAM, convert)


def flask_routes(app: Any) -> list[AppRoute]:
    """Every rule of ``app.url_map`` with the view's recorded requirement."""
    found: list[AppRoute] = []
    for rule in app.url_map.iter_rules():
        view = app.view_functions.get(rule.endpoint)
        req = _requirement(view)
        methods = tuple(sorted(rule.methods or ())) or None
        found.append(
            AppRoute(
                methods,
                _angle_template(rule.rule),
                (req,) if req else (),
                f"endpoint {rule.endpoint!r}",
            )
        )
    return found


def check_flask_on_first_request(app: Any, authorizer: Callable[[], Authorizer]) -> None:
    """From ``init_app``: check ``app`` on its first request, when Flask has every rule
    (it refuses new ones after it). A fatal finding answers that request and every later
    one with our 500, logged, rather than serving a misconfigured app."""
    import flask

    from ._common import internal_error, render, request_id

    lock = threading.Lock()
    state: dict[str, str | None] = {}

    def check() -> flask.Response | None:
        if "error" not in state:
            with lock:
                if "error" not in state:
                    state["error"] = _flask_outcome(app, authorizer())
        if state["error"] is None:
            return None
        rid = request_id([])
        log.error("request %s denied: %s", rid, state["error"])
        rendered = render(internal_error(), rid)
        return flask.Response(rendered.body, status=rendered.status, headers=list(rendered.headers))

    app.before_request_funcs.setdefault(None, []).insert(0, check)


def _flask_outcome(app: Any, authorizer: Authorizer) -> str | None:
    core = authorizer.core
    if core.check_app == "off":
        return None
    try:
        findings = check_routes(core.routes, flask_routes(app), undeclared=core.undeclared)
        enforce(findings, core.check_app, app=f"the Flask app {app.name!r}")
    except ConfigurationError as exc:
        return str(exc)
    except Exception:  # our bug: fail closed, as a start-up error would
        log.exception("the route check of the Flask app %r failed", app.name)
        return "the route check failed"
    return None


# --- Django -----------------------------------------------------------------------------------


def _regex_piece(regex: str) -> str | None:
    """A simple URL regex (``^api/(?P<pk>[^/.]+)/$``) in template syntax, else ``None``."""
    text = regex.removeprefix("^").removesuffix("$").removesuffix(r"\Z")
    out: list[str] = []
    for seg in text.split("/"):
        group = _REGEX_GROUP.fullmatch(seg)
        if group is not None:
            wide = ".+" in group.group(2) or ".*" in group.group(2)
            out.append(f"{{{group.group(1)}:path}}" if wide else f"{{{group.group(1)}}}")
            continue
        literal = re.sub(r"\\(.)", r"\1", seg)
        if not _PLAIN.match(literal) or re.search(r"[?*+|()\[\]]", seg.replace("\\.", "")):
            return None
        out.append(literal)
    return "/".join(out)


def _django_piece(pattern: Any) -> str | None:
    from django.urls.resolvers import RegexPattern, RoutePattern  # type: ignore[import-untyped]

    if isinstance(pattern, RoutePattern):
        route = str(pattern._route)
        return _ANGLE_PARAM.sub(
            lambda m: f"{{{m.group(2)}:path}}" if m.group(1) == "path" else f"{{{m.group(2)}}}",
            route,
        )
    if isinstance(pattern, RegexPattern):
        return _regex_piece(str(pattern._regex))
    return str(pattern)  # e.g. a language prefix


def _django_methods(callback: Any) -> tuple[str, ...] | None:
    actions = getattr(callback, "actions", None)  # a DRF ViewSet: {"get": "list", ...}
    if isinstance(actions, dict):
        return tuple(sorted(m.upper() for m in actions))
    cls = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
    if cls is None:
        return None  # a function view answers any method
    names = getattr(cls, "http_method_names", ())
    return tuple(sorted(m.upper() for m in names if hasattr(cls, m) and m.upper() not in _SKIPPED))


def django_routes(urlconf: Any = None) -> list[AppRoute]:
    """Every URL pattern of the URLconf (``settings.ROOT_URLCONF`` by default), through
    ``include()``; the view's ``authz_action`` (DRF) is what it requires."""
    from django.urls import URLPattern, URLResolver, get_resolver  # type: ignore[import-untyped]

    found: list[AppRoute] = []

    def walk(patterns: Iterable[Any], prefix: str | None) -> None:
        for entry in patterns:
            piece = _django_piece(entry.pattern)
            path = None if prefix is None or piece is None else prefix + piece
            if isinstance(entry, URLResolver):
                walk(entry.url_patterns, path)
            elif isinstance(entry, URLPattern):
                callback = entry.callback
                cls = getattr(callback, "view_class", None) or getattr(callback, "cls", None)
                action = getattr(cls, "authz_action", None) or getattr(
                    callback, "authz_action", None
                )
                reqs = (Requirement(action),) if isinstance(action, str) else ()
                named = cls or callback
                name = getattr(named, "__qualname__", None) or entry.name or repr(entry)
                found.append(
                    AppRoute(
                        _django_methods(callback),
                        "/" + path if path is not None else None,
                        reqs,
                        f"view {getattr(named, '__module__', '?')}.{name}",
                    )
                )

    walk(get_resolver(urlconf).url_patterns, "")
    return found


def check_django(authorizer: Authorizer, urlconf: Any = None) -> None:
    """From the Django middleware's ``__init__`` (Django builds it at start-up)."""
    core = authorizer.core
    if core.check_app == "off":
        return
    findings = check_routes(core.routes, django_routes(urlconf), undeclared=core.undeclared)
    enforce(findings, core.check_app, app="the Django URLconf")


def check_wsgi(app: Any, authorizer: Authorizer) -> None:
    """From ``AuthzWSGIMiddleware.__init__``: check the Flask app or Django handler it
    wraps (any other WSGI app has no routes to compare)."""
    core = authorizer.core
    if core.check_app == "off":
        return
    app = getattr(app, "__self__", app)  # `app.wsgi_app = AuthzWSGIMiddleware(app.wsgi_app)`
    kind = type(app).__module__.split(".")[0]
    if kind == "flask":
        routes, name = flask_routes(app), f"the Flask app {app.name!r}"
    elif kind == "django":
        routes, name = django_routes(), "the Django URLconf"
    else:
        return
    findings = check_routes(core.routes, routes, undeclared=core.undeclared)
    enforce(findings, core.check_app, app=name)


# --- policy check --app -------------------------------------------------------------------------


def check_app(target: Any, core: Core) -> list[Finding]:
    """The findings for ``target``: a FastAPI/Starlette app, a Flask app, a Django WSGI or
    ASGI handler (its ``ROOT_URLCONF``) or URLconf module, or one of those inside our
    ``AuthzMiddleware`` / ``AuthzWSGIMiddleware``."""
    from .asgi import AuthzMiddleware

    behind = False
    for _ in range(8):
        kind = type(target).__module__.split(".")[0]
        if kind in ("fastapi", "starlette"):
            return check_fastapi(target, core.routes, undeclared=core.undeclared, behind=behind)
        if kind == "flask":
            return check_routes(core.routes, flask_routes(target), undeclared=core.undeclared)
        if kind == "django":
            return check_routes(core.routes, django_routes(), undeclared=core.undeclared)
        if hasattr(target, "urlpatterns"):
            return check_routes(core.routes, django_routes(target), undeclared=core.undeclared)
        behind = behind or isinstance(target, AuthzMiddleware)
        if not hasattr(target, "app"):
            break
        target = target.app
    raise ConfigurationError(
        f"cannot check {type(target).__name__}: expected a FastAPI, Starlette, Flask or "
        "Django application (or a URLconf module)"
    )
