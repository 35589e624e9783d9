"""``benchmarks/soak.py --short``: a fleet on PostgreSQL under revocations and a database
kill; exit 0 and no wrong allow."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


def test_soak_short_has_no_wrong_allow() -> None:
    done = subprocess.run(
        [sys.executable, str(SOAK), "--short"], capture_output=True, text=True, timeout=90
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "wrong allows: 0" in done.stdout.splitlines(), done.stdout
