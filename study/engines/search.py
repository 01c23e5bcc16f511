"""Optuna behind Ray Tune: each trial told as its outcome decides (early-stopped as PRUNED,
diverged and failed as FAIL), safe to resume."""

import re
import warnings
from typing import Any

import optuna
from optuna.trial import TrialState
from ray.tune.search import Searcher
from ray.tune.search.optuna import OptunaSearch

from study.core import FINISHED, Layout, Outcome, decide, finite
from study.engines import terminate
from study.engines.logs import console
from study.engines.sampler import DefineByRun, WithPrior, sampler
from study.engines.storage import Storage

ENQUEUED, RECIPE = "enqueued", "recipe"  # an enqueued trial's user attrs: its tag, its values

# The Optuna state of a trial that did not run to its end.
STATES = {
    Outcome.EARLY_STOPPED: TrialState.PRUNED,
    Outcome.DIVERGED: TrialState.FAIL,
    Outcome.FAILED: TrialState.FAIL,
}


class PrunedAwareOptunaSearch(OptunaSearch):
    """Ray's OptunaSearch, except that a trial stopped before `max_epochs` reaches Optuna as
    PRUNED with all its intermediate values, never as a COMPLETE trial with a partial score,
    and a diverged trial as FAIL. Each trial carries its outcome as the user attr `outcome`.

    It is also safe to resume: a trial Optuna already finished is never told twice, and Optuna
    trials asked before the driver died but unknown to Ray's restored state are handed to the
    next Ray trials instead of asking new ones, so the study keeps one Optuna trial per trial.

    Args:
        max_epochs: The epoch budget of a trial that runs to the end.
        num_samples: The study's number of trials, those of earlier drivers included.
        resumed: Whether earlier drivers of the study may have asked trials already (set by
            itself when Ray unpickles or restores it).
        terminate_after: With search.terminate, the trials ended before the rule judges
            whether to stop asking (the room left for improvement below the metric's noise;
            study.engines.terminate); None: the rule is off.
        **kwargs: Passed to `ray.tune.search.optuna.OptunaSearch`.
    """

    terminate_after: int | None = None  # a searcher pickled before search.terminate: off
    _judged = -1

    def __init__(
        self,
        *,
        max_epochs: int,
        num_samples: int,
        resumed: bool = False,
        terminate_after: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.max_epochs = max_epochs
        self.num_samples = num_samples
        self.terminate_after = terminate_after
        self._judged = -1  # trials ended when the rule last judged
        # Only in a resumed study can the storage hold trials Ray does not know of, or ended
        # ones it thinks are running. A resumed searcher is unpickled (with the Tuner), then
        # maybe restored from a later snapshot, or made anew when Ray saved no state.
        self._resumed = resumed

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, _resumed=True)

    def restore(self, checkpoint_path: str) -> None:
        super().restore(checkpoint_path)
        self._resumed = True

    def _finished(self, trial_id: str) -> bool:
        """Whether Optuna has the trial's end: told by us (Ray's OptunaSearch keeps those in
        `_completed_trials`) or, in a resumed study, found finished in the storage."""
        if trial_id in self._completed_trials:
            return True
        trial = self._ot_trials[trial_id]
        return (
            self._resumed and self._ot_study._storage.get_trial(trial._trial_id).state.is_finished()
        )

    def _asked(self) -> int:
        """The study's trials asked so far, by any driver (an enqueued one still waiting in
        the queue is not: the next ask runs it)."""
        trials = self._ot_study.get_trials(deepcopy=False)
        return sum(trial.state != TrialState.WAITING for trial in trials)

    def _orphan(self) -> optuna.Trial | None:
        known = {trial._trial_id for trial in self._ot_trials.values()}
        for frozen in self._ot_study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            if frozen._trial_id not in known:
                return optuna.Trial(self._ot_study, frozen._trial_id)
        return None

    def suggest(self, trial_id: str) -> dict | None:
        if self._resumed and callable(self._space) and trial_id not in self._ot_trials:
            orphan = self._orphan()
            if orphan is not None:
                self._ot_trials[trial_id] = orphan  # its params come back as they were
            elif self._asked() >= self.num_samples:
                # Trials that ended after Ray's last saved state count too: no more to ask.
                return Searcher.FINISHED
        if self.terminate_after and trial_id not in self._ot_trials and self._stopped():
            return Searcher.FINISHED
        with warnings.catch_warnings():
            # The sampler decides inside the define-by-run space: a GP's fit can take over the
            # second after which Ray warns that the space computes too much.
            warnings.filterwarnings("ignore", "Define-by-run function passed in the `space`")
            return super().suggest(trial_id)

    def _stopped(self) -> bool:
        """Whether the study's stopping rule stopped it, by this driver or an earlier one:
        judged again whenever more trials have ended; a stop is recorded on the Optuna study
        (its user attr `terminated`) and said in one console line."""
        if terminate.TERMINATED in self._ot_study.user_attrs:
            return True
        trials = self._ot_study.get_trials(deepcopy=False)
        ended = sum(trial.state.is_finished() for trial in trials)
        if ended == self._judged:
            return False
        self._judged = ended
        verdict = terminate.judge(trials, self._ot_study.direction, self.terminate_after)
        if verdict is None or not verdict.stop:
            return False
        asked = self._asked()
        line = verdict.line(asked, self.num_samples)
        said = {"after": asked, "of": self.num_samples, "line": line}
        self._ot_study.set_user_attr(terminate.TERMINATED, said)
        console().print(
            f"[yellow]{'stopped':<16}[/] {line}; the running trials finish",
            highlight=False,
            soft_wrap=True,
        )
        return True

    def _report(self, trial_id: str, result: dict) -> None:
        """Tell Optuna the metric of every epoch the result carries, by epoch."""
        trial = self._ot_trials[trial_id]
        with warnings.catch_warnings():  # a retried trial re-reports steps it had
            warnings.simplefilter("ignore")
            for metrics in result.get("history") or [result]:
                if finite(metrics[self.metric]):
                    trial.report(metrics[self.metric], int(metrics["epoch"]))

    def on_trial_result(self, trial_id: str, result: dict) -> None:
        if trial_id in self._ot_trials and not self._finished(trial_id):
            self._report(trial_id, result)

    def on_trial_complete(
        self, trial_id: str, result: dict | None = None, error: bool = False
    ) -> None:
        if trial_id not in self._ot_trials or self._finished(trial_id):
            self._completed_trials.add(trial_id)
            return
        trial = self._ot_trials[trial_id]
        if error:  # Ray gives a failed trial's end with no result
            trial.set_user_attr("outcome", Outcome.FAILED.value)
            return super().on_trial_complete(trial_id, result, error)
        if not result:
            return super().on_trial_complete(trial_id, result, error)
        # Ray hands the last result to on_trial_complete only: record its epochs too.
        self._report(trial_id, result)
        outcome = decide(result, metric=self.metric, last_epoch=self.max_epochs).outcome
        trial.set_user_attr("outcome", outcome.value)
        folds = fold_scores(result, self.metric)
        if len(folds) > 1:  # the rule's noise (search.terminate) with dataset.cv_folds
            trial.set_user_attr(terminate.FOLDS, folds)
        if outcome in FINISHED:  # told with the value of the weights it ended with
            super().on_trial_complete(trial_id, result, error)
        else:
            self._tell(trial_id, STATES[outcome])

    def _tell(self, trial_id: str, state: TrialState) -> None:
        self._ot_study.tell(self._ot_trials[trial_id], state=state)
        self._completed_trials.add(trial_id)


