"""Search spaces: validation, conditions and define-by-run suggestion on real Optuna trials."""

import subprocess
import sys

import optuna
import pytest
from pydantic import ValidationError

import search_spaces
from search_spaces import Space


def sample(space: Space, n: int, seed: int = 0) -> list[dict]:
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=seed))
    values = []
    for _ in range(n):
        trial = study.ask()
        values.append(space.suggest(trial))
        study.tell(trial, 0.0)
    return values


def test_shipped_regularization_space_samples_in_range():
    space = search_spaces.load("regularization")
    assert list(space.params) == ["lr", "weight_decay", "dropout", "batch_norm"]
    for values in sample(space, 50):
        assert 1e-4 <= values["lr"] <= 3e-2
        assert 1e-6 <= values["weight_decay"] <= 1e-2
        assert 0 <= values["dropout"] <= 0.5
        assert values["batch_norm"] in (True, False)


def test_log_scale_spreads_over_decades():
    space = Space.model_validate(
        {"params": {"lr": {"type": "float", "low": 1e-5, "high": 1e-1, "log": True}}}
    )
    lrs = [v["lr"] for v in sample(space, 200)]
    assert sum(lr < 1e-3 for lr in lrs) > 60  # uniform in value would put ~1% there


def test_when_condition_samples_only_where_it_holds():
    space = Space.model_validate(
        {
            "params": {
                "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
                "momentum": {"type": "float", "low": 0, "high": 0.99, "when": {"optimizer": "sgd"}},
                "batch_size": {"type": "int", "low": 32, "high": 256, "step": 32},
            }
        }
    )
    values = sample(space, 60)
    assert {v["optimizer"] for v in values} == {"sgd", "adam"}
    for v in values:
        assert ("momentum" in v) == (v["optimizer"] == "sgd")
        assert v["batch_size"] % 32 == 0


@pytest.mark.parametrize(
    "param, message",
    [
        ({"type": "float", "low": 1, "high": 0}, "low (1.0) > high (0.0)"),
        ({"type": "float", "low": 0, "high": 1, "log": True}, "log scale needs low > 0"),
        ({"type": "int", "low": 1, "high": 8, "log": True, "step": 2}, "cannot be combined"),
        ({"type": "categorical", "choices": []}, "choices is empty"),
        ({"type": "float", "low": 0, "high": 1, "scale": "log"}, "Extra inputs"),
    ],
)
def test_invalid_parameters_are_rejected(param, message):
    with pytest.raises(ValidationError, match=message.replace("(", r"\(").replace(")", r"\)")):
        Space.model_validate({"params": {"p": param}})


def test_condition_on_a_later_parameter_is_rejected():
    with pytest.raises(ValidationError, match="list 'optimizer' first"):
        Space.model_validate(
            {
                "params": {
                    "momentum": {
                        "type": "float",
                        "low": 0,
                        "high": 1,
                        "when": {"optimizer": "sgd"},
                    },
                    "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
                }
            }
        )


def test_condition_on_a_context_value():
    space = Space.model_validate(
        {
            "params": {
                "hflip": {"type": "categorical", "choices": [True], "when": {"modality": "image"}}
            }
        }
    )
    study = optuna.create_study()
    assert space.suggest(study.ask(), {"modality": "image"}) == {"hflip": True}
    assert space.suggest(study.ask(), {"modality": "tabular"}) == {}


def test_condition_value_must_be_a_choice():
    with pytest.raises(ValidationError, match="optimizer='rmsprop' is not among its choices"):
        Space.model_validate(
            {
                "params": {
                    "optimizer": {"type": "categorical", "choices": ["sgd", "adam"]},
                    "momentum": {
                        "type": "float",
                        "low": 0,
                        "high": 1,
                        "when": {"optimizer": "rmsprop"},
                    },
                }
            }
        )


def test_unknown_space_names_the_shipped_ones():
    with pytest.raises(search_spaces.SpaceNotFound, match="regularization"):
        search_spaces.load("nope")


def test_search_spaces_imports_neither_ray_nor_torch():
    code = "import sys, search_spaces; print('ray' in sys.modules, 'torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.split() == ["False", "False"]
