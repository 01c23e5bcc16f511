"""Trials that fail or report a non-finite metric, through real Ray, Optuna and MLflow: each
ends with the right outcome in both stores, none becomes the best, and a failure is one line
on the console with its traceback kept in the trial's folder and on its MLflow run."""

import io
import math
import sys
from pathlib import Path

import optuna
import ray
from mlflow.tracking import MlflowClient
from rich.console import Console

from study.commands.preflight import Checked
from study.commands.run import run_study
from study.core import Found
from study.spec import load_spec
from trainables import load_dataset

# What each trial's lr makes the stand-in loop below do at epoch 2.
NAN, INF, RAISE, FINE = 0.1, 0.2, 0.3, 0.4
EPOCHS = 3
SOURCE = Path(__file__).read_text().splitlines()


def scripted_loop(config, data, report, state=None):
    """A training loop that reports made-up metrics: its lr says how epoch 2 goes."""
    for epoch in range(1, config["epochs"] + 1):
        value = 0.5 + 0.1 * epoch
        if epoch == 2 and config["lr"] == RAISE:
            raise ValueError("boom [at epoch 2]")
        if epoch >= 2 and config["lr"] in (NAN, INF):
            value = math.nan if config["lr"] == NAN else math.inf
        metrics = {"train_loss": 1 - value, "train_acc": value, "val_loss": 1 - value}
        metrics |= {"val_acc": value, "gap": 0.0, "lr": config["lr"], "epoch_time": 0.01}
        report({"epoch": epoch, **metrics}, {"epoch": epoch})


def read(path: str) -> str:
    with open(path) as file:
        return file.read()


def test_non_finite_metrics_end_as_diverged_and_a_failure_is_one_line(tmp_path, capfd):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers need not import it
    spec = load_spec(
        None,
        [
            "name=failures",
            f"space={{params: {{lr: {{type: categorical, choices: {[NAN, INF, RAISE, FINE]}}}}}}}",
            "search.sampler=grid",
            "search.num_samples=4",
            "search.max_concurrent=1",  # one trial actor to start
            "scheduler.name=none",
            f"scheduler.max_epochs={EPOCHS}",
            "cluster.max_failures=1",
        ],
    )
    root = tmp_path / "runs"
    out = io.StringIO()
    checked = Checked(spec, load_dataset({"name": "digits"}), Found())
    try:
        ranked = run_study(spec, root, checked, Console(file=out, width=200), train=scripted_loop)
    finally:
        ray.shutdown()

    trials = optuna.load_study(study_name="failures", storage=f"sqlite:///{root}/optuna.db").trials
    by_lr = {t.params["lr"]: t for t in trials}
    states = {lr: (t.state.name, t.user_attrs.get("outcome")) for lr, t in by_lr.items()}
    assert states == {
        NAN: ("FAIL", "diverged"),
        INF: ("FAIL", "diverged"),
        RAISE: ("FAIL", "failed"),
        FINE: ("COMPLETE", "completed"),
    }

    client = MlflowClient(f"sqlite:///{root}/mlflow.db")
    runs = client.search_runs([client.get_experiment_by_name("failures").experiment_id])
    children = {float(r.data.params["lr"]): r for r in runs if "mlflow.parentRunId" in r.data.tags}
    for lr in (NAN, INF):
        run = children[lr]
        assert (run.data.tags["outcome"], run.info.status) == ("diverged", "FAILED")
        assert run.data.tags["epochs"] == "2"  # ended at the epoch that was not finite
        assert (
            run.data.tags["error"]
            == f"val_acc was {math.nan if lr == NAN else math.inf} in epoch 2"
        )
    failed = children[RAISE]
    assert (failed.data.tags["outcome"], failed.info.status) == ("failed", "FAILED")
    assert failed.data.tags["error"] == "ValueError: boom [at epoch 2]"
    assert failed.data.tags["retries"] == "1"  # retried once, as max_failures says
    copy = client.download_artifacts(failed.info.run_id, "error.txt", str(tmp_path))
    line = next(n for n, text in enumerate(SOURCE, 1) if 'raise ValueError("boom' in text)
    frame = f'test_trial_failures.py", line {line}, in scripted_loop'  # the traceback, in full
    assert frame in read(copy) and "boom [at epoch 2]" in read(copy)

    assert ranked[0].config.hyperparameters["lr"] == FINE  # inf is never the best
    assert len(ranked) == 1
    parent = next(r for r in runs if r.data.tags.get("study.role") == "parent")
    assert parent.data.tags["best_run_id"] == children[FINE].info.run_id

    console = out.getvalue()
    lines = [line for line in console.splitlines() if line.startswith("failed ")]
    assert len(lines) == 1, console
    assert "ValueError: boom [at epoch 2] (traceback: " in lines[0]
    path = lines[0].rsplit("(traceback: ", 1)[1].rstrip(")")
    assert frame in read(path) and path.startswith(str(root))
    retries = [line for line in console.splitlines() if line.startswith("retrying ")]
    assert len(retries) == 1 and "ValueError: boom" in retries[0]
    captured = capfd.readouterr()
    assert frame not in console + captured.out + captured.err
