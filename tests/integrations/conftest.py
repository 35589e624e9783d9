"""Shared fixtures for the adapter tests: a real Authorizer with real credentials.

Sessions are minted with ``encode_session_token`` (the @auth/core format) and verified by
the real decoder; Twilio signatures come from the ``twilio`` package itself.
"""

from __future__ import annotations

import time
from contextlib import AbstractContextManager
from typing import Any
from urllib.parse import urlencode

import pytest
from twilio.request_validator import RequestValidator

from illumichat_authz.authorizer import Authorizer
from illumichat_authz.config import load_settings
from illumichat_authz.credentials.authjs import encode_session_token
from illumichat_authz.facts import Assistant, InMemoryFacts, Membership
from illumichat_authz.testing import serve_asgi as testing_serve_asgi
from illumichat_authz.vocab import Role, Visibility

SECRET = "integration-tests-secret-0123456789abcdef"
TWILIO_TOKEN = "twilio-test-auth-token-0123456789"
COOKIE = "authjs.session-token"
WEBHOOK = "/api/sms/webhook/a1"
FORM = {"From": "+15550100", "To": "+15550199", "Body": "héllo & <world>"}


def make_authorizer() -> Authorizer:
    settings = load_settings(
        overrides={
            "session": {"secrets": [SECRET], "workspace_claim": "workspace"},
            "twilio": {"auth_tokens": [TWILIO_TOKEN]},
        }
    )
    facts = InMemoryFacts(
        memberships=[
            Membership(user="u1", workspace="w1", role=Role.MEMBER),
            Membership(user="boss", workspace="w1", role=Role.OWNER),
        ],
        assistants=[
            Assistant(id="a1", workspace="w1", visibility=Visibility.PUBLIC, creator="boss"),
        ],
    )
    return Authorizer.from_settings(settings, facts=facts)


@pytest.fixture
def authorizer() -> Authorizer:
    return make_authorizer()


def serve_asgi(app: Any) -> AbstractContextManager[str]:
    """``app`` on a real uvicorn (the test kit's helper), lifespan on, no websockets."""
    return testing_serve_asgi(app, lifespan="on", ws="none")


def session_cookie(user: str = "u1", workspace: str = "w1") -> str:
    claims = {"sub": user, "workspace": workspace, "email": f"{user}@example.com"}
    return encode_session_token(claims, secret=SECRET, now=time.time())


def cookie_header(user: str = "u1") -> dict[str, str]:
    return {"cookie": f"{COOKIE}={session_cookie(user)}"}


def twilio_request(base_url: str, path: str = WEBHOOK) -> tuple[bytes, dict[str, str]]:
    """A form body and the headers Twilio would send for ``base_url + path``."""
    body = urlencode(FORM).encode()
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(base_url + path, FORM)
    return body, {
        "content-type": "application/x-www-form-urlencoded",
        "x-twilio-signature": signature,
    }


class Exploding(Authorizer):
    """An authorizer whose driver itself fails (not the core): the adapter must 500."""

    def __init__(self) -> None:
        inner = make_authorizer()
        super().__init__(core=inner.core, facts=inner.facts)

    def decide(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise RuntimeError("boom: secret-token-bytes")

    async def adecide(self, *args: object, **kwargs: object) -> object:  # type: ignore[override]
        raise RuntimeError("boom: secret-token-bytes")


@pytest.fixture
def exploding() -> Exploding:
    return Exploding()
