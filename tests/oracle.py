"""An independent oracle for IllumiChat's decision rules, written from the rules as stated.

This module deliberately shares nothing with ``policies/policy.csv``, ``model.conf`` or the
core's code paths: it restates the "Workspace Roles" and "Assistant Visibility" tables of
the IllumiChat authentication page (and the issue's reading of them) as plain Python, so
that a test comparing it with ``Authorizer.decide`` checks the shipped policy, not a copy
of it. It only imports the facts dataclasses, to hand the same world to the core.

The rules, as the issue states them:

* Roles, owner > admin > member > guest, each with everything below it, for an *active*
  membership (``ROLE_GRANTS``).
* Visibility, for every assistant action and for ``chat:create`` on an assistant:
  ``public`` = any membership of the assistant's workspace; ``workspace`` = an active
  membership; ``private`` = an active membership and (the creator, or admin/owner, or an
  explicit grant). The role still bounds the action.
* A membership that is not active gets nothing but ``assistant:list`` and
  ``assistant:read`` of public assistants.
* No membership in the workspace: 403 for everything in it. A missing resource: 404. A
  resource the caller may not read: 403, or 404 when the host conceals existence. An API
  key's scopes can only narrow this.
* List/create routes take their workspace from ``X-Workspace-Id``, else the principal's.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from urllib.parse import quote

from illumichat_authz.facts import Assistant, Chat, Grant, InMemoryFacts, Membership

__all__ = [
    "ASSISTANT_VISIBILITY_ACTIONS",
    "AUTHENTICATED_ENDPOINTS",
    "PUBLIC_ENDPOINTS",
    "RANK",
    "READ_ACTION",
    "ROLES",
    "ROLE_GRANTS",
    "STATUSES",
    "UNNAMED_ROLE",
    "WEBHOOK_ENDPOINTS",
    "Endpoint",
    "Expected",
    "World",
    "encode_id",
    "oracle",
    "role_may",
]

ROLES = ("guest", "member", "admin", "owner")
#: A role the tables do not name (the policy files define the roles): it may do nothing.
UNNAMED_ROLE = "auditor"
#: "owner > admin > member > guest, each with everything below it".
RANK = {role: i for i, role in enumerate(ROLES)}
#: Membership statuses the tests use; only "active" counts as active.
STATUSES = ("active", "invited", "suspended")

#: What each role adds to the role below it (for an active membership). The two rules with
#: a condition (own chats; never on an owner) are handled in ``role_may``.
ROLE_GRANTS: Mapping[str, frozenset[str]] = {
    # "guest: Limited read-only access"
    "guest": frozenset({"workspace:read", "assistant:list", "assistant:read"}),
    # "member: Use assistants, create and view chats" (chat:read of its own chats)
    "member": frozenset({"chat:create", "chat:list", "chat:read", "member:list", "settings:read"}),
    # "admin: Manage members, assistants, settings" (member changes never on an owner)
    "admin": frozenset(
        {
            "assistant:create",
            "assistant:update",
            "assistant:delete",
            "assistant:share",
            "chat:read",
            "member:invite",
            "member:update_role",
            "member:remove",
            "settings:update",
        }
    ),
    # "owner: Full control including billing, workspace deletion" (and changes to owners)
    "owner": frozenset(
        {
            "billing:read",
            "billing:manage",
            "workspace:delete",
            "member:update_role",
            "member:remove",
        }
    ),
}

#: Actions gated by the assistant's visibility as well as by the role.
ASSISTANT_VISIBILITY_ACTIONS = frozenset(
    {"assistant:read", "assistant:update", "assistant:delete", "assistant:share", "chat:create"}
)

#: "A resource the caller may not read": the read action of each kind of resource.
READ_ACTION: Mapping[str, str] = {
    "assistant": "assistant:read",
    "chat": "chat:read",
    "workspace": "workspace:read",
    "member": "member:list",
}


@dataclass(frozen=True, slots=True)
class Endpoint:
    method: str
    template: str
    action: str
    #: The resource the path names (kind, parameter), or None for list/create routes.
    resource: tuple[str, str] | None = None

    def path(self, **params: str) -> str:
        """The raw path with each parameter percent-encoded."""
        out = self.template
        for name, value in params.items():
            out = out.replace("{" + name + "}", encode_id(value))
        return out


# The endpoints of the IllumiChat API, by class. Public and webhook rows are the tables of
# the authentication page; the authenticated rows are the documented API surface.
PUBLIC_ENDPOINTS = (
    Endpoint("GET", "/api/widget/{assistantId}/config", "widget:config"),
    Endpoint("POST", "/api/widget/{assistantId}/session", "widget:session"),
    Endpoint("POST", "/api/widget/{assistantId}/chat", "widget:chat"),
    Endpoint("POST", "/api/widget/{assistantId}/lead", "widget:lead"),
    Endpoint("POST", "/api/widget/{assistantId}/feedback", "widget:feedback"),
    Endpoint("GET", "/api/widget/{assistantId}/history", "widget:history"),
    Endpoint("POST", "/api/widget/tickets/create", "ticket:create"),
)
WEBHOOK_ENDPOINTS = (
    Endpoint("POST", "/api/sms/webhook/{assistantId}", "sms:inbound"),
    Endpoint("POST", "/api/sms/status/{assistantId}", "sms:status"),
)
_A = ("assistant", "assistantId")
_W = ("workspace", "workspaceId")
_M = ("member", "userId")
AUTHENTICATED_ENDPOINTS: tuple[Endpoint, ...] = (
    Endpoint("GET", "/api/assistants", "assistant:list"),
    Endpoint("POST", "/api/assistants", "assistant:create"),
    Endpoint("GET", "/api/assistants/{assistantId}", "assistant:read", _A),
    Endpoint("PATCH", "/api/assistants/{assistantId}", "assistant:update", _A),
    Endpoint("DELETE", "/api/assistants/{assistantId}", "assistant:delete", _A),
    Endpoint("POST", "/api/assistants/{assistantId}/grants", "assistant:share", _A),
    Endpoint("POST", "/api/assistants/{assistantId}/chats", "chat:create", _A),
    Endpoint("GET", "/api/chats", "chat:list"),
    Endpoint("GET", "/api/chats/{chatId}", "chat:read", ("chat", "chatId")),
    Endpoint("GET", "/api/workspaces/{workspaceId}", "workspace:read", _W),
    Endpoint("DELETE", "/api/workspaces/{workspaceId}", "workspace:delete", _W),
    Endpoint("GET", "/api/workspaces/{workspaceId}/members", "member:list", _W),
    Endpoint("POST", "/api/workspaces/{workspaceId}/members", "member:invite", _W),
    Endpoint("PATCH", "/api/workspaces/{workspaceId}/members/{userId}", "member:update_role", _M),
    Endpoint("DELETE", "/api/workspaces/{workspaceId}/members/{userId}", "member:remove", _M),
    Endpoint("GET", "/api/workspaces/{workspaceId}/settings", "settings:read", _W),
    Endpoint("PATCH", "/api/workspaces/{workspaceId}/settings", "settings:update", _W),
    Endpoint("GET", "/api/workspaces/{workspaceId}/billing", "billing:read", _W),
    Endpoint("PATCH", "/api/workspaces/{workspaceId}/billing", "billing:manage", _W),
)

# Characters of RFC 3986 pchar that may stay raw in a path segment (besides unreserved).
_SUB_DELIMS = "!$&'()*+,=:@"


def encode_id(value: str, *, keep_sub_delims: bool = True, lower_hex: bool = False) -> str:
    """Percent-encode one path segment (UTF-8); '.' stays raw, as RFC 3986 wants."""
    out = quote(value, safe=_SUB_DELIMS if keep_sub_delims else "")
    if lower_hex:
        # Only the hex digits of escapes change case; the rest of the segment is as is.
        parts = out.split("%")
        out = parts[0] + "".join("%" + p[:2].lower() + p[2:] for p in parts[1:])
    return out


@dataclass(slots=True)
class World:
    """Memberships, assistants, chats and grants, as plain tuples."""

    #: (user, workspace) -> (role, status)
    memberships: dict[tuple[str, str], tuple[str, str]] = field(default_factory=dict)
    #: assistant id -> (workspace, visibility, creator)
    assistants: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    #: chat id -> (workspace, assistant, creator)
    chats: dict[str, tuple[str, str, str]] = field(default_factory=dict)
    grants: set[tuple[str, str]] = field(default_factory=set)

    def facts(self) -> InMemoryFacts:
        """The same world as the core's in-memory facts store."""
        return InMemoryFacts(
            memberships=[
                Membership(user=u, workspace=w, role=r, status=s)
                for (u, w), (r, s) in self.memberships.items()
            ],
            assistants=[
                Assistant(id=i, workspace=w, visibility=v, creator=c)
                for i, (w, v, c) in self.assistants.items()
            ],
            chats=[
                Chat(id=i, workspace=w, assistant=a, creator=c)
                for i, (w, a, c) in self.chats.items()
            ],
            grants=[Grant(user=u, assistant=a) for u, a in self.grants],
        )


