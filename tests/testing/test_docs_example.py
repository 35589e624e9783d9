"""docs/examples/test_example_service.py runs green, as another service would run it.

It runs in a subprocess with a bare pytest configuration in a temporary directory (not our
pyproject), so the plugin is found through its ``pytest11`` entry point exactly as in a
project that merely installed illumichat-authz. Warnings are errors there too.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

EXAMPLE = Path(__file__).resolve().parents[2] / "docs" / "examples" / "test_example_service.py"


def run_pytest(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    ini = tmp_path / "pytest.ini"
    ini.write_text(
        "[pytest]\naddopts = --strict-markers -p no:cacheprovider\nfilterwarnings = error\n"
    )
    return subprocess.run(
        [sys.executable, "-m", "pytest", "-c", str(ini), "--rootdir", str(tmp_path), *args],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )


def test_documented_example_passes(tmp_path: Path) -> None:
    result = run_pytest(tmp_path, str(EXAMPLE), "-q")
    assert result.returncode == 0, result.stdout[-4000:] + result.stderr[-2000:]
    assert " passed" in result.stdout
    assert "failed" not in result.stdout


def test_plugin_does_not_disturb_projects_that_never_use_it(tmp_path: Path) -> None:
    (tmp_path / "test_plain.py").write_text("def test_plain():\n    assert 1 + 1 == 2\n")
    result = run_pytest(tmp_path, "-q", "test_plain.py")
    assert result.returncode == 0, result.stdout + result.stderr
    listed = run_pytest(tmp_path, "--fixtures", "-q", "test_plain.py")
    assert "mint_session" in listed.stdout  # registered, but nothing ran
    disabled = run_pytest(tmp_path, "-q", "-p", "no:illumichat_authz", "test_plain.py")
    assert disabled.returncode == 0, disabled.stdout + disabled.stderr


def test_plugin_module_imports_nothing_heavy() -> None:
    code = (
        "import sys; import illumichat_authz.testing.plugin as p; "
        "heavy = [m for m in ('casbin', 'cryptography', 'jwt', 'hypothesis', 'starlette') "
        "if m in sys.modules]; print(heavy)"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    # The plugin itself adds nothing heavy beyond what `import illumichat_authz` loads.
    assert "hypothesis" not in result.stdout
    assert "starlette" not in result.stdout
