"""The demo's seed data: one workspace with a user of each role and assistants of each visibility.

In the facts file format (docs/policy.md), so ``load_facts_file`` would read the same thing.
"""

from __future__ import annotations

from typing import Any

__all__ = ["SEED", "USERS", "WORKSPACE"]

WORKSPACE = "acme"

#: user id -> role in ``acme``.
USERS: dict[str, str] = {
    "olivia": "owner",
    "adam": "admin",
    "mia": "member",
    "gus": "guest",
}

SEED: dict[str, Any] = {
    "memberships": [
        {"user": user, "workspace": WORKSPACE, "role": role} for user, role in USERS.items()
    ],
    "assistants": [
        {"id": "asst-public", "workspace": WORKSPACE, "visibility": "public", "creator": "adam"},
        {"id": "asst-team", "workspace": WORKSPACE, "visibility": "workspace", "creator": "adam"},
        {"id": "asst-private", "workspace": WORKSPACE, "visibility": "private", "creator": "adam"},
        {"id": "asst-shared", "workspace": WORKSPACE, "visibility": "private", "creator": "adam"},
    ],
    "chats": [
        {"id": "chat-1", "workspace": WORKSPACE, "assistant": "asst-team", "creator": "mia"},
    ],
    # The private grant: mia may use asst-shared although it is private.
    "grants": [{"user": "mia", "assistant": "asst-shared"}],
}
