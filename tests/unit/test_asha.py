"""The resumable ASHA scheduler in memory: real Tune trial objects (stubs), fake results."""

import math

import optuna
import pytest
from optuna.trial import TrialState
from ray.tune.experiment import Trial
from ray.tune.schedulers import TrialScheduler

from study.engines.schedule import ResumableASHA, build_scheduler
from study.spec import StudySpec

CONTINUE, STOP = TrialScheduler.CONTINUE, TrialScheduler.STOP
MAX_EPOCHS = 9  # rungs at epochs 1 and 3 (and 9, the end), with grace 1 and factor 3
STUDY = "unit-asha"


@pytest.fixture
def make_scheduler(optuna_url):
    """A factory of schedulers as `build_scheduler` makes them, the metric set as Tune sets it."""

    def make(
        metric="val_acc",
        mode="max",
        max_epochs=MAX_EPOCHS,
        grace_period=1,
        factor=3,
        brackets=1,
        seed=0,
    ):
        scheduler = ResumableASHA(
            storage_url=optuna_url,
            study_name=STUDY,
            seed=seed,
            time_attr="epoch",
            max_t=max_epochs,
            grace_period=grace_period,
            reduction_factor=factor,
            brackets=brackets,
        )
        scheduler.set_search_properties(metric, mode)
        return scheduler

    return make


@pytest.fixture
def earlier_trials(optuna_url):
    """Writes trials of an earlier driver into the Optuna storage: one curve (epoch -> value)
    per trial, each told PRUNED as the searcher tells a trial ASHA cut."""

    def write(curves: list[dict[int, float]]) -> None:
        study = optuna.create_study(storage=optuna_url, study_name=STUDY, load_if_exists=True)
        for curve in curves:
            trial = study.ask()
            for epoch, value in curve.items():
                trial.report(value, epoch)
            study.tell(trial, state=TrialState.PRUNED)

    return write


def ray_trial(trial_id: str, optuna_trial: int) -> Trial:
    """A Tune trial as the controller hands it to a scheduler (a stub: no trainable, no Ray)."""
    return Trial("unit", config={"optuna_trial": optuna_trial}, trial_id=trial_id, stub=True)


def rungs(scheduler: ResumableASHA) -> dict[float, dict[str, float]]:
    """Milestone -> the values recorded there (ASHA's one bracket)."""
    return {milestone: dict(recorded) for milestone, recorded in scheduler._brackets[0]._rungs}


def judge(scheduler: ResumableASHA, trial: Trial, epoch: int, value: float, metric="val_acc"):
    """The scheduler's decision on one result of `trial`."""
    return scheduler.on_trial_result(None, trial, {"epoch": epoch, metric: value})


def drive(scheduler: ResumableASHA, trial: Trial, curve: dict[int, float]) -> dict[int, float]:
    """Run `trial` through `curve` until the scheduler stops it; the epochs it reported."""
    scheduler.on_trial_add(None, trial)
    reported = {}
    for epoch, value in curve.items():
        reported[epoch] = value
        if judge(scheduler, trial, epoch, value) == STOP:
            break
    scheduler.on_trial_complete(None, trial, {"epoch": epoch, "val_acc": value})
    return reported


def test_a_weak_trial_is_stopped_at_its_rung_and_a_good_one_continues(make_scheduler):
    """At the first rung, a value below the rung's cutoff stops; above it continues."""
    scheduler = make_scheduler()
    first, weak, good = (ray_trial(name, n) for n, name in enumerate(["first", "weak", "good"]))
    for trial in (first, weak, good):
        scheduler.on_trial_add(None, trial)
    assert judge(scheduler, first, 1, 0.9) == CONTINUE  # alone in the rung: no cutoff yet
    assert judge(scheduler, weak, 1, 0.5) == STOP
    assert judge(scheduler, good, 1, 0.95) == CONTINUE


def test_in_min_mode_the_lower_value_continues(make_scheduler):
    """With mode min (a loss), a higher value is the weak one."""
    scheduler = make_scheduler(metric="val_loss", mode="min")
    first, weak, good = (ray_trial(name, n) for n, name in enumerate(["first", "weak", "good"]))
    for trial in (first, weak, good):
        scheduler.on_trial_add(None, trial)
    assert judge(scheduler, first, 1, 1.0, "val_loss") == CONTINUE
    assert judge(scheduler, weak, 1, 2.0, "val_loss") == STOP
    assert judge(scheduler, good, 1, 0.5, "val_loss") == CONTINUE


def test_record_puts_each_value_into_every_rung_it_reached(make_scheduler):
    """A rung gets the value of the first epoch at or after its milestone; later rungs none."""
    scheduler = make_scheduler()
    scheduler.record("t001", {2: 0.6, 4: 0.8})
    assert rungs(scheduler) == {9: {}, 3: {"t001": 0.8}, 1: {"t001": 0.6}}


