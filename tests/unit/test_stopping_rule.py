"""search.terminate in memory: the noise estimates on made-up curves and folds, the stopping rule
on made-up studies (it stops on a flat landscape with noisy curves, not on one with room left),
and the searcher that stops asking, records why, and stays stopped when resumed."""

import math
import random

import optuna
import pytest
from optuna.distributions import FloatDistribution
from optuna.study import StudyDirection
from optuna.terminator import CrossValidationErrorEvaluator
from optuna.trial import TrialState, create_trial
from ray.tune.search import Searcher

from study.commands.report import how_searched
from study.core import Stage, StudyState, standing
from study.engines import terminate
from study.engines.search import PrunedAwareOptunaSearch, fold_scores
from study.engines.storage import Storage

LR = FloatDistribution(1e-4, 1e-1, log=True)
MAX = StudyDirection.MAXIMIZE


def curve(top: float, noise: float, epochs: int = 12, seed: int = 0) -> dict[int, float]:
    """A learning curve that rises to `top` and then wobbles by `noise` (white, seeded)."""
    rng = random.Random(seed)
    return {e: top * (1 - math.exp(-e / 2)) + rng.gauss(0, noise) for e in range(1, epochs + 1)}


def trial(lr: float, values: dict[int, float], state=TrialState.COMPLETE, **attrs):
    last = values[max(values)]
    return create_trial(state=state, value=last if state == TrialState.COMPLETE else None,
                        params={"lr": lr}, distributions={"lr": LR},
                        intermediate_values=values, user_attrs=attrs)  # fmt: skip


def test_the_jitter_of_a_curve_is_its_white_noise_and_ignores_a_straight_trend():
    rng = random.Random(1)
    noisy = [0.5 + 0.01 * e + rng.gauss(0, 0.02) for e in range(2000)]
    assert terminate.jitter(noisy, tail=2000) == pytest.approx(0.02, rel=0.1)
    assert terminate.jitter([0.1 * e for e in range(20)]) == pytest.approx(0.0, abs=1e-12)
    assert terminate.jitter([0.5, 0.6, 0.7]) is None  # too short to tell


@pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")
def test_the_folds_error_is_optunas_cross_validation_error():
    scores = [0.91, 0.95, 0.93, 0.88, 0.97]
    made = create_trial(value=0.93, params={"lr": 0.01}, distributions={"lr": LR},
                        system_attrs={"terminator:cv_scores": scores})  # fmt: skip
    optunas = CrossValidationErrorEvaluator().evaluate([made], MAX)
    assert terminate.folds_error(scores) == pytest.approx(optunas)
    result = {"val_acc": 0.93, **{f"fold{i}_val_acc": s for i, s in enumerate(scores, 1)},
              "fold1_val_loss": 0.3, "val_acc_std": 0.03}  # fmt: skip
    assert fold_scores(result, "val_acc") == scores


def flat_study(count: int, noise: float) -> list:
    """`count` trials whose lr changes nothing: every curve tops out at 0.9, plus noise."""
    lrs = [10 ** random.Random(n).uniform(-4, -1) for n in range(count)]
    return [trial(lr, curve(0.9, noise, seed=n)) for n, lr in enumerate(lrs)]


def test_the_rule_stops_where_no_config_is_better_beyond_the_noise():
    verdict = terminate.judge(flat_study(12, noise=0.01), MAX, min_trials=10)
    assert verdict is not None and verdict.stop, verdict
    assert verdict.trials == 12 and verdict.how.startswith("its jitter from epoch to epoch")
    line = verdict.line(13, 40)
    assert line.startswith("no gain expected after 13 of 40 trials: the room left")


def test_the_rule_goes_on_where_the_best_lr_is_far_better_than_the_noise():
    # val_acc rises steeply with lr up to the edge: a better config is likely beyond the best
    lrs = [10 ** (-4 + 2.5 * n / 11) for n in range(12)]
    trials = [trial(lr, curve(0.3 + 0.2 * math.log10(lr / 1e-4), 0.001, seed=n))
              for n, lr in enumerate(lrs)]  # fmt: skip
    verdict = terminate.judge(trials, MAX, min_trials=10)
    assert verdict is not None and not verdict.stop, verdict


def test_the_rule_waits_for_enough_ended_trials_and_counts_early_stopped_ones():
    trials = flat_study(9, noise=0.01)
    assert terminate.judge(trials, MAX, min_trials=10) is None
    running = create_trial(state=TrialState.RUNNING, params={"lr": 0.01}, distributions={"lr": LR})
    assert terminate.judge([*trials, running], MAX, min_trials=10) is None
    pruned = trial(0.02, {1: 0.4, 2: 0.5, 3: 0.6}, TrialState.PRUNED)  # seen at 0.6
    assert terminate.judge([*trials, pruned], MAX, min_trials=10).trials == 10


