"""Early stopping by patience, a regularizer a study can compare like the others: stop when the
monitored metric has not improved by more than `min_delta` for `patience` epochs, and end with
the best epoch's weights when `restore_best` (as Keras' EarlyStopping with
restore_best_weights). The trial's score is then the best epoch's, not the last one's.
"""

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainables.hyperparameters import direction


@dataclass
class Patience:
    """The best epoch so far, how many epochs since, and (when restoring) its weights."""

    patience: int
    min_delta: float
    monitor: str
    restore: bool
    best: float = math.nan
    best_epoch: int = 0
    wait: int = 0
    best_metrics: dict[str, float] = field(default_factory=dict)
    best_models: list[dict[str, torch.Tensor]] | None = None  # one per fold

    @classmethod
    def of(cls, hp: dict[str, Any]) -> "Patience | None":
        """The patience `hp` asks for, None when it is off (patience 0)."""
        if not hp["patience"]:
            return None
        return cls(hp["patience"], hp["min_delta"], hp["monitor"], hp["restore_best"])

    def improved(self, value: float) -> bool:
        """Whether `value` beats the best by more than min_delta (the first finite one does)."""
        if not math.isfinite(value):
            return False
        if math.isnan(self.best):
            return True
        if direction(self.monitor) == "max":
            return value > self.best + self.min_delta
        return value < self.best - self.min_delta

    def update(self, epoch: int, metrics: dict[str, float], models: list[nn.Module]) -> bool:
        """Take epoch `epoch`'s metrics (of the `models` trained side by side, one per fold);
        True when patience has run out."""
        if self.improved(metrics[self.monitor]):
            self.best, self.best_epoch, self.wait = metrics[self.monitor], epoch, 0
            self.best_metrics = dict(metrics)
            if self.restore:
                self.best_models = [
                    {k: v.detach().clone() for k, v in model.state_dict().items()}
                    for model in models
                ]
        else:
            self.wait += 1
        return self.wait >= self.patience

    def state(self) -> dict[str, Any]:
        """What a checkpoint keeps, so that a resumed trial stops where it would have."""
        counters = {"best": self.best, "best_epoch": self.best_epoch, "wait": self.wait}
        return {"patience": {**counters, "metrics": self.best_metrics}, "best": self.best_models}

    def load_state(self, state: dict[str, Any]) -> None:
        saved = state["patience"]
        self.best, self.best_epoch, self.wait = saved["best"], saved["best_epoch"], saved["wait"]
        self.best_metrics, self.best_models = dict(saved["metrics"]), state["best"]
