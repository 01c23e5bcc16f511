"""`study ablate` and `study confirm` end to end through the CLI on a small study: their tables
and files, their MLflow shape (one run of the role nested under the parent run, a child run
per variant or trial and seed under it), the bad inputs refused before anything runs, and a
SIGKILL mid-ablation after which `study ablate` again ends with exactly one run per variant
and seed."""

import json
import os
import signal
import sqlite3
import subprocess
import sys
import time

import pandas as pd
import pytest
import yaml
from mlflow.tracking import MlflowClient

from tests.conftest import files, study_cli, study_here
from trainables import HYPERPARAMETERS

pytestmark = pytest.mark.xdist_group("ablate")

NAME = "digits-regularization"
SEEDS = 2
EPOCHS = 3
OVERRIDES = [
    "search.num_samples=4",
    f"scheduler.max_epochs={EPOCHS}",
    "scheduler.grace_period=1",
    "model.widths=[32]",
]
VERDICTS = ("helps", "hurts", f"no effect detectable at {SEEDS} seeds")


@pytest.fixture(scope="module")
def study(tmp_path_factory, ray_head):
    """The study, on this worker's Ray head (its ablations and confirmations go there too)."""
    root = tmp_path_factory.mktemp("ablate") / "runs"
    args = [a for o in OVERRIDES for a in ("--set", o)]
    done = study_cli("run", *args, root=root, ray=ray_head["address"])
    assert done.returncode == 0, done.stderr[-3000:]
    table = json.loads((root / "studies" / NAME / "results.json").read_text())
    ranked = sorted(
        (r for r in table if r["outcome"] in ("completed", "early_stopped")),
        key=lambda r: (-r["metrics"]["val_acc"], r["epochs"]),
    )
    return {"root": root, "ranked": ranked}


def records(root):
    client = MlflowClient(f"sqlite:///{root / 'mlflow.db'}")
    experiment_id = client.get_experiment_by_name(NAME).experiment_id
    runs = client.search_runs([experiment_id], max_results=1000)
    (parent,) = [r for r in runs if r.data.tags.get("study.role") == "parent"]
    return client, runs, parent


def children(runs, parent_id):
    return [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent_id]


def count(db, sql: str, *args) -> int:
    try:
        with sqlite3.connect(f"file:{db}?mode=ro", uri=True, timeout=1) as conn:
            return conn.execute(sql, args).fetchone()[0]
    except sqlite3.Error:
        return 0


CHILDREN = (
    "select count(*) from runs join tags on runs.run_uuid = tags.run_uuid "
    "where tags.key = 'mlflow.parentRunId' and runs.lifecycle_stage = 'active' "
    "and runs.status = ? and tags.value in "
    "(select run_uuid from tags where key = 'ablation.trial' and value = ?)"
)


