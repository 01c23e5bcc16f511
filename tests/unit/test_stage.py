"""A study's recorded state in memory: one function decides what it means (status's words and
what `study resume` does), a study with fewer trials than it asked for is never called
finished, the record is written whole, and Tune's saved state is told from a bare tuner."""

import json
import math
import time
from dataclasses import replace
from types import SimpleNamespace

import pytest

from study.commands import run as runner
from study.commands.preflight import check_resumable
from study.core import Stage, StudyState, stage, standing, write_whole
from study.engines import outages
from study.spec import load_spec

NAME = "s"


def state(at: Stage, started: int = 0, **outcomes: int) -> StudyState:
    return StudyState(at, 12, started=started, outcomes=outcomes)


@pytest.mark.parametrize(
    "at, how",
    [
        (Stage.CREATED, "afresh"),
        (Stage.STORES_MADE, "afresh"),
        (Stage.TRIALS_STARTED, "restore"),  # Tune ran: restore what it saved, if it saved any
        (Stage.TRIALS_ENDED, "afresh"),
    ],
)
def test_a_driver_gone_before_the_end_leaves_an_interrupted_study_to_resume(at, how):
    now = standing(NAME, state(at, 3, completed=1), driven=False, driver="pid 7 on h")
    assert now.word == "interrupted" and now.resume == how
    assert now.line == (
        "s: interrupted, 3 of 12 trials started; its driver (pid 7 on h) is gone; "
        "continue it with `study resume s`"
    )


@pytest.mark.parametrize("at", list(Stage))
def test_a_study_whose_driver_runs_is_running_whatever_its_stage(at):
    now = standing(NAME, state(at, 2), driven=True)
    assert (now.word, now.resume) == ("running", "nothing")
    assert now.line == "s: running, 2 of 12 trials started"


def test_only_a_study_with_every_trial_ended_is_finished():
    whole = standing(NAME, state(Stage.FINISHED, 12, completed=9, early_stopped=3), False)
    assert (whole.word, whole.resume) == ("finished", "nothing")
    assert whole.line == "s: finished, 12 of 12 trials started"


@pytest.mark.parametrize("at", [Stage.FINISHED, Stage.ENDED_SHORT])
def test_a_study_with_fewer_trials_than_asked_is_ended_short_never_finished(at):
    now = standing(NAME, state(at, 1, completed=1), driven=False)
    assert (now.word, now.resume) == ("ended short", "afresh")
    assert now.line == "s: ended short: 1 of 12 trials; resume it: `study resume s`"


@pytest.mark.parametrize("interrupted, word", [(False, "failed"), (True, "killed")])
def test_a_driver_stopped_by_an_error_says_the_error_and_resumes(interrupted, word):
    stopped = replace(state(Stage.TRIALS_STARTED, 4), stopped="disk full", interrupted=interrupted)
    now = standing(NAME, stopped, driven=False)
    assert (now.word, now.resume) == (word, "restore")
    assert now.line == f"s: {word}, 4 of 12 trials started; disk full; continue it with " + (
        "`study resume s`"
    )
    assert stopped.at(Stage.TRIALS_STARTED).stopped == ""  # a new step clears it


def test_the_counts_are_taken_from_the_trial_records():
    def record(name, outcome, epochs, value=None):
        metrics = {} if value is None else {"val_acc": value}
        return SimpleNamespace(name=name, outcome=outcome, epochs=epochs, metrics=metrics)

    records = [
        record("t001 a", "completed", 9, 0.9),
        record("t002 b", "early_stopped", 1, 0.95),  # scored: ranked by its value
        record("t003 c", "diverged", 2, math.nan),
        record("t004 d", "failed", 0),
        record("t005 e", "running", 3, 0.99),  # not ended: not the best yet
    ]
    counted = stage.counted(state(Stage.TRIALS_STARTED), records, "val_acc", "max")
    assert (counted.started, counted.ended, counted.running, counted.epochs) == (5, 4, 1, 15)
    assert counted.outcomes == {"completed": 1, "early_stopped": 1, "diverged": 1, "failed": 1}
    assert counted.best == ("t002 b", 0.95)
    lowest = stage.counted(state(Stage.TRIALS_STARTED), records, "val_acc", "min")
    assert lowest.best == ("t001 a", 0.9)


def test_the_record_is_read_back_as_written_and_written_whole(tmp_path):
    path = tmp_path / "stage.json"
    assert stage.load(path) is None  # no record: a study from before it was kept
    written = replace(state(Stage.TRIALS_STARTED, 3, completed=2), best=("t002 x", 0.5))
    before = time.time()
    stage.save(path, written)
    read = stage.load(path)
    assert replace(read, updated=0.0) == written and read.updated >= before
    assert json.loads(path.read_text())["stage"] == "trials started"
    assert [p.name for p in tmp_path.iterdir()] == ["stage.json"]  # nothing left aside


def test_a_stop_is_recorded_on_the_last_step_and_a_missing_record_stays_missing(tmp_path):
    path = tmp_path / "stage.json"
    stage.stopped(path, "the study stopped on OSError")  # no record: nothing is made
    assert not path.exists()
    stage.save(path, state(Stage.TRIALS_STARTED, 2))
    stage.stopped(path, "interrupted (Ctrl-C)", interrupted=True)
    read = stage.load(path)
    assert (read.stage, read.stopped, read.interrupted) == (
        Stage.TRIALS_STARTED,
        "interrupted (Ctrl-C)",
        True,
    )


