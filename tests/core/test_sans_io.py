"""Sans-IO as a tested property: the static import closure of ``illumichat_authz.core``.

Every module of the package is parsed with ``ast``; imports of ``illumichat_authz``
modules are followed transitively, whether at module level or inside a function (a
function-level import runs on the path that calls it, so it counts), including
``from . import x`` and imports of submodules through their package. What does not count:

- imports under ``if TYPE_CHECKING:`` (never executed);
- the function-level imports of :data:`COMPILE_TIME`: the places where the policy is
  compiled or settings are read (casbin, pydantic), once at start-up, never per request;
- the top-level facade ``illumichat_authz/__init__.py``: it re-exports the driver
  (``Authorizer``) for convenience, and Python runs it before any submodule; the rule is
  about what the core's own modules need, as Flask's ``sansio`` package is.

The closure may then hold no module that does I/O, threads, event loops, storage,
HTTP or web frameworks (:data:`FORBIDDEN`).
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

import illumichat_authz

SRC = Path(illumichat_authz.__file__).parent
ROOT = "illumichat_authz"
CORE = "illumichat_authz.core"

FORBIDDEN = frozenset(
    {
        # I/O, concurrency, processes
        "sqlite3",
        "socket",
        "urllib.request",
        "http.client",
        "asyncio",
        "threading",
        "subprocess",
        "multiprocessing",
        "selectors",
        "ssl",
        # storage (rate limits, databases)
        "limits",
        "redis",
        "psycopg",
        "psycopg2",
        "asyncpg",
        "aiosqlite",
        "pymysql",
        "MySQLdb",
        "sqlalchemy",
        "pymongo",
        "motor",
        # HTTP clients
        "httpx",
        "requests",
        "urllib3",
        "aiohttp",
        # frameworks
        "starlette",
        "fastapi",
        "flask",
        "django",
        "werkzeug",
        "rest_framework",
        # start-up only: allowed through COMPILE_TIME, never at module level
        "casbin",
        "pydantic",
        "pydantic_settings",
    }
)

#: Function-level imports that run once at start-up (compiling the policy, reading
#: settings): (importing module, imported top-level package).
COMPILE_TIME = frozenset({("illumichat_authz.policy", "casbin")})


@dataclass(frozen=True)
class Import:
    importer: str
    target: str
    line: int
    in_function: bool


def _module_file(name: str, src: Path, root: str) -> Path | None:
    parts = name.split(".")
    if parts[0] != root:
        return None
    path = src.joinpath(*parts[1:])
    if (path / "__init__.py").is_file():
        return path / "__init__.py"
    if path.with_suffix(".py").is_file():
        return path.with_suffix(".py")
    return None


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def imports_of(name: str, src: Path = SRC, root: str = ROOT) -> Iterator[Import]:
    """The runtime imports in module ``name`` (relative ones resolved)."""
    path = _module_file(name, src, root)
    assert path is not None, name
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]

    def visit(node: ast.AST, in_function: bool) -> Iterator[Import]:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child.test):
                for other in child.orelse:
                    yield from visit(other, in_function)
                continue
            inner = in_function or isinstance(
                child, ast.FunctionDef | ast.AsyncFunctionDef | ast.Lambda
            )
            if isinstance(child, ast.Import):
                for alias in child.names:
                    yield Import(name, alias.name, child.lineno, in_function)
            elif isinstance(child, ast.ImportFrom):
                if child.level:
                    base = package.split(".")
                    base = base[: len(base) - (child.level - 1)]
                    target = ".".join(base + ([child.module] if child.module else []))
                else:
                    target = child.module or ""
                yield Import(name, target, child.lineno, in_function)
                for alias in child.names:
                    sub = f"{target}.{alias.name}"
                    if _module_file(sub, src, root) is not None:  # from . import x
                        yield Import(name, sub, child.lineno, in_function)
            yield from visit(child, inner)

    yield from visit(ast.parse(path.read_text(encoding="utf-8")), False)


def closure(start: str, src: Path = SRC, root: str = ROOT) -> dict[str, list[Import]]:
    """Every module reached from ``start`` -> the imports that reach outside modules."""
    seen: dict[str, list[Import]] = {}
    todo = [start]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen[name] = []
        for imp in imports_of(name, src, root):
            if imp.target.split(".")[0] == root:
                # A submodule runs its packages' __init__ first (but the top-level facade).
                parts = imp.target.split(".")
                for i in range(2, len(parts) + 1):
                    module = ".".join(parts[:i])
                    if _module_file(module, src, root) is not None and module not in seen:
                        todo.append(module)
            else:
                seen[name].append(imp)
    return seen


def forbidden_in(found: dict[str, list[Import]]) -> list[str]:
    problems = []
    for module, imports in sorted(found.items()):
        for imp in imports:
            top = imp.target.split(".")[0]
            hit = {imp.target, top} & FORBIDDEN or {
                f for f in FORBIDDEN if imp.target.startswith(f + ".")
            }
            if not hit:
                continue
            if imp.in_function and (module, top) in COMPILE_TIME:
                continue
            where = "in a function" if imp.in_function else "at module level"
            problems.append(f"{module}:{imp.line} imports {imp.target} ({where})")
    return problems


def test_the_closure_walker_follows_every_kind_of_import(tmp_path: Path) -> None:
    pkg = tmp_path / "pkg"
    (pkg / "sub").mkdir(parents=True)
    (pkg / "__init__.py").write_text("import sqlite3\n")  # the facade: not followed
    (pkg / "sub" / "__init__.py").write_text("from . import leaf\nfrom .. import rel\n")
    (pkg / "sub" / "leaf.py").write_text(
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    import threading\n"
        "def f():\n    import socket\n"
    )
    (pkg / "rel.py").write_text("from pkg.deep import x\n")
    (pkg / "deep.py").write_text("import asyncio\nx = 1\n")
    found = closure("pkg.sub", src=pkg, root="pkg")
    assert set(found) == {"pkg.sub", "pkg.sub.leaf", "pkg.rel", "pkg.deep"}
    outside = {(i.importer, i.target, i.in_function) for m in found.values() for i in m}
    assert ("pkg.sub.leaf", "socket", True) in outside
    assert ("pkg.deep", "asyncio", False) in outside
    assert not any(target == "threading" for _, target, _ in outside)
    assert forbidden_in(found) == [
        "pkg.deep:1 imports asyncio (at module level)",
        "pkg.sub.leaf:5 imports socket (in a function)",
    ]


def test_the_core_closure_is_what_we_think() -> None:
    found = closure(CORE)
    # The core package itself and the pure pieces it builds on.
    for module in (
        "illumichat_authz.core.lookups",
        "illumichat_authz.core.rules",
        "illumichat_authz.core.authn",
        "illumichat_authz.facts",
        "illumichat_authz.policy",
        "illumichat_authz.credentials.authjs",
    ):
        assert module in found, module
    # Never the driver, the compiler, the stores, the adapters or the settings.
    for module in (
        "illumichat_authz.authorizer",
        "illumichat_authz.compile",
        "illumichat_authz.config",
        "illumichat_authz.facts_file",
        "illumichat_authz.integrations",
        "illumichat_authz.stores.credential_cache",
        "illumichat_authz.stores.jwks",
        "illumichat_authz.stores.ratelimit",
    ):
        assert module not in found, module


def test_the_core_imports_no_io_storage_http_or_framework() -> None:
    found = closure(CORE)
    problems = forbidden_in(found)
    listing = "\n  ".join(sorted(found))
    assert not problems, (
        "forbidden imports in the closure of illumichat_authz.core:\n  "
        + "\n  ".join(problems)
        + f"\nclosure ({len(found)} modules):\n  {listing}"
    )


@pytest.mark.parametrize("module", sorted(m for m in closure(CORE) if m.startswith(CORE)))
def test_each_core_module_imports_nothing_but_the_standard_library_it_needs(
    module: str,
) -> None:
    # The core's own modules import only pure standard modules and the package itself.
    allowed = {
        "__future__",
        "collections",
        "dataclasses",
        "enum",
        "logging",
        "re",
        "sys",
        "types",
        "typing",
    }
    outside = {i.target.split(".")[0] for i in closure(CORE)[module]}
    assert outside <= allowed, outside - allowed
