"""What a trial runs: its hyperparameters, apart from the settings of the run itself.

Ray Tune, the MLflow `config` tag and exported files carry a trial's config as one flat
mapping ({"lr": 0.003, ..., "dataset": {...}, "epochs": 27, "seed": 0, "optuna_trial": 6});
`TrialConfig.parse` splits it and `flat` joins it again.
"""

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, replace
from typing import Any

from trainables.hyperparameters import RUN_SETTINGS, ends_at


@dataclass(frozen=True)
class RunSettings:
    """How a trial runs, as opposed to what it tunes."""

    dataset: dict[str, Any]
    model: dict[str, Any]
    epochs: int  # the length of the schedule (the study's max_epochs)
    seed: int
    threads: int = 1
    stop_epoch: int | None = None  # end earlier, where an early-stopped trial ended
    optuna_trial: int | None = None  # the Optuna trial's number: names the trial everywhere
    enqueued: str | None = None  # a config the study ran first (search.enqueue): `1: recipe.yaml`

    @property
    def last_epoch(self) -> int:
        """The epoch the run ends at when nothing stops it (the loop's own rule)."""
        return ends_at({"epochs": self.epochs, "stop_epoch": self.stop_epoch})


# The run settings' keys, as the loop knows them (trainables tells a plug-in's own knobs from
# them); RunSettings has a field for each (tests/unit/test_core.py).
RUN_KEYS = RUN_SETTINGS


@dataclass(frozen=True)
class TrialConfig:
    """A trial's hyperparameters (sampled, fixed and model defaults) and its run settings."""

    hyperparameters: dict[str, Any] = field(default_factory=dict)
    run: RunSettings | None = None

    @classmethod
    def parse(cls, flat: Mapping[str, Any]) -> "TrialConfig":
        """Split a flat config; KeyError names a run setting it lacks."""
        run = {key: flat[key] for key in RUN_KEYS if key in flat}
        for key in ("dataset", "model", "epochs", "seed"):
            if key not in run:
                raise KeyError(key)
        hyperparameters = {k: v for k, v in flat.items() if k not in RUN_KEYS}
        return cls(hyperparameters, RunSettings(**run))

    def flat(self) -> dict[str, Any]:
        """The flat mapping Ray, MLflow and exports carry (unset run settings left out)."""
        run = {k: v for k, v in asdict(self.run).items() if v is not None}
        return {**self.hyperparameters, **run}

    @property
    def number(self) -> int:
        """The trial's number (`from_optuna`: stable across resumes)."""
        if self.run.optuna_trial is None:
            raise ValueError("a config without optuna_trial belongs to no study trial")
        return from_optuna(self.run.optuna_trial)

    @property
    def label(self) -> str:
        return label(self.number)

    def numbered(self, optuna_trial: int) -> "TrialConfig":
        """The same config as Optuna trial `optuna_trial`'s."""
        return replace(self, run=replace(self.run, optuna_trial=optuna_trial))

    def seeded(self, seed: int) -> "TrialConfig":
        """The same config trained with another seed (`study train --seeds`)."""
        return replace(self, run=replace(self.run, seed=seed))

    def stopped_at(self, epoch: int) -> "TrialConfig":
        """The same config ending at `epoch` (an early-stopped trial's retrain)."""
        if epoch >= self.run.epochs:
            return self
        return replace(self, run=replace(self.run, stop_epoch=epoch))


def from_optuna(number: int) -> int:
    """A trial's number from its Optuna trial's (Optuna counts from 0, a study's trials from
    1: t001 is Optuna's trial 0), the same across resumes."""
    return number + 1


def trial_number(flat: Mapping[str, Any]) -> int:
    """The number of the trial whose flat config this is."""
    return from_optuna(int(flat["optuna_trial"]))


def label(number: int) -> str:
    """A trial's short name: t007."""
    return f"t{number:03d}"
