"""The core: one layout, one trial config, one outcome decision."""

import math
from pathlib import Path

import pytest

from study.core import (
    RUN_KEYS,
    SCORED,
    Found,
    Layout,
    Outcome,
    TrialConfig,
    decide,
    label,
    scored,
    trial_number,
    write_whole,
)
from study.spec import load_spec
from trainables.hyperparameters import RUN_SETTINGS, own_knobs

FLAT = {
    "lr": 0.003,
    "dropout": 0.1,
    "dataset": {"name": "digits"},
    "model": {"name": "mlp", "widths": [64]},
    "epochs": 27,
    "seed": 0,
    "threads": 1,
    "optuna_trial": 6,
}


def test_layout_of_the_default_study_puts_everything_under_the_root(tmp_path):
    """Stores, Ray's folder, the study's folder, exports and a trial's checkpoint: one root."""
    layout = load_spec(None).layout(tmp_path)
    name = "digits-regularization"
    assert layout.tracking_uri == f"sqlite:///{tmp_path / 'mlflow.db'}"
    assert layout.optuna_url == f"sqlite:///{tmp_path}/optuna.db"
    assert layout.ray_experiment == tmp_path / "ray" / name
    assert layout.spec_file == tmp_path / "studies" / name / "spec.yaml"
    assert layout.driver_lock.parent == layout.study_dir == layout.results_json.parent
    assert layout.exports_dir == tmp_path / "exports" / name
    assert layout.artifacts == tmp_path / "mlartifacts" / name and layout.local_tracking
    assert layout.trial_dir("ab_00001") == tmp_path / "ray" / name / "trial_ab_00001"


def test_layout_follows_the_spec_to_servers_and_shared_storage(tmp_path):
    """tracking.uri, search.storage, cluster.storage and tracking.experiment move the stores."""
    spec = load_spec(
        None,
        [
            "tracking.uri=http://127.0.0.1:5000",
            "tracking.experiment=team",
            "search.storage=postgresql://db/optuna",
            "cluster.storage=/shared/ray",
        ],
    )
    layout = spec.layout(tmp_path)
    assert (layout.tracking_uri, layout.experiment) == ("http://127.0.0.1:5000", "team")
    assert layout.optuna_url == "postgresql://db/optuna" and not layout.local_tracking
    assert layout.ray_experiment == Path("/shared/ray") / spec.name
    assert layout.study_dir.parent == tmp_path / "studies"  # the study's own files stay here


def test_last_checkpoint_is_the_newest_kept(tmp_path):
    """Ray keeps two checkpoints; export takes the later one, by its folder's number."""
    layout = Layout(tmp_path, "s", "s", "sqlite:///x", "sqlite:///y", str(tmp_path))
    assert layout.last_checkpoint("t1") is None and layout.last_checkpoint(None) is None
    for number in ("000002", "000010"):
        folder = layout.trial_dir("t1") / f"checkpoint_{number}"
        folder.mkdir(parents=True)
        (folder / "state.pt").write_bytes(b"")
    assert layout.last_checkpoint("t1").parent.name == "checkpoint_000010"


def test_a_file_written_whole_is_the_old_one_or_the_new_one_never_half(tmp_path):
    spec = tmp_path / "spec.yaml"
    write_whole(spec, "name: old\n")
    with pytest.raises(UnicodeEncodeError):  # fails once the file is open (Path.write_text
        write_whole(spec, "name: \udc80\n")  # has emptied it by then)
    assert spec.read_text() == "name: old\n"
    write_whole(spec, "name: new\n")
    assert spec.read_text() == "name: new\n"
    assert [path.name for path in tmp_path.iterdir()] == ["spec.yaml"]


def test_trial_config_splits_hyperparameters_from_run_settings_and_back():
    """parse and flat are inverses; the number and label come from the Optuna trial."""
    config = TrialConfig.parse(FLAT)
    assert config.hyperparameters == {"lr": 0.003, "dropout": 0.1}
    assert config.run.epochs == 27 and config.run.last_epoch == 27
    assert config.flat() == FLAT
    assert (config.number, config.label, trial_number(FLAT)) == (7, "t007", 7)
    assert set(RUN_KEYS) == {"dataset", "model", "epochs", "seed", "threads", "stop_epoch",
                             "optuna_trial", "enqueued"}  # fmt: skip
    assert RUN_SETTINGS == RUN_KEYS  # trainables tells a plug-in's own knobs from them
    assert own_knobs({**FLAT, "kernel_size": 5}) == {"kernel_size": 5}


