"""The verifiers and the rate-limit values are pure: their import closure holds no I/O.

The same static closure as the core's sans-IO test (``import_closure``): each module's
source is parsed and every ``illumichat_authz`` module it imports is followed, function
bodies included, so that what the interpreter (or pytest) imported at start-up cannot hide
a forbidden import. Casbin and pydantic are refused here too: no verifier needs them.
"""

from __future__ import annotations

import pytest

from import_closure import ROOT, SRC, closure, forbidden_in

PURE = sorted(
    [
        f"{ROOT}.credentials.{path.stem}"
        for path in (SRC / "credentials").glob("*.py")
        if path.stem != "__init__"
    ]
    + [f"{ROOT}.credentials", f"{ROOT}.ratelimit"]
)


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_no_io(module: str) -> None:
    assert forbidden_in(closure(module)) == []


def test_the_pure_modules_are_the_ones_the_plan_names() -> None:
    for stem in ("authjs", "auth0", "apikeys", "sessions", "jwk", "twilio", "cookies"):
        assert f"{ROOT}.credentials.{stem}" in PURE
    assert f"{ROOT}.ratelimit" in PURE


@pytest.mark.parametrize(
    ("module", "found"),
    [
        ("stores.sessions", "sqlite3"),
        ("stores.api_keys", "threading"),
        ("stores.jwks", "urllib.request"),
        ("stores.jwks", "asyncio"),
        ("stores.ratelimit", "limits"),
        ("stores.credential_cache", "threading"),
    ],
)
def test_the_check_sees_the_stores_io(module: str, found: str) -> None:
    """The same check on the stores finds what they do import (so it can fail)."""
    problems = forbidden_in(closure(f"{ROOT}.{module}"))
    assert any(f" imports {found} (" in problem for problem in problems), problems
