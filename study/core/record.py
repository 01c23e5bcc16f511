"""A trial's record: what a study knows of one trial once it is read back (from its MLflow run
or the study's results file), frozen. Every reader (status, report, export, ablate, confirm,
the console's summary) takes records, never the stores' own shapes."""

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from study.core.config import TrialConfig, label
from study.core.outcome import Outcome, scored

BEST_SO_FAR = "best_so_far"  # per run and epoch: the best metric value up to that epoch


@dataclass(frozen=True)
class TrialRecord:
    """One trial: its number, outcome, epochs trained, last metric values and config."""

    number: int  # study.core.from_optuna: the trial's name everywhere, across resumes
    outcome: Outcome
    epochs: int
    metrics: Mapping[str, float]  # the last epoch's values (or the weights patience restored)
    config: TrialConfig
    run_id: str = ""
    name: str = ""  # its run's name: `t007 lr=3e-3 wd=1e-4`
    error: str = ""
    node: str = field(default="", compare=False)

    @property
    def label(self) -> str:
        return label(self.number)

    def value(self, metric: str) -> float | None:
        """Its last value of `metric`, None when it has none."""
        return self.metrics.get(metric)

    def scored(self, metric: str) -> bool:
        """Whether it is ranked by `metric`: a finite value from an outcome that counts."""
        return scored(self.outcome, self.value(metric))

    def retrained(self) -> TrialConfig:
        """Its config as it is retrained: the same schedule, stopped where ASHA stopped it
        (as `study export` writes it); a trial its patience stopped keeps its patience."""
        if self.outcome == Outcome.EARLY_STOPPED:
            return self.config.stopped_at(self.epochs)
        return self.config

    def row(self, metric: str) -> dict[str, Any]:
        """The JSON-ready row of the study's results file (study.core.results)."""
        return {
            "trial": self.label,
            "number": self.number,
            "run_id": self.run_id,
            "run_name": self.name,
            "outcome": self.outcome.value,
            "epochs": self.epochs,
            metric: self.value(metric),
            "metrics": {k: v for k, v in self.metrics.items() if k != BEST_SO_FAR},
            "error": self.error,
            "config": self.config.flat(),
        }

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> "TrialRecord":
        """The record a results file's row holds."""
        return cls(
            int(row["number"]),
            Outcome(row["outcome"]),
            int(row["epochs"]),
            dict(row["metrics"]),
            TrialConfig.parse(row["config"]),
            row.get("run_id", ""),
            row.get("run_name", ""),
            row.get("error", ""),
        )


def ranked(records: list[TrialRecord], metric: str, mode: str) -> list[TrialRecord]:
    """Trials with a value for `metric`, best first (ties: fewer epochs first)."""
    sign = -1 if mode == "max" else 1
    chosen = [r for r in records if r.scored(metric)]
    return sorted(chosen, key=lambda r: (sign * r.metrics[metric], r.epochs))


def better(old: float, new: float, mode: str) -> bool:
    """Whether `old` beats `new` under `mode` (max or min); NaN beats nothing."""
    return old > new if mode == "max" else old < new
