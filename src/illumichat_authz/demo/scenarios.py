"""The requests the demo shows: each with the status the policy must give it."""

from __future__ import annotations

from dataclasses import dataclass

from .seed import WORKSPACE

__all__ = ["SCENARIOS", "Scenario"]


@dataclass(frozen=True, slots=True, kw_only=True)
class Scenario:
    title: str
    method: str
    path: str
    expected: int
    #: Whose session cookie to send; ``None``: none. ``"!garbage"``: an invalid cookie.
    user: str | None = None
    #: Send the request this many times; ``expected`` is the status of the last one.
    repeat: int = 1
    body: str | None = None


SCENARIOS: tuple[Scenario, ...] = (
    Scenario(
        title="a member reads a public assistant",
        method="GET",
        path="/api/assistants/asst-public",
        user="mia",
        expected=200,
    ),
    Scenario(
        title="a member uses a private assistant shared with her (grant)",
        method="GET",
        path="/api/assistants/asst-shared",
        user="mia",
        expected=200,
    ),
    Scenario(
        title="an admin reads any private assistant",
        method="GET",
        path="/api/assistants/asst-private",
        user="adam",
        expected=200,
    ),
    Scenario(
        title="the owner reads billing",
        method="GET",
        path=f"/api/workspaces/{WORKSPACE}/billing",
        user="olivia",
        expected=200,
    ),
    Scenario(
        title="anyone may load the widget config (public)",
        method="GET",
        path="/api/widget/asst-public/config",
        expected=200,
    ),
    Scenario(
        title="no session cookie (the client should sign in)",
        method="GET",
        path="/api/assistants/asst-public",
        expected=401,
    ),
    Scenario(
        title="a forged session cookie",
        method="GET",
        path="/api/assistants/asst-public",
        user="!garbage",
        expected=401,
    ),
    Scenario(
        title="a member may not see a private assistant without a grant",
        method="GET",
        path="/api/assistants/asst-private",
        user="mia",
        expected=403,
    ),
    Scenario(
        title="a guest may not edit an assistant",
        method="PATCH",
        path="/api/assistants/asst-public",
        user="gus",
        expected=403,
        body="{}",
    ),
    Scenario(
        title="an admin may not read billing (owners only)",
        method="GET",
        path=f"/api/workspaces/{WORKSPACE}/billing",
        user="adam",
        expected=403,
    ),
    Scenario(
        title="the ticket endpoint allows 5 a minute; the 6th is refused",
        method="POST",
        path="/api/widget/tickets/create",
        expected=429,
        repeat=6,
        body="{}",
    ),
)
