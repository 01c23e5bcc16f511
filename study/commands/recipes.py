"""The configs a study runs first (`search.enqueue`): the user's recipe, an earlier study's
export, or every regularizer off; each resolved to a mapping of hyperparameters and checked
against the study's space before anything runs. The first is the study's baseline.

A resolved item is a mapping with its `label` (the file's name, `unregularized`, or `recipe N`)
and its hyperparameters: the space's parameters it does not name at their defaults (or the
range's bound nearest to a default the range excludes), the others it names as given (they
override the study's fixed values for this trial alone). A value it names outside the space
is refused. The
resolved list replaces `search.enqueue` in the saved spec, so that a resume reads no file.
"""

import difflib
from pathlib import Path
from typing import Any

import yaml

from study.core.errors import UserError
from study.evidence.variants import REGULARIZERS
from study.spec import StudySpec, value_problem
from trainables.hyperparameters import HYPERPARAMETERS

UNREGULARIZED = "unregularized"  # the word for every regularizer off (and BatchNorm off)
LABEL = "label"


def unregularized() -> dict[str, Any]:
    """Every regularizer `study ablate` knows, switched off."""
    return {key: value for regularizer in REGULARIZERS for key, value in regularizer.off.items()}


def exported(path: Path, where: str) -> dict[str, Any]:
    """The hyperparameters of a `study export` file (its run settings left to the spec)."""
    from study.core import TrialConfig

    try:
        document = yaml.safe_load(path.read_text())
    except (OSError, yaml.YAMLError) as error:
        raise UserError(f"{where}: cannot read {path} ({error}); give a `study export` file, "
                        "a mapping of hyperparameters or unregularized") from None  # fmt: skip
    config = document.get("config") if isinstance(document, dict) else None
    if not isinstance(config, dict):
        raise UserError(
            f"{where}: {path} is not a `study export` file (it has no config); write one with "
            "`study export NAME -o FILE.yaml`, or give a mapping of hyperparameters"
        )
    try:
        return TrialConfig.parse(config).hyperparameters
    except KeyError as missing:
        raise UserError(f"{where}: {path}'s config lacks {missing}; export it again") from None


def named(item: str | dict[str, Any], number: int, folder: Path) -> tuple[str, dict[str, Any]]:
    """An item's label and the hyperparameters it names."""
    where = f"search.enqueue[{number}]"
    if isinstance(item, dict):
        given = dict(item)
        return str(given.pop(LABEL, f"recipe {number}")), given
    if item == UNREGULARIZED:
        return UNREGULARIZED, unregularized()
    path = Path(item).expanduser()
    path = path if path.is_absolute() else folder / path
    if not path.exists():
        raise UserError(f"{where}: no file {path}; give a `study export` file, a mapping of "
                        f"hyperparameters or {UNREGULARIZED}")  # fmt: skip
    return path.name, exported(path, where)


def least(spec: StudySpec, off: dict[str, Any]) -> dict[str, Any]:
    """Values as near as the space allows: a range that excludes one (a regularizer's off
    value or a default: weight_decay 0 on a log scale from 1e-6) gives its bound nearest to
    it, so that the trial really trains with what Optuna records of it."""
    space, near = spec.space.params, dict(off)
    for name, value in off.items():
        param = space.get(name)
        if param is not None and not param.holds(value) and not hasattr(param, "choices"):
            near[name] = min((param.low, param.high), key=lambda bound: abs(bound - value))
    return near


def checked(spec: StudySpec, given: dict[str, Any], where: str) -> dict[str, Any]:
    """`given` with the space's parameters it leaves out at their defaults, every name known
    and every value one its parameter can take; a UserError naming the field otherwise."""
    space = spec.space.params
    for name, value in given.items():
        if name not in HYPERPARAMETERS and name not in space:
            near = difflib.get_close_matches(name, [*HYPERPARAMETERS, *space], n=1)
            hint = f"; did you mean {near[0]}?" if near else ""
            raise UserError(f"{where}: unknown hyperparameter {name!r}{hint}")
        if name in HYPERPARAMETERS and (problem := value_problem(name, value)):
            raise UserError(f"{where}.{name}: {problem}")
    defaults = {name: HYPERPARAMETERS.get(name) for name in space if name not in given}
    resolved = least(spec, defaults) | given
    for name, param in space.items():
        if param.active(resolved) and not param.holds(resolved[name]):
            said = "given" if name in given else "not given, and its default"
            raise UserError(
                f"{where}.{name}: {said} {resolved[name]!r} is outside the space "
                f"({param.span()}); give a value in it, or widen space.params.{name}"
            )
    return resolved


def resolve(spec: StudySpec, folder: Path) -> list[dict[str, Any]]:
    """`search.enqueue` resolved (files read relative to `folder`), each item a mapping with
    its label; a UserError naming the item and the fix, before anything runs."""
    resolved = []
    for number, item in enumerate(spec.search.enqueue, start=1):
        label, given = named(item, number, folder)
        if item == UNREGULARIZED:
            given = least(spec, given)
        resolved.append({LABEL: label, **checked(spec, given, f"search.enqueue[{number}]")})
    return resolved


def with_recipes(spec: StudySpec, folder: Path) -> StudySpec:
    """The spec with `search.enqueue` resolved (what is saved, and what a resume reads)."""
    if not spec.search.enqueue:
        return spec
    search = spec.search.model_copy(update={"enqueue": resolve(spec, folder)})
    return spec.model_copy(update={"search": search})