def test_stopped_at_ends_an_early_stopped_retrain_where_the_trial_ended():
    """stop_epoch only when the trial ended before its schedule."""
    config = TrialConfig.parse(FLAT)
    assert config.stopped_at(9).flat()["stop_epoch"] == 9
    assert config.stopped_at(9).run.last_epoch == 9
    assert "stop_epoch" not in config.stopped_at(27).flat()
    assert config.numbered(11).label == "t012"


def test_a_config_without_run_settings_is_refused_by_name():
    """A flat config missing a run setting raises KeyError naming it."""
    with pytest.raises(KeyError, match="epochs"):
        TrialConfig.parse({k: v for k, v in FLAT.items() if k != "epochs"})
    with pytest.raises(ValueError, match="optuna_trial"):
        _ = TrialConfig.parse({k: v for k, v in FLAT.items() if k != "optuna_trial"}).number


def test_trial_constants_are_a_flat_trial_config_with_what_preflight_found():
    """The spec's constants parse as a TrialConfig; what preflight found joins the dataset."""
    spec = load_spec(None)
    found = Found({"shape": [1, 8, 8]}, {})
    config = TrialConfig.parse(spec.trial_constants(found))
    assert config.run.dataset["shape"] == [1, 8, 8] and config.run.epochs == 27
    assert "lr" not in config.hyperparameters  # sampled, not constant
    assert spec.dataset.shape is None  # the spec itself is untouched


def test_the_spec_is_frozen():
    """A validated spec cannot be changed: records go elsewhere."""
    spec = load_spec(None)
    with pytest.raises(ValueError, match="frozen"):
        spec.dataset.shape = [1, 8, 8]


@pytest.mark.parametrize(
    ("last", "expected", "error"),
    [
        ({"epoch": 27, "val_acc": 0.9}, Outcome.COMPLETED, ""),
        ({"epoch": 3, "val_acc": 0.9}, Outcome.EARLY_STOPPED, ""),
        ({"epoch": 4, "val_acc": math.nan}, Outcome.DIVERGED, "val_acc was nan in epoch 4"),
        ({"epoch": 2, "val_acc": math.inf}, Outcome.DIVERGED, "val_acc was inf in epoch 2"),
        ({"epoch": 5, "val_acc": 0.1, "diverged": 1.0}, Outcome.DIVERGED, "blew up"),
        (None, Outcome.FAILED, "without a result"),
    ],
)
def test_decide(last, expected, error):
    """One decision from the last result: its epoch against the plan, and its metric."""
    decision = decide(last, metric="val_acc", last_epoch=27)
    assert decision.outcome == expected and error in decision.error


def test_decide_an_error_is_a_failure_whatever_the_result():
    """A trial that raised failed, with its error, even after good epochs."""
    decision = decide({"epoch": 27, "val_acc": 0.9}, metric="val_acc", last_epoch=27, error="E")
    assert (decision.outcome, decision.error) == (Outcome.FAILED, "E")


def test_decide_judges_a_stopped_retrain_by_its_own_last_epoch():
    """A run planned to stop at epoch 9 that reached it completed."""
    assert decide({"epoch": 9, "val_loss": 0.2}, metric="val_loss", last_epoch=9).outcome == (
        Outcome.COMPLETED
    )


def test_decide_tells_a_trial_its_own_patience_stopped_from_one_asha_cut():
    """Both end before max_epochs: the patience flag of the last result tells them apart,
    unless the trial diverged first."""
    stopped = {"epoch": 7, "val_loss": 0.3, "patience_stopped": 1.0}
    assert decide(stopped, metric="val_loss", last_epoch=27).outcome == Outcome.PATIENCE_STOPPED
    cut = {"epoch": 7, "val_loss": 0.3}
    assert decide(cut, metric="val_loss", last_epoch=27).outcome == Outcome.EARLY_STOPPED
    blown = {**stopped, "val_loss": math.inf}
    assert decide(blown, metric="val_loss", last_epoch=27).outcome == Outcome.DIVERGED


def test_scored_outcomes_rank_only_with_a_finite_value():
    """Completed, patience-stopped and early-stopped trials rank; failed or NaN ones never."""
    assert set(SCORED) == {Outcome.COMPLETED, Outcome.PATIENCE_STOPPED, Outcome.EARLY_STOPPED}
    assert scored("patience_stopped", 0.3)
    assert scored("completed", 0.5) and scored("early_stopped", 0.1)
    assert not scored("completed", math.nan) and not scored("failed", 0.5)
    assert not scored("diverged", 0.5) and not scored("completed", None)
    assert Outcome.EARLY_STOPPED == "early_stopped" and label(3) == "t003"
