"""Flask extension: decide every request in ``before_request``; ``@authz.require(action)``.
On allow, ``flask.g.principal`` (``None`` on public routes) and ``flask.g.authz_decision``."""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from ._common import raise_import_failure

try:
    import flask
except ImportError as exc:
    raise_import_failure(exc, module="flask", framework="Flask", extra="flask")

from ..authorizer import Authorizer
from ..decision import Decision
from ..errors import ConfigurationError
from ._common import (
    allowed_headers,
    answers_itself,
    configured_authorizer,
    internal_error,
    log,
    render,
    request_id,
)
from ._require import Endpoint, require
from .route_check import Requirement, check_flask_on_first_request, mark
from .wsgi import decide_environ, environ_incoming, read_environ_body

__all__ = ["CONFIG_KEY", "IllumiChatAuthz"]

P = ParamSpec("P")
R = TypeVar("R")
_EXTENSION = "illumichat_authz"
#: ``app.config`` key: an :class:`Authorizer`, or the path of a TOML configuration file.
CONFIG_KEY = "ILLUMICHAT_AUTHZ"


def _respond(decision: Decision, rid: str) -> flask.Response:
    rendered = render(decision, rid)
    return flask.Response(rendered.body, status=rendered.status, headers=list(rendered.headers))


def _configured_authorizer(app: flask.Flask) -> Authorizer:
    value = app.config.get(CONFIG_KEY)
    authorizer = configured_authorizer(value)
    if authorizer is None:
        given = "it is not set" if value is None else f"not {type(value).__name__}"
        raise ConfigurationError(
            f'IllumiChatAuthz on app {app.name!r}: app.config["{CONFIG_KEY}"] must be an '
            f"Authorizer or a configuration file path ({given}), or pass authorizer= to "
            "IllumiChatAuthz or init_app"
        )
    return authorizer


def _app_authorizer() -> Authorizer | None:
    """The current app's authorizer; ``None`` (logged) if ``init_app`` never ran on it."""
    authorizer = flask.current_app.extensions.get(_EXTENSION)
    if isinstance(authorizer, Authorizer):
        return authorizer
    log.error(
        "IllumiChatAuthz on app %r, which init_app never initialised: request denied",
        flask.current_app.name,
    )
    return None


class IllumiChatAuthz:
    """``IllumiChatAuthz(app, authorizer=...)``, or ``IllumiChatAuthz()`` then ``init_app``."""

    def __init__(
        self, app: flask.Flask | None = None, *, authorizer: Authorizer | None = None
    ) -> None:
        #: For apps whose ``init_app`` is given none; ``None``: ``app.config[CONFIG_KEY]``.
        self.default_authorizer = authorizer
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask, *, authorizer: Authorizer | None = None) -> None:
        """Decide every request of ``app`` with ``authorizer``, else the constructor's, else
        ``app.config[CONFIG_KEY]``'s; none is a :class:`ConfigurationError` here."""
        if _EXTENSION in app.extensions:
            raise ConfigurationError(f"IllumiChatAuthz is already initialised on app {app.name!r}")
        if authorizer is None:
            authorizer = self.default_authorizer
        if authorizer is None:
            authorizer = _configured_authorizer(app)
        app.extensions[_EXTENSION] = authorizer
        app.before_request(self._before_request)
        app.after_request(self._after_request)
        check_flask_on_first_request(app, lambda: authorizer)  # [routes] check_app

    def _before_request(self) -> flask.Response | None:
        authorizer = _app_authorizer()
        if authorizer is None:
            return _respond(internal_error(), request_id([]))
        decision, rid = decide_environ(authorizer, flask.request.environ)
        flask.g.authz_request_id = rid
        if answers_itself(decision):
            return _respond(decision, rid)
        flask.g.authz_decision = decision
        flask.g.principal = decision.principal
        return None

    def _after_request(self, response: flask.Response) -> flask.Response:
        # An allowed answer carries the request id too, as every denial does.
        g = flask.g
        rid = g.get("authz_request_id")
        decision = g.get("authz_allowed")
        if decision is None:
            decision = g.get("authz_decision")
        if rid and isinstance(decision, Decision):
            for name, value in allowed_headers(decision, rid):
                if name not in response.headers:
                    response.headers[name] = value
        elif rid and "x-request-id" not in response.headers:
            response.headers["x-request-id"] = rid
        return response

    def require(
        self,
        action: str | None = None,
        *,
        resource: str | None = None,
        workspace: str | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R | flask.Response]]:
        """Demand a verified principal, and that the route table declares the request as
        ``action``; or, with ``resource``/``workspace`` (URL variables), ``decide_access``."""
        endpoint = Endpoint(action, resource, workspace)

        def decorate(view: Callable[P, R]) -> Callable[P, R | flask.Response]:
            @functools.wraps(view)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | flask.Response:
                environ, g = flask.request.environ, flask.g
                incoming = environ_incoming(
                    environ, flask.request.view_args or {}, g.get("authz_request_id")
                )
                rid = incoming.rid
                authorizer = _app_authorizer()
                if authorizer is None:
                    return _respond(internal_error(), rid)
                seen: Any = g.get("authz_decision")
                seen = seen if isinstance(seen, Decision) else None  # before_request did not run
                read_body = functools.partial(read_environ_body, environ)
                decision = require(authorizer, endpoint, seen, incoming, read_body=read_body)
                if answers_itself(decision):
                    return _respond(decision, rid)
                g.principal = decision.principal
                g.authz_allowed = decision  # its revision goes on the answer
                return view(*args, **kwargs)

            requirement = Requirement(action, names_resource=endpoint.names_resource)
            return mark(wrapper, requirement)

        return decorate