def role_may(role: str, action: str, *, own_chat: bool = False, target_owner: bool = False) -> bool:
    """Whether an *active* ``role`` may do ``action`` by the roles table alone."""
    rank = RANK.get(role)
    if rank is None:  # a role the tables do not name has no rules at all
        return False
    if action == "chat:read":
        # member: "chat:read of its own chats"; admin: "chat:read of any chat".
        return rank >= RANK["admin"] or (rank >= RANK["member"] and own_chat)
    if action in ("member:update_role", "member:remove"):
        # admin: "(never on an owner)"; owner: "member changes on owners".
        return rank >= RANK["owner"] or (rank >= RANK["admin"] and not target_owner)
    return any(action in ROLE_GRANTS[r] for r in ROLES[: rank + 1])


def _visible(role: str, active: bool, vis: str, *, creator: bool, granted: bool) -> bool:
    if vis == "public":  # "All workspace members": any membership
        return True
    if vis == "workspace":  # "Active workspace members"
        return active
    # private: "Creator, admins, and explicitly granted users" (active members only).
    return active and (creator or RANK.get(role, -1) >= RANK["admin"] or granted)


@dataclass(frozen=True, slots=True)
class _Context:
    vis: str | None = None
    creator: bool = False
    granted: bool = False
    own_chat: bool = False
    target_owner: bool = False