def test_ablate_killed_mid_way_then_again_trains_each_variant_and_seed_once_under_one_run(study):
    """The driver SIGKILLed while runs are under way; `study ablate` again deletes the runs it
    left RUNNING, trains those and the ones never started, keeps the finished ones, and ends
    with one run per variant and seed under one ablation run; a third call trains nothing."""
    root, best = study["root"], study["ranked"][0]
    db, trial = root / "mlflow.db", best["trial"]
    driver = subprocess.Popen(  # --trial names the best: the call without it continues it
        [sys.executable, "-m", "study", "ablate", NAME, "--trial", trial, "--seeds", str(SEEDS)],
        env={**os.environ, "STUDY_ROOT": str(root), "RAY_AUTH_MODE": "disabled"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.time() + 240
    while not (
        count(db, CHILDREN, "FINISHED", trial) >= 2 and count(db, CHILDREN, "RUNNING", trial) >= 1
    ):
        assert driver.poll() is None, "the ablation ended before the kill"
        assert time.time() < deadline, "no two runs finished with one running"
        time.sleep(0.02)
    driver.send_signal(signal.SIGKILL)
    assert driver.wait() == -signal.SIGKILL
    finished = count(db, CHILDREN, "FINISHED", trial)
    assert count(db, CHILDREN, "RUNNING", trial) >= 1  # left behind by the dead driver

    done = study_cli("ablate", NAME, "--seeds", str(SEEDS), root=root)
    assert done.returncode == 0, done.stderr[-3000:]
    out = done.stdout
    assert f"ablation of {best['run_name']}" in out and "already off in " in out
    frame = pd.read_csv(root / "studies" / NAME / "ablation.csv")
    assert frame["variant"].iloc[0] == "the config itself"
    variants = list(frame["variant"])
    total = len(variants) * SEEDS
    assert f"{finished} of {total} runs recorded already" in out
    assert {"weight_decay off", "dropout off"} <= set(variants)
    assert ("batch_norm off" in variants) != ("batch_norm on" in variants)
    assert set(frame["verdict"].dropna()) <= set(VERDICTS)
    assert (frame["seeds"] == SEEDS).all()
    # the config itself, first seed: the trial's own run again, to the last digit (CPU)
    assert f"retrains the trial: val_acc {best['metrics']['val_acc']:.4f} (the trial" in out

    client, runs, parent = records(root)
    trials = [r for r in children(runs, parent.info.run_id) if "trial" in r.data.tags]
    (ablation,) = [r for r in children(runs, parent.info.run_id) if "trial" not in r.data.tags]
    assert len(trials) == 4
    assert ablation.data.tags["study.role"] == "ablation" and ablation.info.status == "FINISHED"
    assert ablation.data.tags["ablation.trial"] == trial
    made = children(runs, ablation.info.run_id)
    keys = sorted((r.data.tags["repeat.group"], int(r.data.tags["repeat.seed"])) for r in made)
    groups = ["config" if v == "the config itself" else v for v in variants]
    assert keys == sorted((g, s) for g in groups for s in range(SEEDS))  # once each
    for run in made:
        assert run.data.tags["study.role"] == "ablation" and run.info.status == "FINISHED"
        assert run.data.tags["outcome"] == "completed"
        params = run.data.params
        assert set(HYPERPARAMETERS) <= set(params)  # like a trial's run: every hyperparameter
        assert params["seed"] == run.data.tags["repeat.seed"]
        assert params["optuna_trial"] == str(best["config"]["optuna_trial"])
        if run.data.tags["repeat.group"] == "weight_decay off":
            assert params["weight_decay"] == "0.0"
        if run.data.tags["repeat.group"] == "config":
            assert params["weight_decay"] == str(best["config"]["weight_decay"])
        steps = [m.step for m in client.get_metric_history(run.info.run_id, "val_acc")]
        assert steps == list(range(1, EPOCHS + 1))
    for run_id in (parent.info.run_id, ablation.info.run_id):
        logged = {a.path for a in client.list_artifacts(run_id)}
        assert {"ablation.csv", "ablation.png"} <= logged

    status = study_here("status", NAME, root=root)  # the trials, not the ablation's runs
    assert f"{NAME}: finished, 4 of 4 trials started" in status.stdout, status.stdout

    again = study_cli("ablate", NAME, "--seeds", str(SEEDS), root=root)  # nothing to train
    assert again.returncode == 0, again.stderr[-3000:]
    assert f"{total} of {total} runs recorded already; training 0" in again.stdout
    assert len(records(root)[1]) == len(runs)


def test_confirm_ranks_the_top_trials_over_seeds_and_the_report_shows_both(study):
    root = study["root"]
    done = study_cli("confirm", NAME, "--top", "2", "--seeds", str(SEEDS), root=root)
    assert done.returncode == 0, done.stderr[-3000:]
    frame = pd.read_csv(root / "studies" / NAME / "confirm.csv")
    assert sorted(frame["trial"]) == sorted(r["trial"] for r in study["ranked"][:2])
    assert list(frame["rank"]) == [1, 2] and frame["mean"].iloc[0] >= frame["mean"].iloc[1]
    first = frame["trial"].iloc[0]
    assert f"indistinguishable from {first} at {SEEDS} seeds" in done.stdout or (
        f"each of the others is apart from {first}" in done.stdout
    )
    client, runs, parent = records(root)
    (role,) = [r for r in runs if r.data.tags.get("study.role") == "confirm"
               and "repeat.group" not in r.data.tags]  # fmt: skip
    assert role.data.tags["mlflow.parentRunId"] == parent.info.run_id
    made = children(runs, role.info.run_id)
    keys = sorted((r.data.tags["repeat.group"], int(r.data.tags["repeat.seed"])) for r in made)
    assert keys == sorted((t, s) for t in frame["trial"] for s in range(SEEDS))
    assert {"confirm.csv", "confirm.png"} <= {
        a.path for a in client.list_artifacts(role.info.run_id)
    }

    if not (root / "studies" / NAME / "ablation.csv").exists():  # this test run alone
        assert study_cli("ablate", NAME, "--seeds", str(SEEDS), root=root).returncode == 0
    report = study_here("report", NAME, root=root)
    assert report.returncode == 0, report.stderr[-3000:]
    page = (root / "studies" / NAME / "report" / "report.html").read_text()
    assert "<h2>Ablation (study ablate)</h2>" in page
    assert "<h2>Confirmation (study confirm)</h2>" in page
    assert f"Confirmation of the top 2 over {SEEDS} seeds: {first} first by mean" in report.stdout


def test_bad_input_is_one_line_and_exit_2_before_anything_runs(study):
    root = study["root"]
    empty = root / "studies" / "empty"  # a study whose driver died before any trial
    empty.mkdir(exist_ok=True)
    spec = yaml.safe_load((root / "studies" / NAME / "spec.yaml").read_text())
    (empty / "spec.yaml").write_text(yaml.safe_dump({**spec, "name": "empty"}))
    before = files(root)
    cases = [
        (["ablate", NAME, "--seeds", "1"], "error: --seeds: 1 gives no confidence interval"),
        (["confirm", NAME, "--top", "9"], "error: --top: 9, but study 'digits-regularization' "
         "has 4 finished trials with a val_acc; use --top 4 or fewer"),
        (["ablate", NAME, "--trial", "t099"], "error: --trial: study 'digits-regularization' "
         "has no trial 't099'; its trials: t001-t004"),
        (["confirm", "empty"], "error: NAME: study 'empty' has no finished trial with a val_acc"),
        (["ablate", "nope"], "error: NAME: no study 'nope' under "),
    ]  # fmt: skip
    for command, said in cases:  # in this process: the CLI's own exit code and streams
        done = study_here(*command, root=root)
        assert done.returncode == 2, (command, done.stdout, done.stderr)
        assert done.stderr.startswith(said), (command, done.stderr)
        assert len(done.stderr.strip().splitlines()) == 1, done.stderr
        assert done.stdout == ""
    assert files(root) == before  # nothing recorded, no Ray folder, no lock
