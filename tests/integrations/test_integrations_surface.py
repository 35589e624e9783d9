"""Adapters fail with the exact install hint; the core imports no framework."""

from __future__ import annotations

import importlib
import subprocess
import sys
import types

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


def test_another_import_error_is_not_blamed_on_a_missing_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A framework that is installed but fails to import (a cycle, a broken dependency)
    surfaces as it is: "install illumichat-authz[drf]" would send the user the wrong way."""
    monkeypatch.delitem(sys.modules, "illumichat_authz.integrations.drf", raising=False)
    # What an import cycle looks like: the package is there, the name is not (yet).
    monkeypatch.setitem(sys.modules, "rest_framework", types.ModuleType("rest_framework"))
    with pytest.raises(ImportError, match="cannot import name") as caught:
        importlib.import_module("illumichat_authz.integrations.drf")
    assert "pip install" not in str(caught.value)
    # Flask is installed, one of its own dependencies is not (in a fresh interpreter).
    code = "import sys; sys.modules['werkzeug'] = None\nimport illumichat_authz.integrations.flask"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert "ModuleNotFoundError: No module named 'werkzeug" in result.stderr
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
