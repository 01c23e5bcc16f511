"""A config retrained over several training seeds, as `study ablate` (a group per variant) and
`study confirm` (a group per trial) ask for it: the runs wanted, the run they nest under, and
the stop of an interrupted call. Trained through Ray by study.engines.repeats."""

from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Repeat:
    """One training run: `group` with training seed `seed`, its flat config and run name."""

    group: str
    seed: int
    config: dict[str, Any]
    name: str

    @property
    def key(self) -> tuple[str, int]:
        return self.group, self.seed


@dataclass(frozen=True)
class Role:
    """The run `study ablate` or `study confirm` nests its repeats under: its role (ablation,
    confirm), its run's name, and the tags that find it again (`key`)."""

    role: str
    name: str
    key: dict[str, str] = field(default_factory=dict)


class Interrupted(Exception):
    """The runs stopped before all were recorded (Ctrl-C): `done` of `wanted` are."""

    def __init__(self, done: int, wanted: int) -> None:
        super().__init__(f"{done} of {wanted} runs recorded")
        self.done, self.wanted = done, wanted
