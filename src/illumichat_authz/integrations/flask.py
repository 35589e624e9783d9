"""Flask extension: decide every request in ``before_request``; ``@authz.require(action)``.

``IllumiChatAuthz(app, authorizer=...)``, or ``IllumiChatAuthz()`` and ``init_app(app)`` in
an app factory; docs/integrations.md has the rest. The principal is on ``flask.g.principal``
(``None`` on public and webhook routes), the Decision on ``flask.g.authz_decision``.
"""

from __future__ import annotations

import functools
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, ParamSpec, TypeVar

from ._common import raise_import_failure

try:
    import flask
except ImportError as exc:
    raise_import_failure(exc, module="flask", framework="Flask", extra="flask")

from ..authorizer import Authorizer
from ..decision import Decision
from ..errors import ConfigurationError
from ._common import answers_itself, authorizer_for_file, internal_error, log, render, request_id
from ._require import Endpoint, require
from .route_check import Requirement, check_flask_on_first_request, mark
from .wsgi import decide_environ, environ_incoming, read_environ_body

__all__ = ["CONFIG_KEY", "IllumiChatAuthz"]

P = ParamSpec("P")
R = TypeVar("R")
_EXTENSION = "illumichat_authz"
#: ``app.config`` key: an :class:`Authorizer`, or the path of a TOML configuration file.
CONFIG_KEY = "ILLUMICHAT_AUTHZ"


@dataclass(frozen=True, slots=True)
class _AppState:
    """What ``init_app`` keeps in ``app.extensions``: this app's authorizer."""

    authorizer: Authorizer


def _respond(decision: Decision, rid: str) -> flask.Response:
    rendered = render(decision, rid)
    return flask.Response(rendered.body, status=rendered.status, headers=list(rendered.headers))


def _configured_authorizer(app: flask.Flask) -> Authorizer:
    value = app.config.get(CONFIG_KEY)
    if isinstance(value, Authorizer):
        return value
    if isinstance(value, str | os.PathLike) and os.fspath(value):
        return authorizer_for_file(os.fspath(value))
    if value is None:
        raise ConfigurationError(
            f"IllumiChatAuthz: no authorizer for app {app.name!r}: set "
            f'app.config["{CONFIG_KEY}"] to an Authorizer or a configuration file path, '
            "or pass authorizer= to IllumiChatAuthz or init_app"
        )
    raise ConfigurationError(
        f'app.config["{CONFIG_KEY}"] must be an Authorizer or a configuration file path, '
        f"not {type(value).__name__}"
    )


def _app_authorizer() -> Authorizer | None:
    """The current app's authorizer; ``None`` (logged) if ``init_app`` never ran on it."""
    state = flask.current_app.extensions.get(_EXTENSION)
    if isinstance(state, _AppState):
        return state.authorizer
    log.error(
        "IllumiChatAuthz on app %r, which init_app never initialised: request denied",
        flask.current_app.name,
    )
    return None


def _decide() -> tuple[Decision, str]:
    authorizer = _app_authorizer()
    if authorizer is None:
        return internal_error(), request_id([])
    return decide_environ(authorizer, flask.request.environ)


class IllumiChatAuthz:
    """``IllumiChatAuthz(app, authorizer=...)``, or ``IllumiChatAuthz()`` then
    ``init_app(app)`` in an app factory (see the module docstring)."""

    def __init__(
        self, app: flask.Flask | None = None, *, authorizer: Authorizer | None = None
    ) -> None:
        #: The authorizer for apps whose ``init_app`` is given none; ``None``: each app's
        #: ``app.config["ILLUMICHAT_AUTHZ"]``.
        self.default_authorizer = authorizer
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask, *, authorizer: Authorizer | None = None) -> None:
        """Decide every request of ``app``. Its authorizer is ``authorizer``, else the one
        given to the constructor, else ``app.config["ILLUMICHAT_AUTHZ"]``; none at all is a
        :class:`ConfigurationError` here, at start-up."""
        if _EXTENSION in app.extensions:
            raise ConfigurationError(f"IllumiChatAuthz is already initialised on app {app.name!r}")
        if authorizer is None:
            authorizer = self.default_authorizer
        if authorizer is None:
            authorizer = _configured_authorizer(app)
        app.extensions[_EXTENSION] = _AppState(authorizer=authorizer)
        app.before_request(self._before_request)
        app.after_request(self._after_request)
        check_flask_on_first_request(app, lambda: authorizer)  # [routes] check_app

    def _before_request(self) -> flask.Response | None:
        decision, rid = _decide()
        flask.g.authz_request_id = rid
        if answers_itself(decision):
            return _respond(decision, rid)
        flask.g.authz_decision = decision
        flask.g.principal = decision.principal
        return None

    def _after_request(self, response: flask.Response) -> flask.Response:
        # An allowed answer carries the request id too, as every denial does.
        rid = flask.g.get("authz_request_id")
        if rid and "x-request-id" not in response.headers:
            response.headers["x-request-id"] = rid
        return response

    def require(
        self,
        action: str | None = None,
        *,
        resource: str | None = None,
        workspace: str | None = None,
    ) -> Callable[[Callable[P, R]], Callable[P, R | flask.Response]]:
        """Demand a verified principal and, given ``action``, that the route table declares
        this request as ``action``; with ``resource``/``workspace`` (the view's URL
        variables) ``decide_access`` decides ``action`` on them."""
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
                return view(*args, **kwargs)

            requirement = Requirement(action, names_resource=endpoint.names_resource)
            return mark(wrapper, requirement)

        return decorate
