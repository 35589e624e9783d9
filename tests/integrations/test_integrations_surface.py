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
        ("_drf", "rest_framework", "drf"),
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
