"""The study's Optuna sampler: the one its spec names, the GP shown early-stopped trials, a grid
that ends without stopping the study, the define-by-run space and the first config preflight
builds. No storage (study.engines.storage), no Ray."""

from dataclasses import replace
from typing import Any

import optuna
from optuna.trial import FrozenTrial, TrialState

from search_spaces import Space
from study.core import TrialConfig


class GridSampler(optuna.samplers.GridSampler):
    """Optuna's grid sampler without the `study.stop()` it calls once the last grid point ends.
    Optuna allows that only inside `optimize()`, which a Tune study never runs: from `tell` it
    raised after the trial's state was stored, so the trial seemed untold and was told again
    (a study whose last trial ended pruned or diverged crashed). Tune ends the study instead:
    its `num_samples` is the grid's size."""

    def after_trial(self, study: Any, trial: Any, state: Any, values: Any) -> None:
        pass


class DefineByRun:
    """The space suggested on an Optuna trial, plus the constants every trial config holds and
    the Optuna trial's number (which names the trial everywhere, across resumes).

    A class rather than a closure because Ray pickles the searcher to checkpoint it.
    """

    def __init__(self, space: Space, constants: dict[str, Any], context: dict[str, Any]) -> None:
        self.space = space
        self.constants = TrialConfig.parse(constants)
        self.context = context

    def __call__(self, trial: optuna.Trial) -> dict[str, Any]:
        self.space.suggest(trial, self.context)  # Ray captures the suggested values itself
        config = self.constants.numbered(trial.number)
        tag = trial.user_attrs.get("enqueued")
        if tag:  # a config the study runs first: the values it names outside the space too
            recipe = trial.user_attrs.get("recipe") or {}
            hyperparameters = {**config.hyperparameters, **recipe}
            config = replace(config, hyperparameters=hyperparameters)
            config = replace(config, run=replace(config.run, enqueued=tag))
        return config.flat()


class SeesACopy(optuna.samplers.BaseSampler):
    """A sampler that hands its `inner` sampler a copy of the study in memory (`seen`) in
    place of the study itself; the study's own records are never changed."""

    def __init__(self, inner: optuna.samplers.BaseSampler) -> None:
        self.inner = inner

    def seen(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> tuple:
        """The copy of `study` the inner sampler sees, and `trial` in it."""
        raise NotImplementedError

    def infer_relative_search_space(self, study, trial):
        copy, _ = self.seen(study, trial)
        return self.inner.infer_relative_search_space(copy, trial)

    def sample_relative(self, study, trial, search_space):
        copy, here = self.seen(study, trial)
        return self.inner.sample_relative(copy, here, search_space) if here else {}

    def sample_independent(self, study, trial, param_name, param_distribution):
        return self.inner.sample_independent(study, trial, param_name, param_distribution)

    def before_trial(self, study, trial):
        self.inner.before_trial(study, trial)

    def after_trial(self, study, trial, state, values):
        self.inner.after_trial(study, trial, state, values)

    def reseed_rng(self) -> None:
        self.inner.reseed_rng()


class LearnsFromEarlyStopped(SeesACopy):
    """A sampler (Optuna's GPSampler) that learns from the trials ASHA stopped as well: it is
    shown a copy of the study in memory in which each PRUNED trial is COMPLETE at its last
    reported value, what Ray's stock OptunaSearch tells Optuna. The study's own records keep
    them PRUNED. GPSampler reads COMPLETE trials only, so without this, behind ASHA it learns
    from the few trials that reach max_epochs (benchmarks/history/lcbench.md)."""

    def seen(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> tuple:
        """The copy of `study` the inner sampler sees, and `trial` in it."""
        copy = optuna.create_study(directions=study.directions)
        here = None
        for past in study.get_trials(deepcopy=False):
            made = shown(past)
            if made is None:
                continue
            copy.add_trial(made)
            if past.number == trial.number:
                here = copy.get_trials(deepcopy=False)[-1]
        return copy, here


def shown(past: FrozenTrial) -> FrozenTrial | None:
    """`past` as LearnsFromEarlyStopped shows it: an early-stopped (PRUNED) trial COMPLETE at its
    last reported value, a complete or running one as it is (its params, value and user attrs);
    None for one that failed or ended with no value."""
    state, value = past.state, past.value
    if state == TrialState.PRUNED and past.intermediate_values:
        state, value = TrialState.COMPLETE, past.intermediate_values[max(past.intermediate_values)]
    if state not in (TrialState.COMPLETE, TrialState.RUNNING) or (
        state == TrialState.COMPLETE and value is None
    ):
        return None
    return optuna.trial.create_trial(
        state=state,
        value=value,
        params=past.params,
        distributions=past.distributions,
        user_attrs=past.user_attrs,
    )


class WithPrior(SeesACopy):
    """A sampler shown earlier studies' trials (`prior`: study.engines.warm_start) before the
    study's own, in a copy of the study in memory: it learns from them, and its random start
    counts them, while the study's own records never hold them."""

    def __init__(self, inner: optuna.samplers.BaseSampler, prior: list[Any]) -> None:
        super().__init__(inner)
        self.prior = prior

    def seen(self, study: optuna.Study, trial: optuna.trial.FrozenTrial) -> tuple:
        """The copy of `study` the inner sampler sees (the prior trials first), and `trial`
        in it."""
        copy = optuna.create_study(directions=study.directions)
        copy.add_trials(self.prior)
        here = None
        for past in study.get_trials(deepcopy=False):
            copy.add_trial(past)
            if past.number == trial.number:
                here = copy.get_trials(deepcopy=False)[-1]
        return copy, here

    def sample_independent(self, study, trial, param_name, param_distribution):
        # TPE samples each knob on its own: it must see the prior trials there too
        copy, here = self.seen(study, trial)
        return self.inner.sample_independent(copy, here or trial, param_name, param_distribution)


# The GP's random trials before it learns, unless search.startup_trials says: on LCBench 3 beat
# Optuna's 10 (benchmarks/history/lcbench.md, "GP from the 4th trial").
GP_STARTUP = 3


def startup_trials(search: Any) -> int | None:
    """The random trials before the sampler learns: `search.startup_trials`, unset GP_STARTUP
    for the GP and None (Optuna's 10) for TPE."""
    return search.startup_trials or (GP_STARTUP if search.sampler == "gp" else None)


def sampler(spec: Any) -> optuna.samplers.BaseSampler:
    """The study's Optuna sampler, seeded with `search.seed`."""
    seed = spec.search.seed
    if spec.search.sampler == "grid":
        return GridSampler(spec.grid(), seed=seed)
    if spec.search.sampler == "random":
        return optuna.samplers.RandomSampler(seed=seed)
    startup = startup_trials(spec.search)
    if spec.search.sampler == "gp":  # Gaussian-process BO, shown early-stopped trials too
        return LearnsFromEarlyStopped(
            optuna.samplers.GPSampler(seed=seed, n_startup_trials=startup)
        )
    return optuna.samplers.TPESampler(
        seed=seed, **({"n_startup_trials": startup} if startup else {})
    )


def first_config(spec: Any, found: Any = None) -> dict[str, Any]:
    """The config the study's first trial gets (its sampler asked once, in memory)."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    trial = optuna.create_study(sampler=sampler(spec)).ask()
    return {**spec.trial_constants(found), **spec.space.suggest(trial, spec.context(found))}
