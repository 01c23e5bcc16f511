"""The one-line errors: pydantic's validation errors of a spec, and a failed trial's error."""

from types import SimpleNamespace

import pytest
from pydantic import ValidationError

from study.commands.preflight import check_own_knobs
from study.core.errors import UserError
from study.engines.tracking import last_error
from study.spec import StudySpec, format_error
from tests.plugin_files import write_module

CASES = {  # a bad spec -> how its line starts (the field's path) and what else it says
    "unknown key": ({"nme": "x"}, "nme: unknown key", "did you mean 'name'?"),
    "unknown nested key": (
        {"search": {"num_sampels": 4}},
        "search.num_sampels: unknown key",
        "did you mean 'num_samples'?",
    ),
    "unknown key, nothing close": (
        {"scheduler": {"patience": 3}},
        "scheduler.patience: unknown key",
        "known: name, max_epochs, grace_period, reduction_factor",
    ),
    "number out of bounds": (
        {"search": {"num_samples": 0}},
        "search.num_samples: must be greater than or equal to 1",
        "(got 0)",
    ),
    "not a number": ({"search": {"num_samples": "many"}}, "search.num_samples: must be", "'many'"),
    "not one of a literal's values": (
        {"mode": "maximum"},
        "mode: must be 'max' or 'min'",
        "(got 'maximum')",
    ),
    "unknown parameter type": (
        {"space": {"params": {"lr": {"type": "real", "low": 0.001, "high": 0.1}}}},
        "space.params.lr: type must be one of float, int, categorical",
        "",
    ),
    "union member dropped from the path": (
        {"space": {"params": {"lr": {"type": "float", "low": 0.5, "high": 0.1}}}},
        "space.params.lr: low (0.5) > high (0.1)",
        "make low <= high",
    ),
    "field named by a model's check": (
        {"model": {"name": "torchvision"}},
        "model.arch: torchvision needs an architecture",
        "set model.arch: resnet18",
    ),
    "field named by the spec's check": (
        {"fixed": {"weight_decy": 0.1}},
        "fixed.weight_decy: unknown name",
        "did you mean 'weight_decay'?",
    ),
    "field validator": ({"metric": "accuracy"}, "metric: unknown metric 'accuracy'", "val_acc"),
    "a knob not ours, for a built-in model": (
        {"space": {"params": {"kernel_size": {"type": "categorical", "choices": [3, 5]}}}},
        "space.params.kernel_size: unknown name",
        "known: lr, optimizer",
    ),
}


def error_of(bad: dict) -> ValidationError:
    """The ValidationError of the spec `bad`."""
    with pytest.raises(ValidationError) as raised:
        StudySpec.model_validate(bad)
    return raised.value


@pytest.mark.parametrize("bad, start, says", CASES.values(), ids=CASES.keys())
def test_a_validation_error_is_one_line_naming_the_field(bad, start, says):
    """format_error gives one line, starting with the field's dotted path, with the fix."""
    line = format_error(error_of(bad))
    assert "\n" not in line
    assert line.startswith(start), line
    assert says in line, line
    assert "Value error" not in line and "pydantic" not in line, line


def test_only_the_first_problem_is_said():
    """Of several problems, the line names one: the first pydantic found."""
    error = error_of({"nme": "x", "mode": "maximum"})
    line = format_error(error)
    assert len(error.errors()) == 2
    assert line.startswith(f"{error.errors()[0]['loc'][0]}: "), line
    assert ("nme" in line) != ("mode" in line), line


def ray_trial(error_file) -> SimpleNamespace:
    """What last_error reads of a Tune trial: its error file's path (None when it has none)."""
    return SimpleNamespace(error_file=None if error_file is None else str(error_file))


def test_the_last_error_is_the_last_line_of_the_error_file(tmp_path):
    """A traceback's last line (type and message), trailing blank lines skipped."""
    error_file = tmp_path / "error.txt"
    error_file.write_text('Traceback (most recent call last):\n  File "x.py"\nValueError: boom\n\n')
    assert last_error(ray_trial(error_file)) == "ValueError: boom"


def test_the_last_error_is_cut_at_500_characters(tmp_path):
    """A huge message stays a readable tag."""
    error_file = tmp_path / "error.txt"
    error_file.write_text("RuntimeError: " + "x" * 1000)
    assert len(last_error(ray_trial(error_file))) == 500


@pytest.mark.parametrize("error_file", [None, "missing", "empty"])
def test_without_an_error_file_the_error_is_unknown(tmp_path, error_file):
    """No error file, a missing one or an empty one: 'unknown error'."""
    path = {None: None, "missing": tmp_path / "nope.txt", "empty": tmp_path / "error.txt"}
    path["empty"].write_text("\n  \n")
    assert last_error(ray_trial(path[error_file])) == "unknown error"


# A builder with knobs of its own and a loader with one; both from an uninstalled folder.
OWN = """
def build(input_shape, num_classes, hp, width=16, kernel_size=3):
    raise AssertionError("not built here")


def load(noise=0.0, share=0.5):
    raise AssertionError("not loaded here")
"""


def own_spec(tmp_path, model_args=None, **params):
    """A spec of the builder and loader above sampling `params` (name -> choices)."""
    write_module(tmp_path, "own_knobs", OWN)
    space = {name: {"type": "categorical", "choices": c} for name, c in params.items()}
    return StudySpec.model_validate(
        {
            "model": {"name": "own_knobs:build", "args": model_args},
            "dataset": {"name": "own_knobs:load"},
            "space": {"params": {"lr": {"type": "float", "low": 1e-3, "high": 1e-1}, **space}},
            "code_dir": str(tmp_path),
        }
    )


def refusal(spec) -> str:
    with pytest.raises(UserError) as raised:
        check_own_knobs(spec)
    return str(raised.value)


def test_a_knob_of_the_builder_or_the_loader_is_theirs(tmp_path):
    """A name that is not ours goes to the plug-in whose keyword argument it is."""
    spec = own_spec(tmp_path, kernel_size=[3, 5], noise=[0.0, 0.1])
    assert check_own_knobs(spec) == {"model": ["kernel_size"], "dataset": ["noise"]}


@pytest.mark.parametrize(
    "params, model_args, says",
    [
        ({"kernel_sise": [3]}, None, "space.params.kernel_sise: unknown name, not ours and not an "
         "argument of own_knobs:build or own_knobs:load; did you mean 'kernel_size'?"),
        ({"dropuot": [0.1]}, None, "did you mean 'dropout'?"),
        ({"heads": [2, 4]}, None, "own_knobs:build or own_knobs:load takes width, kernel_size, "
         "noise, share"),
        ({"kernel_size": [3, 5]}, {"kernel_size": 3}, "space.params.kernel_size: also in "
         "model.args; remove it from one of them"),
    ],
    ids=["a typo of theirs", "a typo of ours", "nothing close", "also in model.args"],
)  # fmt: skip
def test_any_other_name_is_refused_in_one_line(tmp_path, params, model_args, says):
    """With the closest known name, or what the plug-ins take."""
    line = refusal(own_spec(tmp_path, model_args, **params))
    assert "\n" not in line and says in line, line
