"""What an endpoint requires, enforced once for every framework (no framework imported).

An adapter hands over what it knows: the middleware's decision if one ran, the endpoint's
:class:`Endpoint`, and an :class:`Incoming` (how to build the request's facts, its
request id, its path parameters). :func:`require` (or :func:`arequire`) returns the
decision to enforce: the endpoint runs unless :func:`answers_itself` says otherwise, and
our own failure is a logged 500, never a raise. The steps are written once, as a
generator; the two drivers only call the authorizer (the httpx ``auth_flow`` idea).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Generator, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import TYPE_CHECKING, Any, Literal, NamedTuple

from ..decision import Decision
from ..denials import internal_error, sign_in
from ..errors import BadRequestError
from ..reasons import Reason
from ..request import RequestFacts
from ._common import answers_itself, check_host, log

if TYPE_CHECKING:
    from ..authorizer import Authorizer
    from ..principal import Principal

__all__ = [
    "DECIDE",
    "Endpoint",
    "Incoming",
    "access_arguments",
    "action_mismatch",
    "arequire",
    "require",
]

_NO_PARAMS: Mapping[str, Any] = MappingProxyType({})


@dataclass(frozen=True, slots=True)
class Endpoint:
    """What an endpoint demands: ``require(action, resource=..., workspace=...)``.

    ``action``: the action the route table must declare for the request (``None``: any);
    a mismatch is our configuration mistake, a logged 500. ``resource``/``workspace``:
    path parameters naming the resource id and the workspace; then ``decide_access``
    decides ``action`` on them, whatever the table says of the path. ``signed_in``: a
    request the table let through anonymously (a public route) is a 401.
    """

    action: str | None = None
    resource: str | None = None
    workspace: str | None = None
    signed_in: bool = True

    def __post_init__(self) -> None:
        if self.names_resource and self.action is None:
            raise ValueError("require(resource=... or workspace=...) needs an action")

    @property
    def names_resource(self) -> bool:
        return self.resource is not None or self.workspace is not None


#: Decide the request, as a middleware does: no action, a public route passes.
DECIDE = Endpoint(signed_in=False)


class Incoming(NamedTuple):
    """A framework's request as the shared steps need it. ``facts`` may raise
    :class:`BadRequestError` (the target and the mount disagree: a 400)."""

    facts: Callable[[], RequestFacts]
    rid: str
    http_version: str | None = None
    params: Mapping[str, Any] = _NO_PARAMS


# What the steps ask the authorizer: ("decide", facts), ("identify", facts) or
# ("decide_access", its keyword arguments).
_Ask = tuple[Literal["decide", "identify", "decide_access"], Any]
_Steps = Generator[_Ask, Decision, Decision]


def _steps(
    authorizer: Authorizer, endpoint: Endpoint, seen: Decision | None, incoming: Incoming
) -> _Steps:
    if seen is not None and answers_itself(seen):
        return seen  # a denial stays one: resource mode never overrides it
    if endpoint.names_resource:
        # Who: the middleware's verified principal, else identify the request here.
        principal = seen.principal if seen is not None else None
        if principal is None:
            facts = incoming.facts()
            identified = None if seen is not None else _bad_host(facts, incoming)
            if identified is None:
                identified = yield ("identify", facts)
            principal = identified.principal
            if not identified.allowed or principal is None:
                return identified
        arguments = access_arguments(
            authorizer,
            principal,
            endpoint.action or "",
            endpoint.resource,
            endpoint.workspace,
            incoming.params,
        )
        if isinstance(arguments, Decision):
            return arguments
        return (yield ("decide_access", arguments))
    if seen is None:
        facts = incoming.facts()
        seen = _bad_host(facts, incoming)
        if seen is None:
            seen = yield ("decide", facts)
        if answers_itself(seen):
            return seen
    mismatch = action_mismatch(seen, endpoint.action, incoming.rid)
    if mismatch is not None:
        return mismatch
    if endpoint.signed_in and seen.principal is None:
        return sign_in()
    return seen


def _bad_host(facts: RequestFacts, incoming: Incoming) -> Decision | None:
    # What AuthzMiddleware checks first, when no middleware did.
    return check_host(facts, http_version=incoming.http_version)


def require(
    authorizer: Authorizer,
    endpoint: Endpoint,
    seen: Decision | None,
    incoming: Incoming,
    *,
    read_body: Callable[[int], bytes | None] | None = None,
) -> Decision:
    """The decision ``endpoint`` enforces, over ``decide``/``identify``/``decide_access``.

    ``seen``: the middleware's allowing decision, ``None`` to decide here (``read_body``
    reads the body if the core asks).
    """
    try:
        steps = _steps(authorizer, endpoint, seen, incoming)
        ask = next(steps)
        while True:
            kind, argument = ask
            if kind == "decide":
                answer = authorizer.decide(argument, read_body=read_body)
            elif kind == "identify":
                answer = authorizer.identify(argument)
            else:
                answer = authorizer.decide_access(**argument)
            ask = steps.send(answer)
    except StopIteration as done:
        decision: Decision = done.value
        return decision
    except BadRequestError as exc:  # the target and the mount disagree
        return Decision.of(exc.reason, exc.message)
    except Exception:
        return _failed(incoming.rid)


async def arequire(
    authorizer: Authorizer,
    endpoint: Endpoint,
    seen: Decision | None,
    incoming: Incoming,
    *,
    read_body: Callable[[int], Awaitable[bytes | None]] | None = None,
) -> Decision:
    """:func:`require` over ``adecide``/``aidentify``/``adecide_access``."""
    try:
        steps = _steps(authorizer, endpoint, seen, incoming)
        ask = next(steps)
        while True:
            kind, argument = ask
            if kind == "decide":
                answer = await authorizer.adecide(argument, read_body=read_body)
            elif kind == "identify":
                answer = await authorizer.aidentify(argument)
            else:
                answer = await authorizer.adecide_access(**argument)
            ask = steps.send(answer)
    except StopIteration as done:
        decision: Decision = done.value
        return decision
    except BadRequestError as exc:
        return Decision.of(exc.reason, exc.message)
    except Exception:
        return _failed(incoming.rid)


def _failed(rid: str) -> Decision:
    log.exception("authorization failed; request %s denied", rid)
    return internal_error()


def access_arguments(
    authorizer: Authorizer,
    principal: Principal,
    action: str,
    resource: str | None,
    workspace: str | None,
    params: Mapping[str, Any],
) -> dict[str, Any] | Decision:
    """``decide_access``'s arguments for an endpoint that names its resource by path
    parameter, or the deny when the action acts on no resource kind the routes name."""
    kind = None
    if resource is not None:
        kind = authorizer.core.routes.action_kinds.get(action)
        if kind is None:
            return Decision.of(
                Reason.POLICY_DENIED, f"{action} acts on no resource kind the routes name"
            )
    return {
        "principal": principal,
        "action": action,
        "resource_kind": kind,
        "resource_id": str(params.get(resource, "")) if resource is not None else None,
        "workspace": (
            str(params[workspace])
            if workspace is not None and workspace in params
            else principal.workspace
        ),
    }


def action_mismatch(decision: Decision, required: str | None, rid: str) -> Decision | None:
    """The deny when an endpoint's ``require(action)`` is not the action the route table
    declares for the request: our configuration mistake, so a logged 500, never a 403
    that would send the caller to check a workspace role (``[routes] check_app`` lists
    these at start-up)."""
    if required is None or decision.action == required:
        return None
    log.error(
        "configuration error: the route table declares %s as %s, but its endpoint requires "
        "%s; request %s denied",
        decision.route or "this undeclared route",
        decision.action,
        required,
        rid,
    )
    return internal_error()
