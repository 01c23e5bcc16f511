"""Warm starts (`search.warm_start`): the trials of earlier studies in the same Optuna storage,
shown to a new study's sampler before its first proposal. They are not rerun, not counted in
`num_samples` and get no MLflow run: they never enter the new study's own Optuna study, only
the copy of it its sampler sees (study.engines.sampler.WithPrior). A trial is kept when every
parameter it has is one of the new space's, of the same kind, with its value in range; it is
re-made with the new space's distributions."""

from dataclasses import dataclass, field
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from study.core import Layout
from study.engines.storage import reader

KINDS = {"FloatParam": "float", "IntParam": "int", "CategoricalParam": "categorical"}
OPTUNA_KINDS = {
    "FloatDistribution": "float",
    "IntDistribution": "int",
    "CategoricalDistribution": "categorical",
}


@dataclass
class Prior:
    """The trials kept from earlier studies, and why the others were left out (reason ->
    count)."""

    trials: list[FrozenTrial] = field(default_factory=list)
    left_out: dict[str, int] = field(default_factory=dict)
    shared: set[str] = field(default_factory=set)  # the new space's parameters they hold

    def line(self, names: list[str]) -> str:
        """One console line: how many came in, from which studies, how many left out, why."""
        kept = f"warm start: {len(self.trials)} trials of {', '.join(names)}"
        if not self.left_out:
            return kept
        why = ", ".join(f"{n} {reason}" for reason, n in sorted(self.left_out.items()))
        return f"{kept} ({sum(self.left_out.values())} left out: {why})"


def problem(trial: FrozenTrial, space: Any) -> str | None:
    """Why an earlier trial cannot be shown to a sampler of `space` (None when it can)."""
    if trial.state == TrialState.PRUNED and not trial.intermediate_values:
        return "ended without a value"
    if trial.state not in (TrialState.COMPLETE, TrialState.PRUNED) or (
        trial.state == TrialState.COMPLETE and trial.value is None
    ):
        return "unfinished or failed"
    for name, value in trial.params.items():
        param = space.params.get(name)
        if param is None:
            return f"with {name}, not in this space"
        if KINDS[type(param).__name__] != OPTUNA_KINDS[type(trial.distributions[name]).__name__]:
            return f"with {name} of another type"
        if not param.holds(value):
            return f"with {name} outside this space's range"
    return None


def remade(trial: FrozenTrial, space: Any) -> FrozenTrial:
    """`trial` with the new space's distributions (its state, value and curve kept)."""
    return optuna.trial.create_trial(
        state=trial.state,
        value=trial.value,
        params=trial.params,
        distributions={name: space.params[name].distribution() for name in trial.params},
        intermediate_values=trial.intermediate_values,
    )


def keep(trials: list[FrozenTrial], space: Any) -> Prior:
    """The trials a sampler of `space` can be shown, and why the others are left out."""
    prior = Prior()
    for trial in trials:
        why = problem(trial, space)
        if why:
            prior.left_out[why] = prior.left_out.get(why, 0) + 1
        else:
            prior.trials.append(remade(trial, space))
            prior.shared |= set(trial.params)
    return prior


def earlier_trials(layout: Layout, names: list[str]) -> dict[str, list[FrozenTrial] | None]:
    """Each named study's trials in the study's Optuna storage, None for one it lacks."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    storage = reader(layout)  # None where the storage was never made: none of them is there
    found: dict[str, list[FrozenTrial] | None] = dict.fromkeys(names)
    if storage is None:
        return found
    try:
        for name in names:
            try:
                found[name] = optuna.load_study(study_name=name, storage=storage).trials
            except KeyError:
                found[name] = None
    finally:
        storage.engine.dispose()
    return found


def prior(layout: Layout, names: list[str], space: Any) -> Prior:
    """The trials of the studies `names` a sampler of `space` can be shown."""
    if not names:
        return Prior()
    trials = [t for found in earlier_trials(layout, names).values() for t in found or []]
    return keep(trials, space)