def test_resume_refuses_a_finished_study_and_takes_an_unrecorded_one_as_mid_tune(tmp_path):
    spec = load_spec(None, ["search.num_samples=12"])
    layout = spec.layout(tmp_path)
    assert check_resumable(spec, layout).stage == Stage.TRIALS_STARTED  # an older study's
    layout.study_dir.mkdir(parents=True)
    stage.save(layout.stage_record, state(Stage.FINISHED, 12, completed=12))
    with pytest.raises(Exception, match="finished all its 12 trials; nothing to resume"):
        check_resumable(spec, layout)
    stage.save(layout.stage_record, state(Stage.ENDED_SHORT, 1, completed=1))
    assert check_resumable(spec, layout).stage == Stage.ENDED_SHORT


def test_tune_saved_a_state_only_when_it_wrote_an_experiment_state_beside_its_tuner(tmp_path):
    folder = tmp_path / "ray" / "s"
    assert not runner.tune_saved(str(folder))  # nothing there
    folder.mkdir(parents=True)
    (folder / "tuner.pkl").write_bytes(b"")
    assert not runner.tune_saved(str(folder))  # a driver killed before Tune's first save
    write_whole(folder / "experiment_state-2026-12-07_17-00-00.json", "{}")
    assert runner.tune_saved(str(folder))
    assert runner.tune_saved(folder.as_uri())  # shared storage is named by a URI


def test_trials_that_end_while_a_store_is_down_stop_the_study_in_one_line(tmp_path, monkeypatch):
    """The study's trials all ended while the tracking server is still down: the driver stops
    with StoreDown (its one line says how to go on), the records kept as they are; it once
    raised UnboundLocalError here."""
    monkeypatch.setattr(outages.WATCH, "since", {outages.TRACKING: (time.monotonic(), "http://t")})
    spec = load_spec(None)
    layout = spec.layout(tmp_path)
    layout.study_dir.mkdir(parents=True)
    stage.save(layout.stage_record, state(Stage.TRIALS_STARTED, 12))
    fitted = SimpleNamespace(fit=lambda: None)  # Tune's fit, returned
    with pytest.raises(outages.StoreDown) as stopped:
        runner.finish(fitted, spec, layout, records=None)
    assert stopped.value.line(NAME).startswith("tracking.uri: http://t did not answer for 0 s")
    assert "then continue with `study resume s`" in stopped.value.line(NAME)
    assert stage.load(layout.stage_record).stage == Stage.TRIALS_ENDED


def test_a_taken_name_is_refused_with_where_its_study_stands(tmp_path):
    from study.commands.preflight import check_new
    from study.core.errors import UserError

    spec = load_spec(None, ["search.num_samples=12"])
    layout = spec.layout(tmp_path)
    layout.study_dir.mkdir(parents=True)
    layout.spec_file.write_text("name: x\n")
    stage.save(layout.stage_record, state(Stage.TRIALS_STARTED, 3))
    with pytest.raises(UserError, match=r"already exists under .* \(interrupted\); continue it"):
        check_new(spec, tmp_path)
    stage.save(layout.stage_record, state(Stage.FINISHED, 12, completed=12))
    with pytest.raises(UserError, match="already exists under .* and finished; pick another"):
        check_new(spec, tmp_path)


def test_a_study_closed_with_fewer_trials_than_asked_is_recorded_ended_short(tmp_path):
    """Tune returned with one trial of twelve ended: the study is recorded `ended short` (and
    `study status` says so), never `finished`."""
    from mlflow.tracking import MlflowClient
    from ray.tune.experiment import Trial

    from study.engines.records import StudyRecords
    from study.engines.tracking import MlflowTracker

    spec = load_spec(None, ["search.num_samples=12"])
    layout = spec.layout(tmp_path)
    layout.study_dir.mkdir(parents=True)
    stage.save(layout.stage_record, state(Stage.TRIALS_ENDED))
    client = MlflowClient(layout.tracking_uri)
    experiment_id = client.create_experiment(spec.name, artifact_location=(tmp_path / "a").as_uri())
    parent_id = client.create_run(experiment_id).info.run_id
    records = StudyRecords(client, experiment_id, parent_id)
    tracker = MlflowTracker(records, ["lr"])
    run = {"dataset": {"name": "digits"}, "model": {"name": "mlp"}, "epochs": 9, "threads": 1}
    trial = Trial("trainable", config={**run, "optuna_trial": 0, "seed": 0}, stub=True)
    tracker.on_trial_start(0, [], trial)
    tracker.on_trial_complete(0, [], trial)  # ended (without a result: failed)
    runner.close(spec, layout, records, "FINISHED")
    recorded = stage.load(layout.stage_record)
    assert (recorded.stage, recorded.started, recorded.ended) == (Stage.ENDED_SHORT, 1, 1)
    assert standing(spec.name, recorded, driven=False).line.startswith(
        f"{spec.name}: ended short: 1 of 12 trials; resume it"
    )
    assert client.get_run(parent_id).info.status == "FINISHED"  # the records are closed
