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

from pathlib import Path

import pytest

from import_closure import closure, forbidden_in

CORE = "illumichat_authz.core"


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
