"""The runnable examples of the user docs run, and the reference tables stay complete.

A fenced ``sh`` or ``python`` block directly after a ``<!-- ci: run -->`` comment is run
(``bash -e`` or this interpreter) in a fresh copy of ``examples/`` and ``policies/``, with
this virtualenv's ``illumichat-authz`` first on PATH and no ``ILLUMICHAT_AUTHZ_*``
variables inherited. Expected failures inside a block are written ``cmd || echo "exit $?"``,
so any other non-zero exit fails the test.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from illumichat_authz.config import Settings
from illumichat_authz.reasons import Reason

ROOT = Path(__file__).resolve().parents[1]
DOCS = ("architecture.md", "policy.md", "configuration.md", "cli.md")
MARKER = "<!-- ci: run -->"
_FENCE = re.compile(r"(?P<indent>[ ]*)```(?P<lang>[a-z]*)\s*\Z")


@dataclass(frozen=True)
class Snippet:
    doc: str
    line: int
    lang: str
    code: str

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def extract(doc: str, text: str) -> list[Snippet]:
    """Blocks whose opening fence follows the marker (blank lines may sit between)."""
    lines = text.splitlines()
    out: list[Snippet] = []
    i = 0
    while i < len(lines):
        if lines[i].strip() != MARKER:
            i += 1
            continue
        j = i + 1
        while j < len(lines) and not lines[j].strip():
            j += 1
        opening = _FENCE.match(lines[j]) if j < len(lines) else None
        if opening is None or opening["lang"] not in ("sh", "python"):
            raise AssertionError(f"{doc}:{i + 1}: {MARKER} must precede a sh or python block")
        body: list[str] = []
        k = j + 1
        while k < len(lines) and lines[k].strip() != "```":
            body.append(lines[k])
            k += 1
        if k == len(lines):
            raise AssertionError(f"{doc}:{j + 1}: unterminated code block")
        code = textwrap.dedent("\n".join(body)) + "\n"
        out.append(Snippet(doc, j + 1, opening["lang"], code))
        i = k + 1
    return out


def _all_snippets() -> list[Snippet]:
    found: list[Snippet] = []
    for doc in DOCS:
        found.extend(extract(doc, (ROOT / "docs" / doc).read_text(encoding="utf-8")))
    return found


SNIPPETS = _all_snippets()


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ILLUMICHAT_AUTHZ_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_documented_example_runs(snippet: Snippet, tmp_path: Path) -> None:
    if "curl " in snippet.code and shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    for name in ("examples", "policies"):
        shutil.copytree(ROOT / name, tmp_path / name)
    script = tmp_path / ("snippet.sh" if snippet.lang == "sh" else "snippet.py")
    script.write_text(snippet.code, encoding="utf-8")
    argv = ["bash", "-e", str(script)] if snippet.lang == "sh" else [sys.executable, str(script)]
    done = subprocess.run(
        argv, cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, (
        f"{snippet.id} exited {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n"
        f"{done.stderr}"
    )
    assert "Traceback" not in done.stderr, done.stderr


def test_every_doc_has_a_runnable_example() -> None:
    assert {s.doc for s in SNIPPETS} == set(DOCS)


def test_a_marker_without_a_block_is_refused() -> None:
    with pytest.raises(AssertionError, match="must precede"):
        extract("x.md", f"{MARKER}\n\ntext\n")
    blocks = extract("x.md", f"{MARKER}\n  ```sh\n  echo hi\n  ```\n")
    assert blocks == [Snippet("x.md", 2, "sh", "echo hi\n")]


def test_every_reason_code_is_documented_with_its_status() -> None:
    text = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    rows = dict(re.findall(r"^\| `([a-z_]+)` \| ([0-9 /]+) \|", text, flags=re.MULTILINE))
    missing = [r.value for r in Reason if r.value not in rows]
    assert not missing, f"reason codes missing from docs/policy.md: {missing}"
    assert rows["not_found"].strip() == "404"
    assert rows["facts_unavailable"].strip() == "503"


def test_every_setting_is_documented() -> None:
    text = (ROOT / "docs" / "configuration.md").read_text(encoding="utf-8")
    for section, field in Settings.model_fields.items():
        assert f"### `[{section}]`" in text, section
        model = field.annotation
        assert model is not None
        for key in model.model_fields:
            assert re.search(rf"^\| `{key}` \|", text, flags=re.MULTILINE), f"{section}.{key}"


def test_every_route_is_in_the_documented_table() -> None:
    from illumichat_authz.routes import load_routes

    text = (ROOT / "docs" / "policy.md").read_text(encoding="utf-8")
    for route in load_routes(ROOT / "policies" / "routes.toml").routes:
        cls, action = route.route_class.value, route.action
        row = f"| {route.method} | `{route.template}` | {cls} | `{action}` |"
        assert row in text, f"docs/policy.md lacks the row for {route.id}"
