"""`search.enqueue` resolved and checked in memory: an export's hyperparameters, a mapping
with the space's others at their defaults, every regularizer off; one line for what cannot
run, naming the item and the fix."""

import pytest
import yaml

from study.commands.recipes import resolve, unregularized
from study.core.errors import UserError
from study.spec import StudySpec


def spec(*items) -> StudySpec:
    return StudySpec.model_validate({"search": {"enqueue": list(items)}})


def export(folder, **hyperparameters) -> str:
    """A file as `study export` writes it (its run settings beside the hyperparameters)."""
    config = {**hyperparameters, "dataset": {"name": "digits"}, "model": {"name": "mlp"},
              "epochs": 27, "seed": 0, "optuna_trial": 6}  # fmt: skip
    path = folder / "best.yaml"
    path.write_text(yaml.safe_dump({"study": "old", "trial": "t007", "config": config}))
    return str(path)


def test_an_export_gives_its_hyperparameters_and_a_mapping_its_own_the_rest_defaults(tmp_path):
    made = spec(
        export(
            tmp_path, lr=0.003, weight_decay=1e-4, dropout=0.2, batch_norm=True, label_smoothing=0.1
        ),  # fmt: skip
        {"weight_decay": 5e-4, "dropout": 0.1, "label": "ours"},
    )
    first, second = resolve(made, tmp_path)
    assert first == {"label": "best.yaml", "lr": 0.003, "weight_decay": 1e-4, "dropout": 0.2,
                     "batch_norm": True, "label_smoothing": 0.1}  # fmt: skip
    # the space's lr and batch_norm not given: their defaults (lr 1e-3 is in the space)
    assert second == {"label": "ours", "lr": 1e-3, "weight_decay": 5e-4, "dropout": 0.1,
                      "batch_norm": False}  # fmt: skip
    # weight_decay not given: its default 0 is below the log range, so its nearest bound
    (third,) = resolve(spec({"dropout": 0.1}), tmp_path)
    assert third["weight_decay"] == 1e-6 and third["label"] == "recipe 1"


def test_unregularized_is_every_regularizer_off_as_far_as_the_space_allows(tmp_path):
    (made,) = resolve(spec("unregularized"), tmp_path)
    assert made["label"] == "unregularized"
    assert made["dropout"] == 0.0 and made["batch_norm"] is False and made["l1"] == 0.0
    assert made["weight_decay"] == 1e-6  # the default space's log range starts there, not at 0
    assert set(unregularized()) <= set(made)


@pytest.mark.parametrize(
    ("item", "said"),
    [
        ({"lrr": 0.01}, "search.enqueue[1]: unknown hyperparameter 'lrr'; did you mean lr?"),
        ({"dropout": 0.9}, "search.enqueue[1].dropout: given 0.9 is outside the space (0 .. 0.5)"),
        ({"dropout": -1}, "search.enqueue[1].dropout: -1 "),
        ({"lr": 0.5}, "search.enqueue[1].lr: given 0.5 is outside the space (0.0001 .. 0.03)"),
        ("nothing.yaml", "search.enqueue[1]: no file "),
    ],
)
def test_what_cannot_run_is_refused_in_one_line_naming_the_item(tmp_path, item, said):
    with pytest.raises(UserError) as refused:
        resolve(spec(item), tmp_path)
    assert str(refused.value).startswith(said) and "\n" not in str(refused.value)


def test_a_file_that_is_not_an_export_is_refused(tmp_path):
    (tmp_path / "spec.yaml").write_text("name: x\nsearch: {num_samples: 3}\n")
    with pytest.raises(UserError, match=r"^search.enqueue\[1\]: .*spec.yaml is not a `study "):
        resolve(spec("spec.yaml"), tmp_path)


def test_a_default_no_choice_holds_is_refused_until_it_is_given(tmp_path):
    only_bn = {
        "space": {
            "name": "bn",
            "params": {"batch_norm": {"type": "categorical", "choices": [True]}},
        }
    }
    narrow = StudySpec.model_validate({**only_bn, "search": {"enqueue": [{"lr": 0.01}]}})
    with pytest.raises(
        UserError,
        match=r"batch_norm: not given, and its default False is "
        r"outside the space \(True\); give a value in it",
    ):
        resolve(narrow, tmp_path)
    given = StudySpec.model_validate({**only_bn, "search": {"enqueue": [{"batch_norm": True}]}})
    assert resolve(given, tmp_path)[0]["batch_norm"] is True
