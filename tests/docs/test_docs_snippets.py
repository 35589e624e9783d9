"""The examples of the user docs run, and the reference tables stay complete.

Every ``python`` block in README.md and docs/ carries a marker on the line before it (blank
lines may sit between); ``sh`` blocks may:

* ``<!-- ci: run -->``: run (``bash -e`` or this interpreter) in a fresh copy of
  ``examples/`` and ``policies/``, with this virtualenv's ``illumichat-authz`` first on PATH
  and no ``ILLUMICHAT_AUTHZ_*`` variables inherited. Expected failures inside a block are
  written ``cmd || echo "exit $?"``, so any other non-zero exit fails the test.
* ``<!-- ci: pytest -->``: a test module for the pytest plugin, run by pytest in such a
  copy; ``myservice`` (the reader's own app) is tests/docs/support/myservice.py.
* ``<!-- ci: fragment -->``: not runnable on its own (it uses names the text around it
  introduces); it must still compile, and its imports must resolve.
"""

from __future__ import annotations

import ast
import os
import re
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path
from xml.etree import ElementTree

import pytest

from illumichat_authz.config import Settings
from illumichat_authz.reasons import Reason

ROOT = Path(__file__).resolve().parents[2]
#: Pages whose examples must include at least one that runs.
RUNNABLE_DOCS = ("docs/architecture.md", "docs/policy.md", "docs/configuration.md", "docs/cli.md")
#: Every page a reader sees (the docs site is built from these).
PAGES = ("README.md", *sorted(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/**/*.md")))
MARKERS = {
    "<!-- ci: run -->": "run",
    "<!-- ci: pytest -->": "pytest",
    "<!-- ci: fragment -->": "fragment",
}
_LANGS = {"run": ("sh", "python"), "pytest": ("python",), "fragment": ("python",)}
_FENCE = re.compile(r"(?P<indent>[ ]*)```(?P<lang>[a-z]*)\s*\Z")


@dataclass(frozen=True)
class Snippet:
    doc: str
    line: int
    lang: str
    code: str
    mode: str | None = None  # the marker's mode; None: unmarked

    @property
    def id(self) -> str:
        return f"{self.doc}:{self.line}"


def blocks(doc: str, text: str) -> list[Snippet]:
    """Every fenced block of ``text``, with the mode of the marker before it, if any."""
    lines = text.splitlines()
    out: list[Snippet] = []
    mode: str | None = None
    marker_line = 0
    i = 0
    while i < len(lines):
        stripped = lines[i].strip()
        opening = _FENCE.match(lines[i])
        if stripped in MARKERS:
            mode, marker_line = MARKERS[stripped], i + 1
        elif opening is not None:
            if mode is not None and opening["lang"] not in _LANGS[mode]:
                raise AssertionError(
                    f"{doc}:{marker_line}: {stripped!r} cannot take a {opening['lang'] or 'plain'} "
                    f"block; markers precede a {' or '.join(_LANGS[mode])} block"
                )
            k = i + 1
            while k < len(lines) and lines[k].strip() != "```":
                k += 1
            if k == len(lines):
                raise AssertionError(f"{doc}:{i + 1}: unterminated code block")
            code = textwrap.dedent("\n".join(lines[i + 1 : k])) + "\n"
            out.append(Snippet(doc, i + 1, opening["lang"], code, mode))
            mode, i = None, k
        elif stripped and mode is not None:
            raise AssertionError(f"{doc}:{marker_line}: a marker must precede a code block")
        i += 1
    if mode is not None:
        raise AssertionError(f"{doc}:{marker_line}: a marker must precede a code block")
    return out


def extract(doc: str, text: str) -> list[Snippet]:
    """The blocks CI runs (``run`` mode)."""
    return [b for b in blocks(doc, text) if b.mode == "run"]


def _all_blocks() -> list[Snippet]:
    found: list[Snippet] = []
    for doc in PAGES:
        found.extend(blocks(doc, (ROOT / doc).read_text(encoding="utf-8")))
    return found


BLOCKS = _all_blocks()
SNIPPETS = [b for b in BLOCKS if b.mode == "run"]
TESTS = [b for b in BLOCKS if b.mode == "pytest"]
FRAGMENTS = [b for b in BLOCKS if b.mode == "fragment"]


def _env() -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.upper().startswith("ILLUMICHAT_AUTHZ_")}
    env["PATH"] = os.pathsep.join([str(Path(sys.executable).parent), env.get("PATH", "")])
    env["PYTHONDONTWRITEBYTECODE"] = "1"
    return env


def _workdir(tmp_path: Path) -> Path:
    for name in ("examples", "policies"):
        shutil.copytree(ROOT / name, tmp_path / name)
    return tmp_path


def _report(snippet: Snippet, done: subprocess.CompletedProcess[str]) -> str:
    return (
        f"{snippet.id} exited {done.returncode}\n--- stdout\n{done.stdout}\n--- stderr\n"
        f"{done.stderr}"
    )


@pytest.mark.parametrize("snippet", SNIPPETS, ids=[s.id for s in SNIPPETS])
def test_documented_example_runs(snippet: Snippet, tmp_path: Path) -> None:
    if "curl " in snippet.code and shutil.which("curl") is None:
        pytest.skip("curl is not installed")
    cwd = _workdir(tmp_path)
    script = cwd / ("snippet.sh" if snippet.lang == "sh" else "snippet.py")
    script.write_text(snippet.code, encoding="utf-8")
    argv = ["bash", "-e", str(script)] if snippet.lang == "sh" else [sys.executable, str(script)]
    done = subprocess.run(
        argv, cwd=cwd, env=_env(), capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, _report(snippet, done)
    assert "Traceback" not in done.stderr, done.stderr


@dataclass(frozen=True)
class PytestRun:
    """One pytest run over every ``pytest`` block (one file each): a start-up paid once."""

    output: str
    #: Per block file: (tests that ran, tests that failed or errored).
    results: dict[str, tuple[int, int]]


@pytest.fixture(scope="module")
def pytest_blocks(tmp_path_factory: pytest.TempPathFactory) -> PytestRun:
    cwd = _workdir(tmp_path_factory.mktemp("pytest-blocks"))
    shutil.copy(ROOT / "tests" / "docs" / "support" / "myservice.py", cwd)
    for n, snippet in enumerate(TESTS):
        (cwd / f"test_block_{n}.py").write_text(snippet.code, encoding="utf-8")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--junitxml=run.xml"],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    results: dict[str, tuple[int, int]] = {}
    if (cwd / "run.xml").exists():
        for case in ElementTree.parse(cwd / "run.xml").iter("testcase"):
            ran, failed = results.get(case.get("classname", ""), (0, 0))
            bad = any(child.tag in ("failure", "error") for child in case)
            results[case.get("classname", "")] = (ran + 1, failed + bad)
    return PytestRun(done.stdout + done.stderr, results)


@pytest.mark.parametrize("n", range(len(TESTS)), ids=[s.id for s in TESTS])
def test_documented_test_passes(pytest_blocks: PytestRun, n: int) -> None:
    ran, failed = pytest_blocks.results.get(f"test_block_{n}", (0, 0))
    assert ran, f"{TESTS[n].id}: no test ran\n{pytest_blocks.output}"
    assert not failed, f"{TESTS[n].id}: {failed} failed\n{pytest_blocks.output}"


@pytest.mark.parametrize("snippet", FRAGMENTS, ids=[s.id for s in FRAGMENTS])
def test_documented_fragment_compiles_and_imports(snippet: Snippet) -> None:
    # A renamed function or module fails here even where the fragment cannot run.
    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT  # fragments may show `await` as async code would
    tree = compile(snippet.code, snippet.id, "exec", flags | ast.PyCF_ONLY_AST, dont_inherit=True)
    assert isinstance(tree, ast.Module)
    imports = [
        n
        for n in ast.walk(tree)
        if isinstance(n, ast.Import | ast.ImportFrom) and not _readers_own(n)
    ]
    exec(compile(ast.Module(body=imports, type_ignores=[]), snippet.id, "exec"), {})


def _readers_own(node: ast.Import | ast.ImportFrom) -> bool:
    """``myservice`` stands for the reader's own code in the docs: there is nothing to import."""
    names = (
        [node.module or ""] if isinstance(node, ast.ImportFrom) else [a.name for a in node.names]
    )
    return any(name.split(".")[0] == "myservice" for name in names)


def test_every_python_block_runs_or_is_marked_a_fragment() -> None:
    unmarked = [b.id for b in BLOCKS if b.lang == "python" and b.mode is None]
    assert not unmarked, (
        f"python blocks without a marker (add <!-- ci: run -->, <!-- ci: pytest --> or "
        f"<!-- ci: fragment --> on the line before): {unmarked}"
    )


def test_every_doc_has_a_runnable_example() -> None:
    assert set(RUNNABLE_DOCS) <= {s.doc for s in SNIPPETS}


def test_markers_must_precede_a_block_of_their_kind() -> None:
    with pytest.raises(AssertionError, match="must precede"):
        blocks("x.md", "<!-- ci: run -->\n\ntext\n")
    with pytest.raises(AssertionError, match="cannot take a sh block"):
        blocks("x.md", "<!-- ci: fragment -->\n```sh\necho hi\n```\n")
    found = blocks("x.md", "<!-- ci: run -->\n  ```sh\n  echo hi\n  ```\n```python\nx\n```\n")
    assert found == [
        Snippet("x.md", 2, "sh", "echo hi\n", "run"),
        Snippet("x.md", 5, "python", "x\n"),
    ]


#: A path of someone's machine: a home, a scratch or a work directory.
_MACHINE_PATH = re.compile(r"(?<![\w.~-])/(?:work|home|root|tmp|Users|var/folders)(?![\w-])")


def test_docs_show_no_machine_paths() -> None:
    found = []
    for page in ("README.md", *(p.relative_to(ROOT).as_posix() for p in ROOT.glob("docs/**/*"))):
        if (ROOT / page).is_dir():
            continue
        for n, line in enumerate((ROOT / page).read_text(encoding="utf-8").splitlines(), 1):
            if _MACHINE_PATH.search(line):
                found.append(f"{page}:{n}: {line.strip()}")
    assert not found, "use a neutral path (/srv/app/...) in docs:\n" + "\n".join(found)


def test_the_readme_installs_what_its_test_command_needs() -> None:
    import tomllib

    commands = [b.code for b in BLOCKS if b.doc == "README.md" and b.lang == "sh"]
    # The two commands a newcomer is given: set up and run the demo; set up and test.
    assert "pip install" in commands[0]
    assert "illumichat-authz demo" in commands[0]
    assert "bash .ci/run\n" in commands
    # A pytest command installs the test dependencies (the demo's setup has none) first.
    tests = [code for code in commands if "-m pytest" in code]
    assert tests, "the README gives no test command"
    for code in tests:
        assert "pip install -q -e '.[dev]'" in code.split("-m pytest")[0], code
    dev = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"][
        "optional-dependencies"
    ]["dev"]
    assert any(dep.startswith("pytest") for dep in dev)


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
