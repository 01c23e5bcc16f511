"""The variants `study ablate` trains: a config itself, and the config with each regularizer
that is on in it switched off (BatchNorm also switched on where it is off). Pure: configs in,
configs out."""

from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import Any

from study.core import TrialConfig
from trainables.hyperparameters import resolve

BASE = "config"  # the variant that changes nothing: the config itself
BASE_LABEL = "the config itself"  # how tables and plots name it


def _differs(off: dict[str, Any]) -> Callable[[dict[str, Any]], bool]:
    return lambda hp: any(hp[key] != value for key, value in off.items())


@dataclass(frozen=True)
class Regularizer:
    """A regularizer of the loop or the network: the values that switch it off and whether a
    resolved config has it on."""

    name: str
    off: dict[str, Any]
    is_on: Callable[[dict[str, Any]], bool] | None = field(default=None, compare=False)

    def on(self, hp: dict[str, Any]) -> bool:
        """Whether the resolved hyperparameters `hp` have it on."""
        return (self.is_on or _differs(self.off))(hp)


REGULARIZERS = (
    Regularizer("weight_decay", {"weight_decay": 0.0}),
    Regularizer("l1", {"l1": 0.0}),
    # dropout is in force only with use_dropout (trainables.models: dropout_rate)
    Regularizer("dropout", {"dropout": 0.0}, lambda hp: hp["use_dropout"] and hp["dropout"] > 0),
    Regularizer("batch_norm", {"batch_norm": False}),
    Regularizer("label_smoothing", {"label_smoothing": 0.0}),
    Regularizer("mixup", {"mixup_alpha": 0.0}),
    Regularizer("cutmix", {"cutmix_alpha": 0.0}),
    Regularizer(
        "augmentation", {"crop_padding": 0, "hflip": False, "rotation": 0.0, "color_jitter": 0.0}
    ),
    Regularizer("early_stopping", {"patience": 0}),
    Regularizer("grad_clip", {"grad_clip": 0.0}),
)
# Switched on where the config has it off: the one regularizer a study most often compares.
SWITCHED_ON = {"batch_norm": {"batch_norm": True}}


@dataclass(frozen=True)
class Variant:
    """A config with `changes` made to its hyperparameters: `regularizer` switched off
    (`removed`) or on; the config itself for BASE (no regularizer, no changes). `setting`
    says what the config has of it (`weight_decay=0.00073`)."""

    name: str
    regularizer: str = ""
    removed: bool = True
    setting: str = ""
    changes: dict[str, Any] = field(default_factory=dict)

    def apply(self, trial: TrialConfig) -> TrialConfig:
        """The trial's config with this variant's changes."""
        return replace(trial, hyperparameters={**trial.hyperparameters, **self.changes})


def setting(regularizer: Regularizer, hp: dict[str, Any]) -> str:
    """The values of a regularizer's knobs that are on in `hp`: `dropout=0.31`, `on`."""
    if regularizer.name == "batch_norm":
        return "on" if hp["batch_norm"] else "off"
    on = {key: hp[key] for key, off in regularizer.off.items() if hp[key] != off}
    if not on:
        return "off"
    if len(regularizer.off) == 1:  # the knob is the regularizer's name: its value alone
        return f"{next(iter(on.values())):.3g}"
    return ", ".join(key if value is True else f"{key}={value:.3g}" for key, value in on.items())


def variants(trial: TrialConfig) -> tuple[list[Variant], list[str]]:
    """The config itself, then a variant per regularizer on in it, switched off, and one per
    regularizer of SWITCHED_ON that is off, switched on; and the names of the regularizers
    already off (their variant would be the config itself: not run)."""
    hp = resolve(trial.hyperparameters)
    made, skipped = [Variant(BASE)], []
    for regularizer in REGULARIZERS:
        if regularizer.on(hp):
            made.append(
                Variant(f"{regularizer.name} off", regularizer.name, True,
                        setting(regularizer, hp), dict(regularizer.off))
            )  # fmt: skip
        elif regularizer.name in SWITCHED_ON:
            made.append(
                Variant(f"{regularizer.name} on", regularizer.name, False,
                        setting(regularizer, hp), dict(SWITCHED_ON[regularizer.name]))
            )  # fmt: skip
        else:
            skipped.append(regularizer.name)
    return made, skipped
