"""benchmarks/lcbench.py without its surrogate's files: the one-line refusal, the training loop
that replays a curve, the measures, and its study wiring on a tiny synthetic benchmark of
curves (through Ray, as `--quick`), so the benchmark cannot rot where onnxruntime is absent."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

from benchmarks.lcbench import METHODS, Synthetic, epochs_to, regret, replay, table
from study.spec import StudySpec

ROOT = Path(__file__).resolve().parent.parent


def lcbench(*args: str, ray: str | None = None) -> subprocess.CompletedProcess:
    """The benchmark as a user runs it; on the Ray cluster at `ray` (as `RAY_ADDRESS`)."""
    env = {**os.environ, "RAY_AUTH_MODE": "disabled", **({"RAY_ADDRESS": ray} if ray else {})}
    return subprocess.run(
        [sys.executable, "-m", "benchmarks.lcbench", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=600,
    )


def test_without_data_it_says_where_to_get_the_files_and_exits_2(tmp_path):
    for args in ([], ["--data", str(tmp_path)]):
        done = lcbench(*args, "--no-record")
        assert done.returncode == 2, done.stderr[-2000:]
        lines = done.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("error: --data: "), done.stderr
        assert "slds-lmu/yahpo_data" in lines[0] and "lcbench/" in lines[0]


def config(**values):
    return {"dataset": {"name": "digits"}, "model": {"name": "mlp"}, "epochs": 9, "seed": 0,
            **values}  # fmt: skip


def test_replay_reports_the_curve_once_per_epoch_from_where_its_state_left_off():
    curves = Synthetic(epochs=9)
    values = curves.curve({"lr": 0.01, "dropout": 0.1})
    reported = []
    replay(config(lr=0.01, dropout=0.1), curves, lambda m, s: reported.append((m, s)))
    assert [m["epoch"] for m, _ in reported] == list(range(1, 10))
    assert [m["val_acc"] for m, _ in reported] == pytest.approx([v / 100 for v in values])
    assert [s["epoch"] for _, s in reported] == list(range(1, 10))  # what a checkpoint holds
    resumed = []
    replay(config(lr=0.01, dropout=0.1, stop_epoch=6), curves, lambda m, s: resumed.append(m),
           state={"epoch": 3})  # fmt: skip
    assert [m["epoch"] for m in resumed] == [4, 5, 6]


def test_synthetic_curves_cross_as_lcbench_does():
    """A fast learner leads at epoch 1 and ends below a slow one."""
    fast, slow = (Synthetic().curve({"lr": lr, "dropout": 0.0}) for lr in (0.05, 0.003))
    assert fast[0] > slow[0] and fast[-1] < slow[-1]


def test_regret_epochs_to_and_the_table():
    """Regret: points below the reference of the best seen within the budget; epochs to a
    target count all spent when it was never reached; the spread is across seeds."""
    a = [0.50, 0.70, 0.60, 0.90]
    assert regret(a, 95.0, 2) == pytest.approx(25.0) and regret(a, 95.0, 100) == pytest.approx(5.0)
    assert epochs_to(a, 70.0) == 2 and epochs_to(a, 99.0) == 4
    runs = {
        "tpe": {("x", 0): a, ("x", 1): [0.8, 0.9]},
        "default": {("x", 0): [0.9], ("x", 1): [0.6, 0.7]},
    }
    rows, regrets = table(runs, {"x": 95.0}, [1, 4])
    assert regrets["tpe"][1] == pytest.approx([45.0, 15.0])
    assert regrets["default"][4] == pytest.approx([5.0, 25.0])
    assert rows[0][1] == f"30.00 ± {21.2132:.2f}"  # mean of 45, 15; std of the two seeds
    # best found: 0.9 on both seeds; within 1 point: epoch 4 and 2 (tpe), 1 and never (default)
    assert rows[0][3] == "3" and rows[1][3] == "2"


def test_methods_are_the_issues_and_each_is_told_apart():
    keys = [method.key for name, method in METHODS.items() if not name.endswith("default")]
    assert len(set(keys)) == len(keys)
    assert METHODS["optuna-hyperband"].searcher == "optuna"
    default = StudySpec().search  # "default" is the study's default search, whatever it is
    assert (METHODS["default"].sampler, METHODS["stock-default"].searcher) == (
        default.sampler,
        "stock",
    )
    assert METHODS["default"].scheduler == {**StudySpec().scheduler.model_dump(), "max_epochs": 52}


def test_the_study_wiring_runs_on_synthetic_curves(ray_head):
    """--quick: 3 methods through the Tuner of `study run`, one result per epoch; TPE alone
    spends every epoch of every trial, the default's ASHA no more."""
    results = (ROOT / "benchmarks" / "RESULTS.md").read_text()
    done = lcbench("--quick", ray=ray_head["address"])
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {line.split(" | ")[0].strip("| "): line.split(" | ")
            for line in done.stdout.splitlines() if line.startswith("| ")}  # fmt: skip
    spent = {name: int(row[-1].strip(" |")) for name, row in rows.items() if name != "method"}
    assert spent["TPE alone, no early stopping"] == 4 * 4
    default = "the study's default: GP from the 4th trial + ASHA (grace 3, factor 3), ours (GP"
    assert 0 < spent[f"{default} shown early-stopped trials)"] <= 4 * 4
    assert "Target 1" in done.stdout
    assert (ROOT / "benchmarks" / "RESULTS.md").read_text() == results  # --quick records nothing
