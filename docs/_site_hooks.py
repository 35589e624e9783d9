"""mkdocs hooks: build the site from the files as they read on GitHub, links unchanged.

README.md is the home page and CHANGELOG.md a page, though both live outside docs/. Their
relative links, and any page's link to a repository file outside docs/
(``../examples/illumichat-authz.toml``), are rewritten for the site: to the page the file
became, or to a copy of the file published under ``repo/``. A link whose target does not
exist is left as written, for ``mkdocs build --strict`` to report.

Docstrings name objects the Sphinx way (``:class:`~.x.Name```); the API reference shows
the name alone, in code.
"""

from __future__ import annotations

import posixpath
import re
from pathlib import Path
from typing import Any

from mkdocs.structure.files import File, Files

ROOT = Path(__file__).resolve().parents[1]
#: Repository files that are pages of the site, and the page each becomes.
PAGES = {"README.md": "index.md", "CHANGELOG.md": "changelog.md"}
#: Where copies of other linked repository files go in the site.
COPIES = "repo"
#: An inline Markdown link's target: ``](target#anchor)`` or ``](target "title")``.
_LINK = re.compile(r"(?P<head>\]\()(?P<target>[^)\s#]+)(?P<tail>[^)]*\))")
_NOT_RELATIVE = re.compile(r"^(?:[a-z][a-z0-9+.-]*:|/|#)", re.IGNORECASE)
#: A Sphinx role before rendered code, and the ``~``/``.`` of a shortened target in it.
_ROLE = re.compile(r":(?:py:)?(?:attr|class|data|exc|func|meth|mod|obj):<code>~?\.?")


def _origin(src_uri: str) -> str:
    """Where a site page's source lives in the repository (posix, from the root)."""
    for source, page in PAGES.items():
        if src_uri == page:
            return source
    return f"docs/{src_uri}"


def _in_repository(origin: str, target: str) -> str | None:
    """The repository path a relative link from ``origin`` points at, if it is one."""
    if _NOT_RELATIVE.match(target):
        return None
    path = posixpath.normpath(posixpath.join(posixpath.dirname(origin), target))
    return None if path.startswith("../") else path


def _site_path(path: str) -> str | None:
    """Where repository file ``path`` is in the site; ``None``: a docs/ page, unchanged."""
    if path in PAGES:
        return PAGES[path]
    if path.startswith("docs/"):
        return path.removeprefix("docs/")
    if (ROOT / path).is_file():
        return f"{COPIES}/{path}"
    return None  # missing: keep the link, so the strict build reports it


def _outside_prose(markdown: str) -> list[tuple[bool, str]]:
    """Split ``markdown`` into (is_prose, text) runs; fenced code is never rewritten."""
    runs: list[tuple[bool, str]] = []
    fenced = False
    for line in markdown.splitlines(keepends=True):
        if line.lstrip().startswith("```"):
            fenced = not fenced
            runs.append((False, line))
        else:
            runs.append((not fenced, line))
    return runs


def _links(markdown: str) -> list[str]:
    return [
        m["target"]
        for prose, text in _outside_prose(markdown)
        if prose
        for m in _LINK.finditer(text)
    ]


def on_files(files: Files, config: Any) -> Files:
    for source, page in PAGES.items():
        files.append(File.generated(config, page, abs_src_path=str(ROOT / source)))
    copies: set[str] = set()
    for file in list(files):
        if not file.src_uri.endswith(".md") or file.abs_src_path is None:
            continue
        origin = _origin(file.src_uri)
        for target in _links(Path(file.abs_src_path).read_text(encoding="utf-8")):
            path = _in_repository(origin, target)
            if path is not None and (_site_path(path) or "").startswith(f"{COPIES}/"):
                copies.add(path)
    for path in sorted(copies):
        files.append(File.generated(config, f"{COPIES}/{path}", abs_src_path=str(ROOT / path)))
    return files


def on_page_markdown(markdown: str, page: Any, config: Any, files: Files) -> str:
    origin = _origin(page.file.src_uri)
    here = posixpath.dirname(page.file.src_uri)

    def rewrite(match: re.Match[str]) -> str:
        path = _in_repository(origin, match["target"])
        site = _site_path(path) if path else None
        if site is None:
            return match[0]
        return f"{match['head']}{posixpath.relpath(site, here or '.')}{match['tail']}"

    return "".join(
        _LINK.sub(rewrite, text) if prose else text for prose, text in _outside_prose(markdown)
    )


def on_page_content(html: str, page: Any, config: Any, files: Files) -> str:
    return _ROLE.sub("<code>", html)
