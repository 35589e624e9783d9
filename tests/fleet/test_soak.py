"""``benchmarks/soak.py --short``: 4 instances (2 x ``serve``, 2 x uvicorn + AuthzMiddleware)
on one PostgreSQL and one Redis, under load, while a membership and an API key are revoked,
a policy is published and rolled back, and PostgreSQL, Redis and one instance are killed
and restarted. The script's own oracle does the checking; this test reads its verdict."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.interop

SOAK = Path(__file__).resolve().parents[2] / "benchmarks" / "soak.py"


@pytest.fixture(scope="module")
def soak() -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(SOAK), "--short"], capture_output=True, text=True, timeout=120
    )


def test_soak_short_passes_its_oracle(soak: subprocess.CompletedProcess[str]) -> None:
    assert soak.returncode == 0, soak.stdout + soak.stderr
    lines = soak.stdout.splitlines()
    for verdict in ("wrong allows: 0", "wrong denies: 0", "500s: 0",
                    "503s outside a fault window: 0", "failures: 0",
                    "answers under the previous policy after its switch reached the instance: 0",
                    ):  # fmt: skip
        assert verdict in lines, soak.stdout


def test_soak_short_reports_every_fault_and_change(
    soak: subprocess.CompletedProcess[str],
) -> None:
    out = soak.stdout
    for fault in ("PostgreSQL killed", "Redis killed", "instance asgi-1 killed"):
        assert re.search(rf"^fault {fault}: .*; recovery \d+\.\d+ s.*; 503s in its window: \d+$",
                         out, re.M), out  # fmt: skip
    for change in ("membership removal", "API key revocation"):
        assert f"staleness of the {change}" in out, out
    for switch in ("publish", "rollback"):
        assert re.search(rf"^policy {switch} .* \d+\.\d+ s after the command", out, re.M), out
    assert "admitted in each Redis epoch's first window: [5, 5]" in out, out
