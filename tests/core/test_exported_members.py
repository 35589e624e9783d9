"""The public surface is what we meant, and the reason codes are complete.

As httpx's ``tests/test_exported_members.py`` does: a name added to or dropped from
``illumichat_authz.__all__`` must be a deliberate change to this list.
"""

from __future__ import annotations

import importlib
import inspect
from importlib.metadata import version

import pytest

import illumichat_authz
from illumichat_authz import errors
from illumichat_authz.reasons import STATUS_OF, Reason

INTENDED = {
    "STATUS_OF",
    "Assistant",
    "AsyncFacts",
    "Authorizer",
    "AuthzError",
    "BadRequestError",
    "Chat",
    "ConfigurationError",
    "Core",
    "CredentialError",
    "CredentialKind",
    "Decision",
    "DependencyUnavailableError",
    "Facts",
    "Grant",
    "InMemoryFacts",
    "Membership",
    "PermissionDeniedError",
    "Principal",
    "Reason",
    "RequestFacts",
    "Resource",
    "ResourceRef",
    "Role",
    "Settings",
    "SignatureError",
    "Visibility",
    "__version__",
    "build_core",
    "load_facts_file",
    "load_settings",
    "render_denial",
}


def test_all_is_exactly_the_intended_surface() -> None:
    exported = set(illumichat_authz.__all__)
    assert len(exported) == len(illumichat_authz.__all__), "duplicates in __all__"
    assert exported - INTENDED == set(), "exported but not intended"
    assert INTENDED - exported == set(), "intended but not exported"


@pytest.mark.parametrize("name", sorted(INTENDED))
def test_every_public_name_imports(name: str) -> None:
    module = importlib.import_module("illumichat_authz")
    assert getattr(module, name) is not None
    namespace: dict[str, object] = {}
    exec(f"from illumichat_authz import {name}", namespace)
    assert name in namespace


def test_public_classes_live_in_the_package() -> None:
    for name in illumichat_authz.__all__:
        obj = getattr(illumichat_authz, name)
        if inspect.isclass(obj) or inspect.isfunction(obj):
            assert obj.__module__.startswith("illumichat_authz."), (name, obj.__module__)


def test_the_version_is_the_distribution_version() -> None:
    assert illumichat_authz.__version__ == version("illumichat-authz")


def test_star_import_gives_the_surface() -> None:
    namespace: dict[str, object] = {}
    exec("from illumichat_authz import *", namespace)
    assert set(namespace) - {"__builtins__"} == INTENDED


def test_every_reason_has_a_status() -> None:
    assert set(STATUS_OF) == set(Reason)
    assert set(STATUS_OF.values()) <= {200, 400, 401, 403, 404, 413, 429, 500, 503}


def test_only_the_allow_reasons_are_200() -> None:
    allowed = {r.value for r, s in STATUS_OF.items() if s == 200}
    assert allowed == {"allowed", "public", "webhook_verified", "preflight"}


def test_reason_values_are_stable_snake_case() -> None:
    for reason in Reason:
        assert reason.value == reason.name.lower()
        assert reason.value.replace("_", "").isalpha()


@pytest.mark.parametrize(
    ("cls", "status"),
    [
        (errors.BadRequestError, 400),
        (errors.CredentialError, 401),
        (errors.SignatureError, 403),
        (errors.PermissionDeniedError, 403),
        (errors.DependencyUnavailableError, 503),
    ],
)
def test_errors_carry_their_status(cls: type[errors.AuthzError], status: int) -> None:
    exc = cls("message")
    assert exc.status == status
    assert STATUS_OF[exc.reason] == status
    assert isinstance(exc, errors.AuthzError)


def test_error_modules_export_what_they_define() -> None:
    for module_name in ("errors", "reasons", "decision", "request", "facts", "config", "core"):
        module = importlib.import_module(f"illumichat_authz.{module_name}")
        for name in module.__all__:
            assert hasattr(module, name), f"{module_name}.{name}"
