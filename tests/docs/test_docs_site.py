"""The docs site's link rewriting (docs/_site_hooks.py); `.ci/run` builds the site itself.

Pages read the same on GitHub and in the site: README.md's ``docs/x.md`` links become
``x.md``, links to repository files outside docs/ point at a published copy, and a link to
a missing file is left alone for ``mkdocs build --strict`` to report.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path
from types import SimpleNamespace
from typing import Any

ROOT = Path(__file__).resolve().parents[2]


def _hooks() -> Any:
    spec = importlib.util.spec_from_file_location("site_hooks", ROOT / "docs" / "_site_hooks.py")
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


HOOKS = _hooks()


def _render(src_uri: str, markdown: str) -> str:
    page = SimpleNamespace(file=SimpleNamespace(src_uri=src_uri))
    return str(HOOKS.on_page_markdown(markdown, page=page, config=None, files=None))


def test_the_readme_links_to_docs_pages_and_to_copies_of_repository_files() -> None:
    out = _render(
        "index.md",
        "[cli](docs/cli.md#policy) [toml](examples/illumichat-authz.toml) "
        "[log](CHANGELOG.md) [web](https://example.com/x.md) [here](#two-commands)",
    )
    assert out == (
        "[cli](cli.md#policy) [toml](repo/examples/illumichat-authz.toml) "
        "[log](changelog.md) [web](https://example.com/x.md) [here](#two-commands)"
    )


def test_a_docs_page_reaches_files_outside_docs_through_the_copies() -> None:
    out = _render(
        "reference/x.md", "[toml](../../examples/illumichat-authz.toml) [p](../policy.md)"
    )
    assert out == "[toml](../repo/examples/illumichat-authz.toml) [p](../policy.md)"


def test_a_missing_target_and_code_blocks_are_left_as_written() -> None:
    markdown = "[gone](../src/nope.py)\n```md\n[toml](../examples/illumichat-authz.toml)\n```\n"
    assert _render("configuration.md", markdown) == markdown


def test_sphinx_roles_in_docstrings_render_as_plain_code() -> None:
    html = "a :class:<code>~.sessions_db.SessionStore</code> and :meth:<code>X.y</code>"
    out = HOOKS.on_page_content(html, page=None, config=None, files=None)
    assert out == "a <code>sessions_db.SessionStore</code> and <code>X.y</code>"