def test_record_keeps_a_value_already_in_a_rung(make_scheduler):
    """Recording a key twice leaves the first value."""
    scheduler = make_scheduler()
    scheduler.record("t001", {1: 0.5})
    scheduler.record("t001", {1: 0.9})
    assert rungs(scheduler)[1] == {"t001": 0.5}


def test_record_in_min_mode_stores_the_value_as_asha_does(make_scheduler):
    """In min mode ASHA keeps values negated; a recorded value is negated too."""
    scheduler = make_scheduler(metric="val_loss", mode="min")
    scheduler.record("t001", {1: 0.5})
    assert rungs(scheduler)[1] == {"t001": -0.5}


def test_a_new_study_starts_with_empty_rungs(make_scheduler):
    """With no Optuna study of that name yet, the replay records nothing."""
    scheduler = make_scheduler()
    scheduler.on_trial_add(None, ray_trial("t1", 0))
    assert scheduler.replayed
    assert all(not recorded for recorded in rungs(scheduler).values())


CURVES = [  # epoch -> val_acc of the trials an earlier driver ran
    {1: 0.90, 2: 0.91, 3: 0.93, 4: 0.94},
    {1: 0.80, 2: 0.84, 3: 0.86, 4: 0.87},
    {1: 0.85, 2: 0.88, 3: 0.95, 4: 0.96},
    {1: 0.70, 2: 0.75, 3: 0.78, 4: 0.80},
]


def test_a_resumed_study_cuts_the_trial_a_fresh_one_would(make_scheduler, earlier_trials):
    """The rungs replayed from the Optuna storage give the cutoffs the first driver had."""
    new = ray_trial("new", len(CURVES))
    unaware = make_scheduler()  # made before the storage held any trial: nothing to replay
    unaware.on_trial_add(None, new)
    live = make_scheduler()
    reported = [drive(live, ray_trial(f"live-{n}", n), curve) for n, curve in enumerate(CURVES)]
    earlier_trials(reported)  # what the searcher told Optuna of those trials
    resumed = make_scheduler()
    for scheduler in (live, resumed):
        scheduler.on_trial_add(None, new)
    assert [sorted(r.values()) for r in rungs(resumed).values()] == [
        sorted(r.values()) for r in rungs(live).values()
    ]
    assert judge(live, new, 1, 0.82) == STOP
    assert judge(resumed, new, 1, 0.82) == STOP
    assert judge(unaware, new, 1, 0.82) == CONTINUE


def test_a_resumed_trial_owns_its_earlier_records(make_scheduler, earlier_trials):
    """A resumed trial's replayed records move to its Tune id, so it is not judged again."""
    earlier_trials([{1: 0.3}, {1: 0.9}, {1: 0.8}])
    scheduler = make_scheduler()
    resumed = ray_trial("resumed", 0)
    scheduler.on_trial_add(None, resumed)
    recorded = rungs(scheduler)[1]
    assert recorded["resumed"] == 0.3
    assert sorted(recorded.values()) == [0.3, 0.8, 0.9]  # its earlier record moved, not copied
    assert judge(scheduler, resumed, 1, 0.3) == CONTINUE  # judged at epoch 1 before the resume


@pytest.mark.parametrize("value", [math.nan, math.inf, -math.inf])
def test_a_non_finite_value_is_never_recorded_in_a_rung(make_scheduler, value):
    """A trial ending on NaN or an infinity leaves the rungs as they were; a finite one not."""
    scheduler = make_scheduler()
    diverged, fine = ray_trial("diverged", 0), ray_trial("fine", 1)
    scheduler.on_trial_add(None, diverged)
    scheduler.on_trial_add(None, fine)
    scheduler.on_trial_complete(None, diverged, {"epoch": 1, "val_acc": value})
    assert all(not recorded for recorded in rungs(scheduler).values())
    scheduler.on_trial_complete(None, fine, {"epoch": 1, "val_acc": 0.5})
    assert rungs(scheduler)[1] == {"fine": 0.5}


@pytest.fixture
def spec_with():
    """A factory of study specs with the given scheduler section."""

    def make(**scheduler) -> StudySpec:
        return StudySpec.model_validate({"scheduler": scheduler})

    return make


@pytest.mark.parametrize(
    "grace_period, max_epochs, factor, epochs",
    [(3, 27, 3, [3, 9]), (1, 9, 2, [1, 2, 4, 8]), (1, 5, 1.5, [1, 2, 3, 4]), (2, 2, 3, [])],
)
def test_rung_epochs_are_the_epochs_asha_judges_at(
    spec_with, make_scheduler, grace_period, max_epochs, factor, epochs
):
    """The rung epochs are ASHA's own milestones below max_epochs, rounded up to an epoch."""
    spec = spec_with(grace_period=grace_period, max_epochs=max_epochs, reduction_factor=factor)
    assert spec.scheduler.rung_epochs() == epochs
    scheduler = make_scheduler(max_epochs=max_epochs, grace_period=grace_period, factor=factor)
    milestones = sorted(milestone for milestone in rungs(scheduler) if milestone < max_epochs)
    assert [math.ceil(milestone) for milestone in milestones] == epochs


