"""Warm starts in memory: which earlier trials a new space keeps (and why the others are left
out), and a sampler shown them learning from its first proposal, with none of them in the new
study's own records."""

import optuna
import pytest
from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution
from optuna.trial import TrialState, create_trial

from search_spaces import Space
from study.engines.sampler import WithPrior
from study.engines.warm_start import keep

SPACE = Space.model_validate({"name": "new", "params": {
    "lr": {"type": "float", "low": 1e-4, "high": 1e-1, "log": True},
    "dropout": {"type": "float", "low": 0.0, "high": 0.5},
    "batch_norm": {"type": "categorical", "choices": [True, False]},
}})  # fmt: skip
OLD = {"lr": FloatDistribution(1e-5, 1.0, log=True), "dropout": FloatDistribution(0.0, 0.9),
       "batch_norm": CategoricalDistribution([True, False])}  # fmt: skip


def trial(state=TrialState.COMPLETE, value=0.9, curve=None, **params):
    distributions = {k: OLD.get(k, IntDistribution(1, 8)) for k in params}
    return create_trial(state=state, value=value if state == TrialState.COMPLETE else None,
                        params=params, distributions=distributions,
                        intermediate_values=curve or {})  # fmt: skip


def test_a_trial_is_kept_when_every_parameter_it_has_fits_the_new_space():
    earlier = [
        trial(lr=0.01, dropout=0.2, batch_norm=True),  # kept
        trial(TrialState.PRUNED, curve={1: 0.5, 3: 0.7}, lr=0.003, dropout=0.1),  # kept
        trial(lr=0.5, dropout=0.2),  # lr outside the new range
        trial(lr=0.01, dropout=0.2, depth=3),  # a knob the new space does not have
        trial(TrialState.FAIL, lr=0.01),
        trial(TrialState.PRUNED, lr=0.01),  # pruned before any value
    ]
    prior = keep(earlier, SPACE)
    assert len(prior.trials) == 2 and prior.shared == {"lr", "dropout", "batch_norm"}
    assert prior.left_out == {"with lr outside this space's range": 1,
                              "with depth, not in this space": 1, "unfinished or failed": 1,
                              "ended without a value": 1}  # fmt: skip
    assert prior.trials[0].distributions["lr"] == SPACE.params["lr"].distribution()
    assert prior.trials[1].intermediate_values == {1: 0.5, 3: 0.7}  # its curve comes along
    assert prior.line(["a"]).startswith("warm start: 2 trials of a (4 left out: 1 ended")


@pytest.mark.parametrize("warm", [False, True])
def test_the_gp_skips_its_random_start_when_enough_trials_came_in(warm):
    """GP's first proposal is random (sample_relative gives nothing) until it has seen its
    startup trials; shown 6 earlier ones, it proposes from its model at once. The new study's
    own records hold none of them."""
    earlier = keep([trial(lr=10 ** (-4 + i / 2), dropout=0.05 * i, batch_norm=i % 2 == 0,
                          value=0.5 + 0.05 * i) for i in range(6)], SPACE).trials  # fmt: skip
    inner = optuna.samplers.GPSampler(seed=0, n_startup_trials=3)
    chosen = WithPrior(inner, earlier) if warm else inner
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=chosen)
    first = study.ask({name: param.distribution() for name, param in SPACE.params.items()})
    space = chosen.infer_relative_search_space(study, first)
    assert bool(chosen.sample_relative(study, first, space)) == warm
    assert len(study.trials) == 1  # the study's own: the one asked
