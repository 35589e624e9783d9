"""The closed sets the rules are written in: roles, statuses, visibilities, relations.

These are the only values the policy files may use in their attribute columns; the
policy loader refuses anything else, which is what lets the compiled decision table
cover the whole attribute space.
"""

from __future__ import annotations

from enum import StrEnum

__all__ = [
    "NO_ROLE",
    "MembershipStatus",
    "Relation",
    "ResourceKind",
    "Role",
    "Visibility",
    "normalize_status",
]


class Role(StrEnum):
    OWNER = "owner"
    ADMIN = "admin"
    MEMBER = "member"
    GUEST = "guest"


#: The role attribute of a caller with no membership in the workspace: no rule names it.
NO_ROLE = "none"


class MembershipStatus(StrEnum):
    """Rules distinguish only active memberships from all others ("invited", "suspended")."""

    ACTIVE = "active"
    INACTIVE = "inactive"


def normalize_status(status: str) -> MembershipStatus:
    return MembershipStatus.ACTIVE if status == "active" else MembershipStatus.INACTIVE


class Visibility(StrEnum):
    PUBLIC = "public"
    WORKSPACE = "workspace"
    PRIVATE = "private"


class Relation(StrEnum):
    """What the caller is to the resource; the most specific one wins."""

    CREATOR = "creator"  # created the assistant or chat
    GRANTEE = "grantee"  # holds an explicit grant on the assistant
    TARGET_OWNER = "target_owner"  # the membership acted on belongs to an owner
    NONE = "-"


class ResourceKind(StrEnum):
    ASSISTANT = "assistant"
    CHAT = "chat"
    WORKSPACE = "workspace"
    MEMBER = "member"