def test_rung_epochs_are_none_without_early_stopping(spec_with):
    """With `scheduler.name: none` no epoch is a rung."""
    assert spec_with(name="none").scheduler.rung_epochs() == []


# -- several brackets ----------------------------------------------------------------------------


def bracket_rungs(scheduler: ResumableASHA) -> list[dict[float, dict[str, float]]]:
    """Per bracket: milestone -> the values recorded there."""
    return [{m: dict(r) for m, r in bracket._rungs} for bracket in scheduler._brackets]


def test_brackets_start_judging_one_rung_later_each(make_scheduler):
    """Bracket s's first rung is the s-th; the last bracket has none and stops no trial."""
    scheduler = make_scheduler(brackets=3)  # max 9, grace 1: rungs 1 and 3 (9 is the end)
    assert [sorted(rungs) for rungs in bracket_rungs(scheduler)] == [[1, 3, 9], [3, 9], [9]]


def test_a_trials_bracket_depends_on_the_seed_and_its_number_alone(make_scheduler):
    """The same number draws the same bracket in every scheduler of the study's seed (and a
    resume knows each earlier trial's); across numbers every bracket is drawn, the first most
    (Ray's odds: e^0, e^-1, e^-2)."""
    first, again = make_scheduler(brackets=3), make_scheduler(brackets=3)
    drawn = [first.bracket_of(n) for n in range(300)]
    assert drawn == [again.bracket_of(n) for n in range(300)]
    assert drawn != [make_scheduler(brackets=3, seed=1).bracket_of(n) for n in range(300)]
    counts = [drawn.count(b) for b in range(3)]
    assert counts[0] > counts[1] > counts[2] > 0
    assert abs(counts[0] / 300 - 0.665) < 0.08
    trial = ray_trial("t", 7)
    first.on_trial_add(None, trial)
    assert first._trial_info["t"] is first._brackets[first.bracket_of(8)]  # trial t008


def test_a_trial_in_a_later_bracket_is_not_cut_at_the_first_rung(make_scheduler):
    """Only the trials of bracket 0 are judged at epoch 1."""
    scheduler = make_scheduler(brackets=2)
    late = next(n for n in range(50) if scheduler.bracket_of(n + 1) == 1)  # number: n + 1
    early = [n for n in range(50) if scheduler.bracket_of(n + 1) == 0][:2]
    strong, weak_early, weak_late = (
        ray_trial("strong", early[0]), ray_trial("weak-early", early[1]), ray_trial("weak", late)
    )  # fmt: skip
    for trial in (strong, weak_early, weak_late):
        scheduler.on_trial_add(None, trial)
    assert judge(scheduler, strong, 1, 0.9) == CONTINUE
    assert judge(scheduler, weak_early, 1, 0.5) == STOP
    assert judge(scheduler, weak_late, 1, 0.5) == CONTINUE  # its first rung is epoch 3


def test_a_resumed_study_replays_each_trial_into_its_own_bracket(make_scheduler, earlier_trials):
    """With several brackets the replay puts an earlier trial's values only in its bracket,
    so the resumed rungs are those the first driver had."""
    live = make_scheduler(brackets=2)
    reported = [drive(live, ray_trial(f"live-{n}", n), c) for n, c in enumerate(CURVES * 3)]
    earlier_trials(reported)
    resumed = make_scheduler(brackets=2)
    new = ray_trial("new", len(reported))
    resumed.on_trial_add(None, new)

    def values(scheduler):
        return [{m: sorted(r.values()) for m, r in b.items()} for b in bracket_rungs(scheduler)]

    assert values(resumed) == values(live)
    assert {len(b[3]) for b in values(live)} != {0}  # both brackets hold trials at epoch 3


def test_brackets_past_the_last_rung_are_refused(spec_with):
    """A fifth bracket over rungs 1, 3, 9, 27 (52 epochs) would judge nothing a fourth does not."""
    assert spec_with(max_epochs=52, grace_period=1, brackets=5).scheduler.brackets == 5
    with pytest.raises(ValueError, match="brackets: 6, but 4 rungs make at most 5 brackets"):
        spec_with(max_epochs=52, grace_period=1, brackets=6)


def test_the_spec_gives_the_scheduler_its_brackets_and_seed(tmp_path):
    """scheduler.brackets reaches ResumableASHA; search.seed draws the brackets."""
    spec = StudySpec.model_validate({"scheduler": {"brackets": 2}, "search": {"seed": 7}})
    scheduler = build_scheduler(spec, spec.layout(tmp_path))
    assert len(scheduler._brackets) == 2 and scheduler.seed == 7
    default = build_scheduler(StudySpec(), StudySpec().layout(tmp_path))
    assert len(default._brackets) == 1
