"""The pytest plugin (``pytest11`` entry point): registers the test kit's fixtures.

It imports only pytest and :mod:`.fixtures` (itself pytest plus the standard library);
every fixture imports what it needs when a test first asks for it. Disable it with
``-p no:illumichat_authz``.
"""

from __future__ import annotations

from .fixtures import (
    assert_decision_fixture,
    authorizer,
    authz_api_keys,
    authz_facts,
    authz_issuer,
    authz_settings,
    mint_api_key,
    mint_bearer,
    mint_session,
    sign_twilio,
)

__all__ = [
    "assert_decision_fixture",
    "authorizer",
    "authz_api_keys",
    "authz_facts",
    "authz_issuer",
    "authz_settings",
    "mint_api_key",
    "mint_bearer",
    "mint_session",
    "sign_twilio",
]
