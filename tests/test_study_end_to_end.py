"""One small study run through the CLI against a real MLflow server, then checked from the
outside: MLflow runs, Optuna storage, exported config, retraining without Ray."""

import json
import re

import optuna
import pytest
import yaml
from mlflow.tracking import MlflowClient

import trainables
from tests.conftest import study_cli, study_here

# One worker runs every test of the finished_study fixture, which is made once (pytest-xdist).
pytestmark = pytest.mark.xdist_group("finished_study")

NAME = "digits-regularization"
HYPERPARAMETERS = {"lr", "weight_decay", "dropout", "batch_norm"}
DEFAULTS = trainables.HYPERPARAMETERS  # every hyperparameter and its default


@pytest.fixture(scope="module")
def runs(finished_study):
    client = MlflowClient(finished_study["uri"])
    experiment = client.get_experiment_by_name(NAME)
    found = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in found if r.data.tags.get("study.role") == "parent"]
    children = [r for r in found if "mlflow.parentRunId" in r.data.tags]
    return client, experiment, parents, children


def test_experiment_opens_in_model_training_view(runs):
    _, experiment, _, _ = runs
    assert experiment.tags["mlflow.experimentKind"] == "custom_model_development"


def test_one_parent_run_with_one_child_per_trial(runs, finished_study):
    _, _, parents, children = runs
    assert len(parents) == 1
    assert len(children) == finished_study["num_samples"]
    parent_id = parents[0].info.run_id
    assert all(c.data.tags["mlflow.parentRunId"] == parent_id for c in children)
    assert len({c.data.tags["ray.trial_id"] for c in children}) == len(children)
    assert parents[0].info.status == "FINISHED"


def test_children_have_params_named_runs_and_full_histories(runs):
    client, _, _, children = runs
    for child in children:
        assert set(child.data.params) >= HYPERPARAMETERS | set(DEFAULTS)  # defaults too
        assert child.data.params["l1"] == str(DEFAULTS["l1"])  # not sampled: its default
        assert re.fullmatch(r"t\d{3} lr=\S+ wd=\S+ p=\S+ (bn|no-bn)", child.info.run_name)
        history = client.get_metric_history(child.info.run_id, "val_acc")
        steps = sorted(m.step for m in history)
        outcome = child.data.tags["outcome"]
        if outcome == "completed":
            assert steps == list(range(1, 10))
            assert child.info.status == "FINISHED"
        else:
            assert outcome == "early_stopped"
            stopped = int(child.data.tags["early_stopped_epoch"])
            assert steps == list(range(1, stopped + 1)) and stopped < 9
            assert child.info.status == "FINISHED"  # ASHA meant it: not a red run
        for metric in ("train_loss", "train_acc", "val_loss", "gap", "lr", "epoch_time"):
            assert len(client.get_metric_history(child.info.run_id, metric)) == len(steps)


def test_asha_stopped_some_trials(runs):
    outcomes = [c.data.tags["outcome"] for c in runs[3]]
    assert "early_stopped" in outcomes and "completed" in outcomes


def test_optuna_holds_early_stopped_trials_as_pruned(runs, finished_study):
    client, _, _, children = runs
    storage = f"sqlite:///{finished_study['root'] / 'optuna.db'}"
    trials = optuna.load_study(study_name=NAME, storage=storage).trials
    assert len(trials) == finished_study["num_samples"]
    # by Optuna's trial number (the GP may propose one lr twice, at a bound of its range)
    by_number = {json.loads(c.data.tags["config"])["optuna_trial"]: c for c in children}
    for trial in trials:
        child = by_number[trial.number]
        history = client.get_metric_history(child.info.run_id, "val_acc")
        last = max(history, key=lambda m: m.step)
        assert sorted(trial.intermediate_values) == sorted(m.step for m in history)
        if child.data.tags["outcome"] == "early_stopped":
            assert trial.state == optuna.trial.TrialState.PRUNED
        else:
            assert trial.state == optuna.trial.TrialState.COMPLETE
            assert trial.value == pytest.approx(last.value)


def test_parent_holds_best_trial_and_results(runs):
    client, _, parents, children = runs
    parent = parents[0]
    best = max(
        children,
        key=lambda c: (
            max(client.get_metric_history(c.info.run_id, "val_acc"), key=lambda m: m.step).value
        ),
    )
    best_value = max(client.get_metric_history(best.info.run_id, "val_acc"), key=lambda m: m.step)
    assert parent.data.metrics["best_val_acc"] == pytest.approx(best_value.value)
    # the parent's row reads as the study's result: its best value under the metric's own
    # name, the best trial's hyperparameters as its params, beside the trials' columns
    assert parent.data.metrics["val_acc"] == pytest.approx(best_value.value)
    (chosen,) = [c for c in children if c.info.run_id == parent.data.tags["best_run_id"]]
    assert chosen.data.metrics["val_acc"] == pytest.approx(best_value.value)  # a tie: either
    best_config = json.loads(chosen.data.tags["config"])
    for knob in ("lr", "weight_decay", "dropout", "batch_norm"):
        assert parent.data.params[knob] == str(best_config[knob])
    artifacts = {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert {"spec.yaml", "results.csv", "best_config.yaml"} <= artifacts


def test_progress_prints_one_line_per_trial_and_the_best(finished_study):
    out = finished_study["stdout"]
    assert len(re.findall(r"^(completed|early_stopped) +t\d{3} ", out, re.M)) == 10
    assert re.search(r"^best val_acc 0\.\d{4}: t\d{3} ", out, re.M)
    assert "Trial status" not in out and "View detailed results" not in out


def test_export_then_train_reproduces_the_best_val_acc(finished_study, tmp_path):
    root = finished_study["root"]
    best_file = tmp_path / "best.yaml"
    exported = study_here("export", NAME, "-o", str(best_file), root=root)
    assert exported.returncode == 0, exported.stderr
    document = yaml.safe_load(best_file.read_text())
    config = document["config"]
    assert set(config) >= HYPERPARAMETERS
    assert {"dataset", "model", "epochs", "seed"} <= set(config)
    trained = study_cli("train", str(best_file), root=root)
    assert trained.returncode == 0, trained.stderr
    epochs = re.findall(r"^epoch +(\d+) .* val_acc (\d\.\d+)", trained.stdout, re.M)
    assert len(epochs) == config["epochs"]
    assert abs(float(epochs[-1][1]) - document["value"]) <= 0.005


def test_export_top_k_writes_ranked_bundles(finished_study, tmp_path):
    done = study_here(
        "export", NAME, "--top", "3", "-o", str(tmp_path), root=finished_study["root"]
    )
    assert done.returncode == 0, done.stderr
    files = sorted(tmp_path.glob("rank*/config.yaml"))
    values = [yaml.safe_load(p.read_text())["value"] for p in files]
    assert len(values) == 3 and values == sorted(values, reverse=True)


def test_running_the_same_study_again_is_refused_and_changes_nothing(runs, finished_study):
    client, experiment, _, _ = runs
    before = client.search_runs([experiment.experiment_id], max_results=1000)
    args = ["--set", f"tracking.uri={finished_study['uri']}", "--set", "search.num_samples=2"]
    again = study_cli("run", *args, root=finished_study["root"])
    assert again.returncode == 2
    assert "name: a study 'digits-regularization' already exists" in again.stderr
    after = client.search_runs([experiment.experiment_id], max_results=1000)
    assert sorted(r.info.run_id for r in after) == sorted(r.info.run_id for r in before)
