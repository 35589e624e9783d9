"""The static import closure of an ``illumichat_authz`` module, shared by the sans-IO tests
(``tests/core/test_sans_io.py``: the core) and the purity tests
(``tests/credentials/test_pure_imports.py``: the verifiers and rate-limit values).

Every module is parsed with ``ast``; imports of ``illumichat_authz`` modules are followed
transitively, at module level or inside a function (a function-level import runs on the
path that calls it, so it counts), including ``from . import x`` and the packages of a
submodule; ``if TYPE_CHECKING:`` blocks and the top-level facade are not followed.
"""

from __future__ import annotations

import ast
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import illumichat_authz

SRC = Path(illumichat_authz.__file__).parent
ROOT = "illumichat_authz"

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
