"""The suite's log-leak scan (tests/log_leaks.py) finds a planted leak of each kind."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import pytest

import log_leaks


@pytest.fixture
def scanner() -> Any:
    """The suite's scanner, with the hits this test plants taken back afterwards."""
    before = list(log_leaks.SCANNER.hits)
    yield log_leaks.SCANNER
    log_leaks.SCANNER.hits[:] = before


def test_the_scan_is_on_for_the_whole_suite() -> None:
    assert log_leaks.SCANNER in logging.getLogger("illumichat_authz").handlers


@pytest.mark.parametrize("kind", ["cookie", "bearer", "api_key", "twilio"])
def test_a_planted_credential_is_found(
    scanner: Any,
    kind: str,
    mint_session: Callable[..., Any],
    mint_bearer: Callable[..., str],
    mint_api_key: Callable[..., str],
    sign_twilio: Callable[..., str],
) -> None:
    secret = {
        "cookie": lambda: str(mint_session("alice", workspace="w1")),
        "bearer": lambda: mint_bearer("alice"),
        "api_key": lambda: mint_api_key("alice", "w1"),
        "twilio": lambda: sign_twilio("https://api.example.com/x", {"a": "b"}),
    }[kind]()
    seen = len(scanner.hits)
    logging.getLogger("illumichat_authz.planted").debug("the request carried %s", secret)
    assert len(scanner.hits) == seen + 1


def test_a_leak_in_a_traceback_is_found(scanner: Any, mint_bearer: Callable[..., str]) -> None:
    token = mint_bearer("alice")
    seen = len(scanner.hits)
    try:
        raise ValueError(f"bad token {token}")
    except ValueError:
        logging.getLogger("illumichat_authz.planted").exception("failed")
    assert len(scanner.hits) == seen + 1


def test_clean_text_is_not_a_leak(scanner: Any) -> None:
    seen = len(scanner.hits)
    logging.getLogger("illumichat_authz.planted").warning(
        "denied with %s: %s", "auth_unavailable", "rate limit storage is unavailable"
    )
    assert len(scanner.hits) == seen
