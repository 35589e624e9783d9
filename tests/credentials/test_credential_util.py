"""The helpers every verifier shares (credentials/_util.py): one copy, one behaviour."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
from pydantic import ValidationError

from illumichat_authz.config import Auth0Settings, SessionSettings
from illumichat_authz.credentials._util import (
    DEFAULT_CLOCK_TOLERANCE_S,
    MAX_CLOCK_TOLERANCE_S,
    clock_tolerance,
    credential_id,
)
from illumichat_authz.credentials.auth0 import Auth0BearerVerifier
from illumichat_authz.credentials.authjs import AuthjsSessionDecoder
from illumichat_authz.errors import ConfigurationError


def auth0(**kw: Any) -> Auth0BearerVerifier:
    return Auth0BearerVerifier(issuer="https://t.example/", audience="api", **kw)


def authjs(**kw: Any) -> AuthjsSessionDecoder:
    return AuthjsSessionDecoder(secrets=["s1"], **kw)


def test_one_default_clock_tolerance_for_settings_and_verifiers() -> None:
    assert DEFAULT_CLOCK_TOLERANCE_S == 15.0
    assert Auth0Settings().clock_tolerance_s == DEFAULT_CLOCK_TOLERANCE_S
    assert SessionSettings().clock_tolerance_s == DEFAULT_CLOCK_TOLERANCE_S
    assert auth0().clock_tolerance_s == DEFAULT_CLOCK_TOLERANCE_S
    assert authjs().clock_tolerance_s == DEFAULT_CLOCK_TOLERANCE_S


@pytest.mark.parametrize("value", [0, 0.0, 5, 299.5, MAX_CLOCK_TOLERANCE_S])
def test_the_same_range_is_accepted_everywhere(value: float) -> None:
    assert clock_tolerance(value, key="k") == float(value)
    assert auth0(clock_tolerance_s=value).clock_tolerance_s == value
    assert authjs(clock_tolerance_s=value).clock_tolerance_s == value
    assert Auth0Settings(clock_tolerance_s=value).clock_tolerance_s == value
    assert SessionSettings(clock_tolerance_s=value).clock_tolerance_s == value


@pytest.mark.parametrize("value", [-1, -0.001, MAX_CLOCK_TOLERANCE_S + 0.5, float("nan"), True])
def test_the_same_range_is_refused_everywhere(value: Any) -> None:
    with pytest.raises(ConfigurationError, match=r"auth0\.clock_tolerance_s"):
        auth0(clock_tolerance_s=value)
    with pytest.raises(ConfigurationError, match=r"session\.clock_tolerance_s"):
        authjs(clock_tolerance_s=value)
    if not isinstance(value, bool):  # pydantic reads true as 1 (lax mode), as TOML would not
        with pytest.raises(ValidationError):
            Auth0Settings(clock_tolerance_s=value)
        with pytest.raises(ValidationError):
            SessionSettings(clock_tolerance_s=value)


def test_credential_id_is_a_short_hash_never_the_credential() -> None:
    token = "0b7a3e8e-4f0e-4d1b-9d8a-3c2f1e0d9c8b"
    assert credential_id(token) == hashlib.sha256(token.encode()).hexdigest()[:16]
    assert credential_id(token.encode()) == credential_id(token)
    assert len(credential_id(b"")) == 16
    assert token not in credential_id(token)
