"""The ``request.user`` the Django adapter gives Django and DRF, and :func:`attach`, which
sets it (no Django import).

There is no database row behind a principal, so there are no model permissions either:
what a user may do is the policy's call (``decide_access``).
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from ..decision import Decision
from ..principal import Principal

__all__ = ["AnonymousPrincipalUser", "PrincipalUser", "attach"]


class _EmptyManager:
    """Stands in for ``user.groups`` / ``user.user_permissions``: always empty."""

    def all(self) -> list[object]:
        return []

    def exists(self) -> bool:
        return False


_EMPTY_MANAGER = _EmptyManager()


class _NoModelPermissions:
    """Django's permission API, answered "no": what a user may do is the policy's call
    (``decide_access``), not ``auth.Permission`` rows that do not exist for these users.
    ``permission_required``, the admin and ``DjangoModelPermissions`` then deny cleanly
    instead of failing with ``AttributeError``."""

    __slots__ = ()
    groups = _EMPTY_MANAGER
    user_permissions = _EMPTY_MANAGER

    def has_perm(self, perm: str, obj: object = None) -> bool:
        return False

    def has_perms(self, perm_list: Iterable[str], obj: object = None) -> bool:
        return False

    def has_module_perms(self, app_label: str) -> bool:
        return False

    def get_all_permissions(self, obj: object = None) -> set[str]:
        return set()


@dataclass(frozen=True, slots=True)
class PrincipalUser(_NoModelPermissions):
    """A ``request.user`` for a verified principal; there is no database row behind it."""

    principal: Principal
    is_authenticated = True
    is_anonymous = False
    is_active = True
    is_staff = False
    is_superuser = False

    @property
    def pk(self) -> str:
        return self.principal.user_id

    id = pk
    username = pk

    def get_username(self) -> str:
        return self.principal.user_id

    def __str__(self) -> str:
        return self.principal.user_id


@dataclass(frozen=True, slots=True)
class AnonymousPrincipalUser(_NoModelPermissions):
    """``request.user`` on public and webhook routes (unless Django's auth set one)."""

    is_authenticated = False
    is_anonymous = True
    is_active = False
    is_staff = False
    is_superuser = False
    pk = None
    id = None
    username = ""

    def get_username(self) -> str:
        return ""


def attach(request: Any, decision: Decision) -> None:
    """Hand the app an allowed decision: ``request.principal``, ``.user``, ``.authz_decision``."""
    request.authz_decision = decision
    request.principal = decision.principal
    if decision.principal is not None:
        request.user = PrincipalUser(decision.principal)
    elif not hasattr(request, "user"):
        request.user = AnonymousPrincipalUser()
