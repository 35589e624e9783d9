"""Flask extension: decide every request in ``before_request``; ``@authz.require(action)``.

The principal is on ``flask.g.principal`` (``None`` on public and webhook routes) and the
Decision on ``flask.g.authz_decision``. A webhook body the core read is put back in
``wsgi.input`` before Flask first touches the stream, so ``request.get_data()`` sees it.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from ._common import missing_extra

try:
    import flask
except ImportError as exc:  # pragma: no cover - exercised only without the extra
    raise missing_extra("Flask", "flask") from exc

from ..authorizer import Authorizer
from ..decision import Decision
from ..reasons import Reason
from ._common import access_arguments, answers_itself, render, request_id
from .wsgi import decide_environ, facts_from_environ

__all__ = ["IllumiChatAuthz"]

P = ParamSpec("P")
R = TypeVar("R")
_EXTENSION = "illumichat_authz"


def _respond(decision: Decision, rid: str) -> flask.Response:
    rendered = render(decision, rid)
    return flask.Response(rendered.body, status=rendered.status, headers=list(rendered.headers))


class IllumiChatAuthz:
    """``IllumiChatAuthz(app, authorizer=...)`` or ``init_app(app)`` later (app factories)."""

    def __init__(self, app: flask.Flask | None = None, *, authorizer: Authorizer) -> None:
        self.authorizer = authorizer
        if app is not None:
            self.init_app(app)

    def init_app(self, app: flask.Flask) -> None:
        app.extensions[_EXTENSION] = self
        app.before_request(self._before_request)
        app.after_request(self._after_request)

    def _before_request(self) -> flask.Response | None:
        decision, rid = decide_environ(self.authorizer, flask.request.environ)
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
        this request as ``action`` (a mismatch is a configuration mistake: 403).

        With ``resource``/``workspace`` (names of the view's URL variables) the view names
        its resource itself: ``decide_access`` decides ``action`` on it, whatever the
        route table says of the URL (which must still be let through, e.g. with
        ``[routes] undeclared = "authenticated"``).
        """
        if (resource is not None or workspace is not None) and action is None:
            raise ValueError("require(resource=... or workspace=...) needs an action")

        def decorate(view: Callable[P, R]) -> Callable[P, R | flask.Response]:
            @functools.wraps(view)
            def wrapper(*args: P.args, **kwargs: P.kwargs) -> R | flask.Response:
                decision: Any = flask.g.get("authz_decision")
                rid = flask.g.get("authz_request_id") or request_id(
                    facts_from_environ(flask.request.environ).headers
                )
                if not isinstance(decision, Decision):
                    # before_request did not run (e.g. another hook answered first): decide.
                    decision, rid = decide_environ(self.authorizer, flask.request.environ)
                    if answers_itself(decision):
                        return _respond(decision, rid)
                if resource is not None or workspace is not None:
                    decision = self._access(decision, action or "", resource, workspace)
                    if not decision.allowed:
                        return _respond(decision, rid)
                elif action is not None and decision.action != action:
                    denied = Decision.of(Reason.POLICY_DENIED, f"this endpoint requires {action}")
                    return _respond(denied, rid)
                if decision.principal is None:
                    return _respond(
                        Decision.of(
                            Reason.AUTHENTICATION_REQUIRED,
                            "authentication required; sign in and retry",
                            headers=(("WWW-Authenticate", 'Bearer realm="illumichat"'),),
                        ),
                        rid,
                    )
                return view(*args, **kwargs)

            return wrapper

        return decorate

    def _access(
        self, decision: Decision, action: str, resource: str | None, workspace: str | None
    ) -> Decision:
        principal = decision.principal
        if principal is None:
            return decision  # the caller below answers 401
        arguments = access_arguments(
            self.authorizer, principal, action, resource, workspace, flask.request.view_args or {}
        )
        if isinstance(arguments, Decision):
            return arguments
        return self.authorizer.decide_access(**arguments)
