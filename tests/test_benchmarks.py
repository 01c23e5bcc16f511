"""Each benchmark still starts and prints its table: run at tiny sizes (--quick), not timed,
and RESULTS.md left alone; benchmarks.gpu's dry run on the CPU, every step checked."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import on_head

ROOT = Path(__file__).resolve().parent.parent
BENCHMARKS = [
    "throughput", "overhead", "tracking", "search", "scale", "placement", "patience", "folds",
    "ablation", "start_stop",
]  # fmt: skip
# tests/test_lcbench.py runs lcbench with --quick and checks its table; tests/test_resume.py
# runs a handful of the kills' seeded kills and checks each promise
ELSEWHERE = ["lcbench", "kills"]
# Their own local Ray (tracking reads its session's logs; scale starts a cluster of its own) or
# none; the others run on this test worker's Ray head, given as RAY_ADDRESS.
OWN_RAY = {"throughput", "tracking", "scale", "folds"}


def on(ray_head: dict, name: str = "") -> dict[str, str]:
    """The environment of a benchmark: RAY_ADDRESS the worker's head, unless `name` has its own."""
    return {**os.environ, "RAY_AUTH_MODE": "disabled"} if name in OWN_RAY else on_head(ray_head)


@pytest.mark.parametrize("name", BENCHMARKS)
def test_benchmark_runs_at_tiny_sizes_and_prints_its_table(name, ray_head):
    before = recorded()
    done = subprocess.run(
        [sys.executable, "-m", f"benchmarks.{name}", "--quick"],
        cwd=ROOT,
        env=on(ray_head, name),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    table = [line for line in done.stdout.splitlines() if line.startswith("| ")]
    assert len(table) >= 2, done.stdout[-3000:]  # a header and at least one row
    assert "Target" in done.stdout
    assert recorded() == before  # --quick records nothing


def recorded() -> dict[str, str]:
    """The benchmarks' records: RESULTS.md (the current figures) and each history file."""
    folder = ROOT / "benchmarks"
    files = [folder / "RESULTS.md", *sorted((folder / "history").glob("*.md"))]
    return {path.name: path.read_text() for path in files if path.exists()}


def test_every_benchmark_is_smoke_tested():
    scripts = {p.stem for p in (ROOT / "benchmarks").glob("*.py")} - {"__init__", "common"}
    assert scripts == {*BENCHMARKS, *ELSEWHERE, "gpu"}


def cuda() -> bool:
    import torch

    return torch.cuda.is_available()


# On a GPU machine `python -m benchmarks.gpu` runs at full size instead (and --dry-run there
# runs on the GPU).
no_cuda = pytest.mark.skipif(cuda(), reason="CUDA is here: run python -m benchmarks.gpu")


def run_gpu_benchmark(
    *args: str, timeout: float = 900, env: dict | None = None
) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.gpu", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@no_cuda
def test_the_gpu_benchmark_dry_run_does_every_step_at_tiny_sizes_on_the_cpu(tmp_path, ray_head):
    """`python -m benchmarks.gpu --dry-run`: the studies run and record their device, the CUDA
    tests are collected (and skipped), both loops are timed in every variant, and the packing
    levels give trial-epochs per hour; RESULTS.md is left alone."""
    before = recorded()
    out = str(tmp_path / "gpu.json")
    done = run_gpu_benchmark("--dry-run", "--budget", "14", "--json", out, env=on(ray_head))
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert recorded() == before
    steps = json.loads((tmp_path / "gpu.json").read_text())["steps"]
    assert {name: step["status"] for name, step in steps.items()} == dict.fromkeys(
        ["data", "runs", "tests", "throughput", "packing"], "done"
    )

    for study in ("default", "cnn"):
        trials = steps["runs"]["figures"][study]["trials"]
        assert len(trials) == 2, trials
        for trial in trials:  # on the CPU: the device, no GPU model, no peak memory
            assert trial["outcome"] in ("completed", "early_stopped")
            assert (trial["device"], trial["gpu"], trial["peak_mib"]) == ("cpu", "", None)
            assert 1 <= trial["epochs"] == len(trial["ends"])

    tests = steps["tests"]["figures"]
    assert tests["skipped"] >= 8 and tests["passed"] == tests["failed"] == 0  # collected

    measured = {(m["model"], m["loop"], m["variant"]) for m in
                steps["throughput"]["figures"]["measurements"]}  # fmt: skip
    assert len(measured) == 3 + 4 + 2  # mlp: 3 variants, cnn: 4, and a DataLoader each
    assert {loop for _, loop, _ in measured} == {
        "ours",
        "DataLoader(num_workers=4, pin_memory=True)",
    }
    assert all(m["samples_s"] > 0 for m in steps["throughput"]["figures"]["measurements"])

    levels = steps["packing"]["figures"]["levels"]
    assert [(level["at_once"], level["trials"], level["epochs"]) for level in levels] == [
        (1, 1, 2),
        (2, 2, 4),
    ]
    assert all(level["per_gpu_hour"] > 0 and level["gpu_util"] is None for level in levels)
    assert all(0 < level["cpu_busy"] <= 1 for level in levels)

    for title in ("study runs", "the CUDA tests", "our loop vs DataLoader", "fractional"):
        assert title in done.stdout
    assert "of 14 min (--dry-run: tiny sizes)" in done.stdout  # the summary


@no_cuda
def test_the_gpu_benchmark_without_cuda_says_so_in_one_line_and_exits_2():
    done = run_gpu_benchmark(timeout=120)
    lines = done.stderr.strip().splitlines()
    assert done.returncode == 2 and len(lines) == 1 and "no CUDA GPU here" in lines[0]
