"""Bad input: exit code 2 and one line that names the field and the fix, before anything runs."""

import time

import pytest
from typer.testing import CliRunner

from benchmarks.common import free_port
from study.cli import app
from tests.conftest import study_cli

SPACE = "space.params"

CASES = {
    "unknown top-level key": (["nme=x"], "nme: unknown key", "did you mean 'name'"),
    "unknown nested key": (["search.num_sampels=4"], "search.num_sampels", "'num_samples'"),
    "unknown --set key": (["scheduler.patience=3"], "scheduler.patience: unknown key", "known:"),
    "unknown dataset": (["dataset.name=mnistt"], "dataset.name: unknown data set", "use one of"),
    "unknown space": (["space=regularisation"], "space: unknown space", "study spaces"),
    "low above high": ([f"{SPACE}.lr.low=0.5"], f"{SPACE}.lr: low (0.5) > high", "make low <="),
    "log with low 0": ([f"{SPACE}.lr.low=0"], f"{SPACE}.lr: log scale needs low > 0", "raise low"),
    "empty choices": ([f"{SPACE}.batch_norm.choices=[]"], f"{SPACE}.batch_norm", "at least one"),
    "bad param type": ([f"{SPACE}.lr.type=real"], f"{SPACE}.lr: type must be", "categorical"),
    "num_samples 0": (["search.num_samples=0"], "search.num_samples: must be", "(got 0)"),
    "grace over budget": (["scheduler.grace_period=50"], "grace_period (50) > max_epochs", "make"),
    "unknown hyperparameter": (["fixed.weight_decy=0.1"], "fixed.weight_decy", "'weight_decay'"),
    "fixed and sampled": (["fixed.lr=0.1"], "fixed.lr: also in the space", "remove it"),
    "unknown metric": (["metric=accuracy"], "metric: unknown metric", "val_acc"),
    "gpu on a machine without": (
        ["resources.gpu=64"],
        "resources.gpu: 64 GPU",
        "set resources.gpu",
    ),
    "too many cpus": (["resources.cpu=4096"], "resources.cpu: 4096 per trial", "at most"),
    "unknown condition name": (
        [f"{SPACE}.dropout.when={{optimzer: sgd}}"],
        f"{SPACE}.dropout.when: 'optimzer' is neither",
        "modality",
    ),
    "unknown optimizer": (["fixed.optimizer=lbfgs"], "fixed.optimizer: unknown value", "adamw"),
    "grid over a float": (["search.sampler=grid"], "search.sampler: grid needs", "as choices"),
    "cnn on a table": (["dataset.name=circles", "model.name=cnn"], "model.name: cnn needs", "mlp"),
    "csv without a path": (["dataset.name=csv"], "dataset: csv needs path", "dataset.path"),
    "missing image files": (
        ["dataset.name=mnist", "dataset.root=/nonexistent"],
        "dataset.root: mnist not found under /nonexistent",
        "download: true",
    ),
    "bad --set syntax": (["search.num_samples"], "--set 'search.num_samples'", "key.sub=value"),
    "bad optuna storage": (
        ["search.storage=nosuchdb://x"],
        "search.storage: cannot open the Optuna storage nosuchdb://x",
        "fix the URL",
    ),
}


def run_cli(args: list[str], root) -> tuple[int, str, float]:
    started = time.perf_counter()
    result = CliRunner().invoke(app, args, env={"STUDY_ROOT": str(root)})
    return result.exit_code, result.stderr, time.perf_counter() - started


@pytest.mark.parametrize("overrides, field, fix", CASES.values(), ids=CASES.keys())
def test_bad_override_exits_2_with_one_line(overrides, field, fix, tmp_path):
    root = tmp_path / "runs"
    args = ["run"] + [a for o in overrides for a in ("--set", o)]
    code, stderr, seconds = run_cli(args, root)
    assert code == 2, stderr
    lines = stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: "), stderr
    assert field in lines[0] and fix in lines[0], lines[0]
    assert seconds < 10
    assert not root.exists()  # nothing launched, nothing recorded


def test_malformed_yaml_names_the_line(tmp_path):
    spec = tmp_path / "broken.yaml"
    spec.write_text("name: x\nsearch:\n  num_samples: [4\n")
    code, stderr, _ = run_cli(["run", str(spec)], tmp_path / "runs")
    assert code == 2
    assert f"{spec}: malformed YAML at line" in stderr and "fix the syntax" in stderr


def test_spec_that_is_not_a_mapping(tmp_path):
    spec = tmp_path / "list.yaml"
    spec.write_text("- name\n- dataset\n")
    code, stderr, _ = run_cli(["run", str(spec)], tmp_path / "runs")
    assert code == 2 and "a spec is a mapping" in stderr


def test_missing_spec_file(tmp_path):
    code, stderr, _ = run_cli(["run", str(tmp_path / "nope.yaml")], tmp_path / "runs")
    assert code == 2 and "cannot read the spec" in stderr


def test_space_file_with_a_bad_condition(tmp_path):
    space = tmp_path / "space.yaml"
    space.write_text(
        "params:\n"
        "  momentum: {type: float, low: 0.0, high: 0.9, when: {optimizer: sgd}}\n"
        "  optimizer: {type: categorical, choices: [sgd, adam]}\n"
    )
    code, stderr, _ = run_cli(["run", "--set", f"space={space}"], tmp_path / "runs")
    assert code == 2
    assert "params.momentum.when names 'optimizer'" in stderr and "list 'optimizer' first" in stderr


def test_unreachable_tracking_server(tmp_path):
    uri = f"http://127.0.0.1:{free_port()}"
    code, stderr, _ = run_cli(["run", "--set", f"tracking.uri={uri}"], tmp_path / "runs")
    assert code == 2
    assert f"tracking.uri: cannot reach the MLflow server at {uri}" in stderr


def test_export_of_an_unknown_study(tmp_path):
    code, stderr, _ = run_cli(["export", "no-such-study"], tmp_path / "runs")
    assert code == 2 and "no study 'no-such-study'" in stderr


def test_train_with_an_unknown_config_key(tmp_path):
    config = tmp_path / "c.yaml"
    config.write_text("config: {lr: 0.1, dropot: 0.2, epochs: 1, seed: 0}\n")
    code, stderr, _ = run_cli(["train", str(config)], tmp_path / "runs")
    assert code == 2 and "config.dropot: unknown key" in stderr


def test_real_process_exit_code_and_stderr(tmp_path):
    root = tmp_path / "runs"
    done = study_cli("run", "--set", "search.num_samples=0", root=root, timeout=120)
    assert done.returncode == 2
    assert (
        done.stderr.strip()
        == "error: search.num_samples: must be greater than or equal to 1 (got 0)"
    )
    assert not root.exists()
