"""What a decision knows so far, and the deny each kind of failure means.

One ``Trace`` per decision carries the context, so that a failure anywhere still reports
the route, resource and principal it happened on. :func:`failure` is the one place an
exception becomes a deny; each entry point calls it from its one ``try``.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from types import MappingProxyType

from ..decision import Decision, ResourceRef
from ..denials import INTERNAL_ERROR_MESSAGE, www_authenticate
from ..errors import AuthzError, CredentialError
from ..principal import Principal
from ..reasons import STATUS_OF, Reason
from ..routes import Route
from .lookups import propagates

__all__ = ["Trace", "failure"]

_log = logging.getLogger("illumichat_authz")

_NO_PARAMS: Mapping[str, str] = MappingProxyType({})
# tuple.__new__ skips a NamedTuple's Python-level __new__ (same fields, in order): about
# 0.13 µs per Decision, on every request. Used here and for the small records of the hot
# path (ResourceRef), nowhere else.
new_tuple = tuple.__new__


class Trace:
    """What is known so far, so that a failure anywhere still reports its context.

    A slotted class with a plain ``__init__``: the cheapest mutable record Python has.
    """

    __slots__ = ("explanation", "params", "principal", "resource", "revision", "role", "route")

    def __init__(self, principal: Principal | None = None, revision: str | None = None) -> None:
        self.route: Route | None = None
        self.params: Mapping[str, str] = _NO_PARAMS
        self.principal: Principal | None = principal
        self.resource: ResourceRef | None = None
        self.role: str | None = None
        self.explanation: tuple[str, ...] = ()
        #: The deciding policy's revision, on every decision made from this trace.
        self.revision = revision

    def decision(
        self,
        reason: Reason,
        message: str,
        *,
        status: int | None = None,
        headers: tuple[tuple[str, str], ...] = (),
    ) -> Decision:
        route = self.route
        params = self.params
        return new_tuple(
            Decision,
            (
                STATUS_OF[reason] if status is None else status,
                reason,
                message,
                route.id if route else None,
                route.route_class if route else None,
                route.action if route else None,
                self.resource,
                self.principal,
                self.role,
                headers,
                self.explanation,
                tuple(params.items()) if params else (),
                None,
                self.revision,
            ),
        )


def failure(exc: BaseException, trace: Trace) -> Decision:
    """The deny ``exc`` means, logged once: a challenge for a bad credential, the error's
    own status for ours (a failed lookup is a 503 by now, see ``lookups.unavailable``), a
    500 for anything else. Never an allow. ``Need``, cancellation and interpreter exits
    are raised again: they are not failures of the decision."""
    if propagates(exc):
        raise exc
    if isinstance(exc, CredentialError):
        trace.principal = None
        return trace.decision(
            exc.reason, f"{exc.message}; sign in again", headers=www_authenticate(exc)
        )
    if isinstance(exc, AuthzError):
        if exc.status >= 500:
            cause = exc.__cause__
            _log.warning(
                "denied with %s: %s%s",
                exc.reason.value,
                exc.message,
                f" ({type(cause).__name__})" if cause is not None else "",
            )
        return trace.decision(exc.reason, exc.message)
    _log.error("internal error while deciding; the request is denied", exc_info=exc)
    return trace.decision(Reason.INTERNAL_ERROR, INTERNAL_ERROR_MESSAGE)


def passed_uncounted(trace: Trace) -> None:
    """A route with ``rate_limit_unavailable = "pass"`` goes on uncounted while its
    storage is down: said in the decision's explanation (the limiter logs the outage)."""
    trace.explanation = (
        *trace.explanation,
        "rate limit not counted: its storage is unavailable and this route passes then",
    )
