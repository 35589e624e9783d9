"""The answer: a :class:`Decision` with a status, a reason code and a human message."""

from __future__ import annotations

from typing import Any, NamedTuple

from .principal import Principal
from .reasons import STATUS_OF, Reason

__all__ = ["Decision", "ResourceRef"]


class ResourceRef(NamedTuple):
    kind: str
    id: str | None
    workspace: str | None

    def as_dict(self) -> dict[str, Any]:
        return {"kind": self.kind, "id": self.id, "workspace": self.workspace}


class Decision(NamedTuple):
    """One decision. Immutable; cheap to build (a tuple), since one is made per request.

    Never test a decision for truth (``if decision:``): use ``decision.allowed``. Truth
    testing raises ``TypeError`` so that the mistake cannot turn into an allow.
    """

    status: int
    reason: Reason
    message: str
    #: The matched route, "METHOD /template"; ``None`` when nothing matched.
    route: str | None = None
    route_class: str | None = None
    action: str | None = None
    resource: ResourceRef | None = None
    principal: Principal | None = None
    #: Role of the caller in the workspace where one was looked up.
    role: str | None = None
    #: Headers to send with the response (WWW-Authenticate, Retry-After, RateLimit).
    headers: tuple[tuple[str, str], ...] = ()
    #: The policy rules that allowed, or what was missing for a deny.
    explanation: tuple[str, ...] = ()
    #: Path parameters of the matched route (for adapters and explanations).
    params: tuple[tuple[str, str], ...] = ()
    #: With ``[database]``: the facts revision this instance had applied when it decided
    #: (sent as ``X-Authz-Revision``; a client passes it back to read its own writes).
    facts_revision: int | None = None
    #: The revision of the policy that decided (its files' digest, ``Core.policy_revision``):
    #: one per decision, since a policy swap is atomic (``policy_rollout``).
    policy_revision: str | None = None

    def __bool__(self) -> bool:
        raise TypeError("a Decision has no truth value; use decision.allowed")

    @property
    def allowed(self) -> bool:
        return self.status == 200

    @property
    def scopes(self) -> list[str]:
        """Starlette's ``request.auth.scopes`` (``@requires("authenticated")`` reads it).

        ``"authenticated"`` when a credential was verified, then the credential's own
        scopes (API key actions), if it has any.
        """
        p = self.principal
        if p is None:
            return []
        return ["authenticated", *sorted(p.scopes or ())]

    @classmethod
    def of(cls, reason: Reason, message: str, **kwargs: Any) -> Decision:
        """A decision whose status is the one ``reason`` implies."""
        status = kwargs.pop("status", STATUS_OF[reason])
        return cls(status, reason, message, **kwargs)

    def as_dict(self) -> dict[str, Any]:
        """The JSON shape the CLI prints (stable: other services parse it)."""
        out = {
            "status": self.status,
            "reason": self.reason.value,
            "message": self.message,
            "route": self.route,
            "action": self.action,
            "principal": self.principal.as_dict() if self.principal else None,
            "headers": dict(self.headers),
            "resource": self.resource.as_dict() if self.resource else None,
            "role": self.role,
            "explanation": list(self.explanation),
        }
        if self.facts_revision is not None:
            out["facts_revision"] = self.facts_revision
        return out
