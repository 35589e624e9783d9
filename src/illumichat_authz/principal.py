"""Who is calling: the typed result of a verified credential.

A principal exists only after a credential was verified; no header, flag or field can
construct one for an anonymous request. ``scopes`` can only narrow what the role allows.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from types import MappingProxyType
from typing import Any

__all__ = ["CredentialKind", "Principal"]


class CredentialKind(StrEnum):
    SESSION = "session"  # Auth.js cookie (JWT or database strategy)
    AUTH0 = "auth0"  # Auth0-issued bearer JWT
    API_KEY = "api_key"  # IllumiChat API key


def _no_claims() -> Mapping[str, Any]:
    return MappingProxyType({})


@dataclass(frozen=True, slots=True, kw_only=True)
class Principal:
    user_id: str
    kind: CredentialKind
    #: The active workspace (session claim) or the bound workspace (API key).
    workspace: str | None = None
    email: str | None = None
    name: str | None = None
    #: ``None``: not narrowed. Otherwise the only actions this credential may use.
    scopes: frozenset[str] | None = None
    #: True when the credential is bound to ``workspace`` and may act nowhere else.
    workspace_bound: bool = False
    #: Unix time after which the credential is no longer valid, where known.
    expires_at: float | None = None
    #: An identifier safe to log (API key id, token hash prefix); never the secret.
    credential_id: str | None = None
    claims: Mapping[str, Any] = field(default_factory=_no_claims, repr=False, compare=False)

    @property
    def is_authenticated(self) -> bool:
        """For frameworks (Starlette, Django) that ask the user object this."""
        return True

    @property
    def display_name(self) -> str:
        """Starlette's ``BaseUser.display_name``: the name, else the email, else the id."""
        return self.name or self.email or self.user_id

    @property
    def identity(self) -> str:
        """Starlette's ``BaseUser.identity``: the user id."""
        return self.user_id

    def as_dict(self) -> dict[str, Any]:
        """The JSON-safe view used in decisions, logs and identity headers."""
        return {
            "user_id": self.user_id,
            "kind": self.kind.value,
            "workspace": self.workspace,
            "scopes": sorted(self.scopes) if self.scopes is not None else None,
            "credential_id": self.credential_id,
        }
