"""`search.enqueue` and `search.warm_start`, end to end: the user's recipe (an exported file)
and every regularizer off run first, as trials 1 and 2, with exactly their values, tagged in
MLflow and told to Optuna as ordinary trials; a driver killed once they are queued, resumed,
runs each of them once; a later study warm-started from that one reruns none of its trials."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import optuna
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import study_cli, study_here
from tests.exactly_once import check_exactly_once

NAME = "enqueued"
SAMPLES, EPOCHS = 4, 3
RECIPE = {
    "lr": 0.003,
    "weight_decay": 5e-4,
    "dropout": 0.1,
    "batch_norm": True,
    "label_smoothing": 0.05,
}  # fmt: skip  (label_smoothing: outside the space)


def exported(folder) -> str:
    """A file as `study export` writes it: provenance, value, and the config to train."""
    config = {**RECIPE, "dataset": {"name": "digits"}, "model": {"name": "mlp", "widths": [32]},
              "epochs": 27, "seed": 3, "optuna_trial": 11}  # fmt: skip
    document = {"study": "earlier", "trial": "t012", "metric": "val_acc", "mode": "max",
                "value": 0.97, "seed": 3, "config": config}  # fmt: skip
    path = folder / "recipe.yaml"
    path.write_text(yaml.safe_dump(document, sort_keys=False))
    return str(path)


def spec_file(folder) -> str:
    spec = {
        "name": NAME,
        "model": {"name": "mlp", "widths": [32]},
        "search": {"num_samples": SAMPLES, "max_concurrent": 1,
                   "enqueue": [exported(folder), "unregularized"]},
        "scheduler": {"max_epochs": EPOCHS, "grace_period": 1},
    }  # fmt: skip
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(spec))
    return str(path)


def trial_started(root) -> bool:
    try:
        with sqlite3.connect(f"file:{root / 'mlflow.db'}?mode=ro", uri=True, timeout=1) as db:
            return db.execute("select count(*) from tags where key = 'trial'").fetchone()[0] > 0
    except sqlite3.Error:
        return False


def test_the_recipe_and_unregularized_run_first_once_each_and_a_later_study_learns_from_them(
    tmp_path,
):
    root = tmp_path / "runs"
    driver = subprocess.Popen(
        [sys.executable, "-m", "study", "run", spec_file(tmp_path)],
        env={**os.environ, "STUDY_ROOT": str(root)},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 180
    while not trial_started(root):  # both items queued before the first trial starts
        assert driver.poll() is None and time.time() < deadline, "no trial started"
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    resumed = study_cli("resume", NAME, root=root)
    assert resumed.returncode == 0, resumed.stderr[-3000:]

    runs = check_exactly_once(root, NAME, SAMPLES, EPOCHS)
    tags = {number: run.data.tags.get("enqueued") for number, run in runs.items()}
    assert tags == {1: "1: recipe.yaml", 2: "2: unregularized", 3: None, 4: None}
    first, second = runs[1].data.params, runs[2].data.params
    assert {k: first[k] for k in RECIPE} == {k: str(v) for k, v in RECIPE.items()}
    assert first["seed"] == "0" and first["epochs"] == str(EPOCHS)  # the spec's, not the file's
    assert (second["weight_decay"], second["dropout"], second["batch_norm"]) == (
        "1e-06",
        "0.0",
        "False",  # weight_decay: the log range's bound nearest to off
    )
    assert second["l1"] == second["label_smoothing"] == second["mixup_alpha"] == "0.0"
    third = json.loads(runs[3].data.tags["config"])  # a sampled trial: the study's own values
    assert "label_smoothing" not in third and runs[3].data.params["label_smoothing"] == "0.0"

    storage = optuna.storages.RDBStorage(f"sqlite:///{root / 'optuna.db'}")
    try:
        trials = optuna.load_study(study_name=NAME, storage=storage).trials
    finally:
        storage.engine.dispose()
    space = ("lr", "weight_decay", "dropout", "batch_norm")
    assert {k: trials[0].params[k] for k in space} == {k: RECIPE[k] for k in space}
    assert trials[0].user_attrs["enqueued"] == "1: recipe.yaml"

    # the report opens with the best trial against the baseline (trial 1)
    report = study_here("report", NAME, root=root)
    assert report.returncode == 0, report.stderr[-3000:]
    second_line = report.stdout.splitlines()[1]
    assert second_line.startswith(
        ("Best vs your baseline t001 (recipe.yaml)", "Best is your baseline t001 (recipe.yaml)")
    ), report.stdout
    assert f"`study confirm {NAME} --with t001` for intervals" in second_line
    refused = study_here("confirm", NAME, "--with", "t009", root=root)
    assert refused.returncode == 2
    assert refused.stderr == (
        f"error: --with: study '{NAME}' has no trial 't009'; its trials: t001-t004\n"
    )
    check_warm_start(root)


def test_an_enqueued_value_outside_the_space_is_refused_before_anything_runs(tmp_path):
    root = tmp_path / "runs"
    done = study_here("run", "--set", "search.enqueue=[{dropout: 0.9}]", root=root)
    assert done.returncode == 2, done.stderr
    assert done.stderr.startswith(
        "error: search.enqueue[1].dropout: given 0.9 is outside the space (0 .. 0.5); give a "
        "value in it, or widen space.params.dropout"
    )
    assert not root.exists()  # nothing made, nothing recorded


def check_warm_start(root) -> None:
    """A second study of the same root learns from the first's trials: they are neither
    rerun nor counted nor recorded in it; one line said how many came in. A warm start from
    a study that is not there, or from itself, is refused in one line."""
    small = ["--set", "search.num_samples=2", "--set", "scheduler.max_epochs=2",
             "--set", "scheduler.grace_period=1", "--set", "model.widths=[16]"]  # fmt: skip
    warm = ["--set", "name=later", "--set", f"search.warm_start=[{NAME}]"]
    later = study_cli("run", *small, *warm, root=root)
    assert later.returncode == 0, later.stderr[-3000:]
    assert f"warm start: {SAMPLES} trials of {NAME}" in later.stderr
    check_exactly_once(root, "later", 2, 2)  # its own two, none of the earlier four
    check_exactly_once(root, NAME, SAMPLES, EPOCHS)  # the earlier study as it was
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("later")
    (parent,) = client.search_runs(
        [experiment.experiment_id], filter_string="tags.`study.role` = 'parent'"
    )
    assert parent.data.tags["warm_start_trials"] == str(SAMPLES)
    assert parent.data.params["search.warm_start"] == f"['{NAME}']"

    for names, said in (
        (["nowhere"], "error: search.warm_start: no study 'nowhere' in "),
        (["again"], "error: search.warm_start: again is this study; name an"),
    ):
        refused = study_here("run", *small, "--set", "name=again", "--set",
                             f"search.warm_start={names}", root=root)  # fmt: skip
        assert refused.returncode == 2 and refused.stderr.startswith(said), refused.stderr
        assert len(refused.stderr.strip().splitlines()) == 1
