"""The verifiers and the rate-limit values are pure: their import closure holds no I/O.

A static check, so that what the interpreter (or pytest) imported at start-up cannot hide a
forbidden import: each module's source is parsed, its import-time imports collected
(module level and class bodies, not function bodies, not ``if TYPE_CHECKING:`` blocks)
and followed through every ``illumichat_authz`` module they name, parent packages
included. The root ``illumichat_authz/__init__.py`` is left out: it re-exports the driver
for convenience (the core's own closure test covers the core package).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from pathlib import Path

import pytest

import illumichat_authz

ROOT = Path(illumichat_authz.__file__).resolve().parent
PACKAGE = "illumichat_authz"

#: Modules that do I/O, start threads or bring an event loop: they belong in stores/.
FORBIDDEN = (
    "sqlite3",
    "socket",
    "urllib.request",
    "http.client",
    "asyncio",
    "threading",
    "subprocess",
    "limits",
)

PURE = sorted(
    [
        f"{PACKAGE}.credentials.{path.stem}"
        for path in (ROOT / "credentials").glob("*.py")
        if path.stem != "__init__"
    ]
    + [f"{PACKAGE}.credentials", f"{PACKAGE}.ratelimit"]
)


def _path(module: str) -> Path | None:
    """The source file of an ``illumichat_authz`` module, ``None`` if there is none."""
    base = ROOT.joinpath(*module.split(".")[1:])
    if (base / "__init__.py").is_file():
        return base / "__init__.py"
    if base.with_suffix(".py").is_file():
        return base.with_suffix(".py")
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _import_time(body: list[ast.stmt]) -> Iterator[ast.Import | ast.ImportFrom]:
    """The import statements that run when the module is imported."""
    for node in body:
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif isinstance(node, ast.If):
            if not _is_type_checking(node.test):
                yield from _import_time(node.body)
            yield from _import_time(node.orelse)
        elif isinstance(node, ast.Try):
            for block in (node.body, node.orelse, node.finalbody):
                yield from _import_time(block)
            for handler in node.handlers:
                yield from _import_time(handler.body)
        elif isinstance(node, ast.With | ast.ClassDef):
            yield from _import_time(node.body)


def _imports(module: str, path: Path) -> set[str]:
    """Every module name an import statement of ``module`` may load (over-approximated:
    ``from a import b`` counts ``a`` and ``a.b``)."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    names: set[str] = set()
    for node in _import_time(ast.parse(path.read_text(), str(path)).body):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
            continue
        if node.level:
            anchor = package.split(".")
            anchor = anchor[: len(anchor) - (node.level - 1)]
            base = ".".join(anchor + ([node.module] if node.module else []))
        else:
            base = node.module or ""
        names.add(base)
        names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def closure(module: str) -> dict[str, str]:
    """External module name -> the ``illumichat_authz`` module that imports it."""
    seen: set[str] = set()
    todo = [module]
    external: dict[str, str] = {}
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        path = _path(current)
        if path is None:
            continue  # ``from pkg import Name``: a name, not a module
        parts = current.split(".")
        todo.extend(".".join(parts[:i]) for i in range(2, len(parts)))  # parent packages
        for name in _imports(current, path):
            if name == PACKAGE or name.startswith(PACKAGE + "."):
                todo.append(name)
            else:
                external.setdefault(name, current)
    return external


def forbidden_in(module: str) -> dict[str, str]:
    return {
        name: via
        for name, via in closure(module).items()
        if any(name == bad or name.startswith(bad + ".") for bad in FORBIDDEN)
    }


@pytest.mark.parametrize("module", PURE)
def test_a_pure_module_imports_no_io(module: str) -> None:
    assert forbidden_in(module) == {}


def test_the_pure_modules_are_the_ones_the_plan_names() -> None:
    for stem in ("authjs", "auth0", "apikeys", "sessions", "jwk", "twilio", "cookies"):
        assert f"{PACKAGE}.credentials.{stem}" in PURE
    assert f"{PACKAGE}.ratelimit" in PURE


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
    assert found in forbidden_in(f"{PACKAGE}.{module}")


def test_a_lazy_or_type_only_import_is_not_counted(tmp_path: Path) -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import sqlite3\n"
        "def f():\n    import socket\n"
        "class C:\n    import threading\n"
        "try:\n    import asyncio\nexcept ImportError:\n    pass\n"
        "from urllib import request\n"
    )
    path = tmp_path / "sample.py"
    path.write_text(source)
    names = _imports(f"{PACKAGE}.sample", path)
    assert "sqlite3" not in names
    assert "socket" not in names
    assert {"threading", "asyncio", "urllib.request"} <= names