def test_with_folds_the_noise_is_the_best_trials_folds_spread():
    trials = flat_study(11, noise=0.0)
    best = max(trials, key=lambda t: t.value)
    folds = [0.80, 0.85, 0.90, 0.95, 1.0]
    trials[trials.index(best)] = trial(best.params["lr"], best.intermediate_values, folds=folds)
    verdict = terminate.judge(trials, MAX, min_trials=10)
    assert verdict.noise == pytest.approx(terminate.folds_error(folds))
    assert verdict.how == "the spread of the best trial's 5 folds"


def searcher_on(url: str, resumed: bool = False, after: int | None = 3):
    def space(trial: optuna.Trial) -> dict:
        trial.suggest_float("lr", 1e-4, 1e-1, log=True)
        return {"optuna_trial": trial.number}

    return PrunedAwareOptunaSearch(
        space=space, metric="val_acc", mode="max", sampler=optuna.samplers.RandomSampler(seed=0),
        storage=Storage(url), study_name="flat", max_epochs=6, num_samples=10, resumed=resumed,
        terminate_after=after,
    )  # fmt: skip


def flat_trial(searcher, trial_id: str, seed: int) -> None:
    """A trial whose curve wobbles around 0.9 whatever its lr, ended at max_epochs."""
    values = curve(0.9, 0.01, epochs=6, seed=seed)
    for epoch in range(1, 6):
        searcher.on_trial_result(trial_id, {"epoch": epoch, "val_acc": values[epoch]})
    searcher.on_trial_complete(trial_id, {"epoch": 6, "val_acc": values[6]})


def test_the_searcher_stops_asking_says_why_and_stays_stopped_resumed(optuna_url, capsys):
    searcher = searcher_on(optuna_url)
    for number in range(3):
        assert searcher.suggest(f"t{number}")["optuna_trial"] == number
    searcher.suggest("running")  # a fourth trial runs while the first three end
    for number in range(3):
        flat_trial(searcher, f"t{number}", number)
    assert searcher.suggest("t5") == Searcher.FINISHED
    assert searcher.suggest("t6") == Searcher.FINISHED
    said = capsys.readouterr().out
    assert said.count("no gain expected after 4 of 10 trials") == 1, said
    study = optuna.load_study(study_name="flat", storage=optuna_url)
    stop = study.user_attrs[terminate.TERMINATED]
    assert (stop["after"], stop["of"]) == (4, 10) and stop["line"] in said.replace("\n", " ")
    assert len(study.trials) == 4  # nothing asked after the stop

    # a resumed driver gets the running trial back, then asks nothing new
    resumed = searcher_on(optuna_url, resumed=True)
    assert resumed.suggest("again")["optuna_trial"] == 3
    assert resumed.suggest("new") == Searcher.FINISHED
    assert len(optuna.load_study(study_name="flat", storage=optuna_url).trials) == 4


def test_without_the_rule_the_searcher_asks_on(optuna_url):
    searcher = searcher_on(optuna_url, after=None)
    for number in range(4):
        searcher.suggest(f"t{number}")
        flat_trial(searcher, f"t{number}", number)
    assert searcher.suggest("t5")["optuna_trial"] == 4


def test_a_stopped_study_stands_stopped_and_resume_has_nothing_to_do():
    state = StudyState(Stage.FINISHED, wanted=40, started=22, outcomes={"completed": 22},
                       terminated="no gain expected after 22 of 40 trials")  # fmt: skip
    where = standing("s", state, driven=False)
    assert (where.word, where.resume) == ("stopped", "nothing")
    assert where.line == "s: stopped: no gain expected after 22 of 40 trials"
    assert StudyState.from_json(state.as_json()) == state


def test_the_report_says_the_stop_and_the_warm_start_from_the_parents_tags():
    tags = {"terminated": "no gain expected after 22 of 40 trials: the room left ...",
            "warm_start_trials": "30"}  # fmt: skip
    assert how_searched(tags, ["earlier", "older"]) == [
        "The sampler also learned from 30 trials of earlier, older (search.warm_start): not "
        "rerun, not in this report's trials.",
        "Stopped by search.terminate: no gain expected after 22 of 40 trials: the room left ....",
    ]
    assert how_searched({"warm_start_trials": "0"}, []) == []
