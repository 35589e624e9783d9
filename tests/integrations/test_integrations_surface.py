"""Adapters fail with the exact install hint; the core imports no framework."""

from __future__ import annotations

import importlib
import subprocess
import sys

import pytest


@pytest.mark.parametrize(
    ("adapter", "framework", "extra"),
    [
        ("fastapi", "fastapi", "fastapi"),
        ("flask", "flask", "flask"),
        ("django", "django", "django"),
        ("drf", "rest_framework", "drf"),
    ],
)
def test_missing_framework_names_the_extra(
    monkeypatch: pytest.MonkeyPatch, adapter: str, framework: str, extra: str
) -> None:
    module = f"illumichat_authz.integrations.{adapter}"
    monkeypatch.delitem(sys.modules, module, raising=False)
    for name in [framework, *(m for m in sys.modules if m.startswith(framework + "."))]:
        monkeypatch.setitem(sys.modules, name, None)  # makes `import framework` fail
    with pytest.raises(ImportError, match=rf'pip install "illumichat-authz\[{extra}\]"'):
        importlib.import_module(module)


@pytest.mark.parametrize(
    ("setup", "adapter", "error"),
    [
        # What an import cycle looks like: the package is there, the name is not (yet).
        (
            "sys.modules['rest_framework'] = types.ModuleType('rest_framework')",
            "drf",
            "ImportError: cannot import name 'exceptions' from 'rest_framework'",
        ),
        # Flask is installed, one of its own dependencies is not.
        (
            "sys.modules['werkzeug'] = None",
            "flask",
            "ModuleNotFoundError: No module named 'werkzeug",
        ),
    ],
)
def test_another_import_error_is_not_blamed_on_a_missing_extra(
    setup: str, adapter: str, error: str
) -> None:
    """A framework that is installed but fails to import surfaces as it is: "install
    illumichat-authz[drf]" would send the user the wrong way. In a fresh interpreter, so
    that the frameworks this process imported stay as they are."""
    code = f"import sys, types\n{setup}\nimport illumichat_authz.integrations.{adapter}"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode != 0
    assert error in result.stderr
    assert "pip install" not in result.stderr


def test_core_and_plain_adapters_import_no_framework() -> None:
    code = (
        "import sys, illumichat_authz.authorizer, illumichat_authz.render, "
        "illumichat_authz.integrations.asgi, illumichat_authz.integrations.wsgi\n"
        "bad = [m for m in ('starlette', 'fastapi', 'flask', 'django', 'rest_framework') "
        "if m in sys.modules]\n"
        "print(','.join(bad))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
