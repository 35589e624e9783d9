"""The vocabulary the rules are written in.

Two sets are closed, because the compiled decision table enumerates them: membership
statuses (active or not) and relations (what the caller is to the resource); the policy
loader refuses any other value in those columns. The rest is the policy's own: roles are
whatever the ``g`` lines and rules of ``policy.csv`` name, resource kinds whatever
``routes.toml`` ``[resources]`` declares, and visibility values whatever each kind
declares there. ``Role``, ``ResourceKind`` and ``Visibility`` are only named constants
for the values IllumiChat's shipped policy uses; nothing parses a value through them.
"""

from __future__ import annotations

import sys
from enum import StrEnum

__all__ = [
    "NO_ROLE",
    "MembershipStatus",
    "Relation",
    "ResourceKind",
    "Role",
    "Visibility",
    "canonical",
]


class Role(StrEnum):
    """IllumiChat's roles (the shipped g lines): constants, not the set of roles."""

    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    GUEST = "guest"


def canonical(value: str) -> str:
    """The one ``str`` object for a vocabulary value (a role, status, action, relation,
    kind or visibility): every compiled key and every fact read from a file holds it, so
    that the decision table's key comparisons are pointer compares instead of ``memcmp``
    (equality never depends on it: a host's own string compares equal all the same)."""
    return sys.intern(str.__str__(value))


#: The role attribute of a caller with no membership in the workspace: no rule names it.
NO_ROLE = "none"


class MembershipStatus(StrEnum):
    """Rules distinguish only active memberships from all others ("invited", "suspended")."""

    ACTIVE = "active"
    INACTIVE = "inactive"


class Visibility(StrEnum):
    """The assistant kind's visibility values in the shipped routes.toml: constants."""

    PUBLIC = "public"
    WORKSPACE = "workspace"
    PRIVATE = "private"


class Relation(StrEnum):
    """What the caller is to the resource; the most specific one wins."""

    CREATOR = "creator"  # created the resource
    GRANTEE = "grantee"  # holds an explicit grant on the resource
    TARGET_OWNER = "target_owner"  # the membership acted on belongs to the top role
    NONE = "-"


class ResourceKind(StrEnum):
    """The kinds of the shipped routes.toml [resources]: constants, not the set of kinds."""

    ASSISTANT = "assistant"
    CHAT = "chat"
    WORKSPACE = "workspace"
    MEMBER = "member"