def _may(membership: tuple[str, str] | None, action: str, ctx: _Context) -> bool:
    if membership is None:
        return False
    role, status = membership
    active = status == "active"
    if not active:
        # "nothing but assistant:list and assistant:read of public assistants".
        return action == "assistant:list" or (action == "assistant:read" and ctx.vis == "public")
    if not role_may(role, action, own_chat=ctx.own_chat, target_owner=ctx.target_owner):
        return False
    if action in ASSISTANT_VISIBILITY_ACTIONS and ctx.vis is not None:
        return _visible(role, active, ctx.vis, creator=ctx.creator, granted=ctx.granted)
    return True


@dataclass(frozen=True, slots=True)
class Expected:
    status: int
    #: The exact reason where the rules fix it; ``None``: any deny reason of that status.
    reason: str | None = None


def oracle(
    world: World,
    endpoint: Endpoint,
    params: Mapping[str, str],
    *,
    user: str,
    principal_workspace: str | None,
    header_workspace: str | None = None,
    scopes: Iterable[str] | None = None,
    workspace_bound: bool = False,
    conceal: bool = False,
) -> Expected:
    """The decision the rules call for, for an authenticated caller of ``endpoint``."""
    action = endpoint.action
    if scopes is not None and action not in set(scopes):
        # Scopes only narrow; the deny comes before any lookup, so it reveals nothing.
        return Expected(403, "scope_not_granted")

    ctx = _Context()
    workspace: str | None
    kind = endpoint.resource[0] if endpoint.resource else None
    rid = params[endpoint.resource[1]] if endpoint.resource else None
    if kind == "assistant":
        assert rid is not None
        found = world.assistants.get(rid)
        if found is None:
            return Expected(404, "not_found")
        workspace, vis, creator = found
        ctx = _Context(vis=vis, creator=creator == user, granted=(user, rid) in world.grants)
    elif kind == "chat":
        assert rid is not None
        chat = world.chats.get(rid)
        if chat is None:
            return Expected(404, "not_found")
        workspace, _, creator = chat
        ctx = _Context(own_chat=creator == user)
    elif kind in ("workspace", "member"):
        workspace = params["workspaceId"]
    else:
        workspace = header_workspace or principal_workspace
        if not workspace:
            return Expected(400, "missing_workspace")

    hidden = 404 if conceal and kind is not None else 403
    if workspace_bound and workspace != principal_workspace:
        return Expected(hidden, "not_found" if hidden == 404 else "workspace_mismatch")

    membership = world.memberships.get((user, workspace))
    if membership is None:
        # "No membership in the workspace: 403 for everything in it" (404 if concealed).
        return Expected(hidden, "not_found" if hidden == 404 else "not_a_member")

    if kind == "member":
        assert rid is not None
        target = world.memberships.get((rid, workspace))
        if target is None:
            return Expected(404, "not_found")
        ctx = _Context(target_owner=target[0] == "owner")

    if _may(membership, action, ctx):
        return Expected(200, "allowed")
    if kind is not None and conceal and not _may(membership, READ_ACTION[kind], ctx):
        return Expected(404, "not_found")
    return Expected(403)
