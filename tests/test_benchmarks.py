"""Each benchmark still starts and prints its table: run at tiny sizes (--quick), not timed,
and RESULTS.md left alone."""

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = [
    "throughput",
    "overhead",
    "tracking",
    "search",
    "scale",
    "placement",
    "patience",
    "ablation",
]


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_at_tiny_sizes_and_prints_its_table(name):
    results = ROOT / "benchmarks" / "RESULTS.md"
    before = results.read_text() if results.exists() else None
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--quick"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(table) >= 2, done.stdout[-3000:]  # a header and at least one row
    assert "Target" in done.stdout
    assert (results.read_text() if results.exists() else None) == before


def test_every_benchmark_is_smoke_tested():
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"__init__", "common"}
    assert scripts == set(BENCHMARKS)
