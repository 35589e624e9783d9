"""The demo: an IllumiChat-shaped API on embedded defaults, guarded by the real policy.

``illumichat-authz demo`` runs on the embedded defaults (the shipped policy files, the seed
read through the JSON facts file store, an in-memory rate limiter, a freshly generated
development session secret), serves the API on 127.0.0.1 and prints ``curl`` commands;
``--self-test`` runs them itself.
"""

from __future__ import annotations

import json
import secrets
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

from ..authorizer import Authorizer, build_core
from ..config import load_settings
from ..credentials.authjs import encode_session_token
from ..facts import InMemoryFacts
from ..facts_file import load_facts_file
from ..stores.ratelimit import RateLimiter
from .scenarios import SCENARIOS, Scenario
from .seed import SEED, USERS, WORKSPACE

__all__ = ["SCENARIOS", "USERS", "WORKSPACE", "Demo", "Scenario", "build_demo"]

_COOKIE = "authjs.session-token"
_WORKSPACE_CLAIM = "workspace"


@dataclass(frozen=True, slots=True, kw_only=True)
class Demo:
    authorizer: Authorizer
    facts: InMemoryFacts
    #: user id -> ``Cookie`` header value with that user's session.
    cookies: dict[str, str] = field(repr=False)

    def cookie_for(self, user: str | None) -> str | None:
        if user is None:
            return None
        if user.startswith("!"):
            return f"{_COOKIE}=not-a-session-token"
        return self.cookies[user]


def build_demo(*, now: float | None = None) -> Demo:
    """Everything in memory; the session secret is new on every call and never printed."""
    secret = secrets.token_urlsafe(32)
    # No environment read: a shell's ILLUMICHAT_AUTHZ_* must not change the demo's answers.
    settings = load_settings(
        overrides={"session": {"secrets": [secret], "workspace_claim": _WORKSPACE_CLAIM}},
        environment=False,
    )
    # Through the file store a deployment uses ([facts] file): the seed is written as a
    # facts file and read back by the same validating loader.
    with tempfile.TemporaryDirectory(prefix="illumichat-authz-demo-") as tmp:
        path = Path(tmp) / "facts.json"
        path.write_text(json.dumps(SEED, indent=2), encoding="utf-8")
        facts = load_facts_file(path)
    authorizer = Authorizer(
        core=build_core(settings), facts=facts, rate_limiter=RateLimiter(storage_uri="memory://")
    )
    issued = time.time() if now is None else now
    cookies = {
        user: _COOKIE
        + "="
        + encode_session_token(
            {"sub": user, _WORKSPACE_CLAIM: WORKSPACE, "name": user.title()},
            secret=secret,
            cookie_name=_COOKIE,
            now=issued,
            max_age_s=8 * 3600,
        )
        for user in USERS
    }
    return Demo(authorizer=authorizer, facts=facts, cookies=cookies)