def fold_scores(result: dict, metric: str) -> list[float]:
    """The metric's value in each fold a cross-validated trial's `result` holds, by fold."""
    found = {
        int(m[1]): v for k, v in result.items() if (m := re.fullmatch(rf"fold(\d+)_{metric}", k))
    }
    return [found[k] for k in sorted(found)]


def build_searcher(
    spec: Any, layout: Layout, found: Any, resumed: bool = False, prior: list | None = None
) -> PrunedAwareOptunaSearch:
    """The searcher for `spec`: its space define-by-run with the trial constants (what
    preflight `found` included), seeded sampler, shown `prior` trials of earlier studies
    (search.warm_start); `resumed` when earlier drivers of the study may have asked trials
    already."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    searcher = PrunedAwareOptunaSearch(
        space=DefineByRun(spec.space, spec.trial_constants(found), spec.context(found)),
        metric=spec.metric,
        mode=spec.mode,
        sampler=WithPrior(sampler(spec), prior) if prior else sampler(spec),
        storage=Storage(layout.optuna_url),
        study_name=layout.name,
        max_epochs=spec.scheduler.max_epochs,
        num_samples=spec.search.num_samples,
        resumed=resumed,
        terminate_after=spec.search.terminate_after if spec.search.terminate else None,
    )
    enqueue(spec, layout)
    return searcher


def enqueue(spec: Any, layout: Layout) -> None:
    """Queue the study's resolved `search.enqueue` items (study.commands.recipes) in its
    Optuna study, in order, each once: an item a driver queued before it died is not queued
    again. Each carries its tag (`1: recipe.yaml`) and the hyperparameters it names outside
    the space (`recipe`), which DefineByRun puts in its config."""
    if not spec.search.enqueue:
        return
    study = optuna.load_study(study_name=layout.name, storage=Storage(layout.optuna_url))
    queued = {t.user_attrs.get(ENQUEUED) for t in study.get_trials(deepcopy=False)}
    space = spec.space.params
    for number, item in enumerate(spec.search.enqueue, start=1):
        values = {k: v for k, v in item.items() if k != "label"}
        tag = f"{number}: {item['label']}"
        if tag in queued:
            continue
        sampled = {k: v for k, v in values.items() if k in space}
        recipe = {k: v for k, v in values.items() if k not in space}
        study.enqueue_trial(sampled, user_attrs={ENQUEUED: tag, RECIPE: recipe})
