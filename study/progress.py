"""Progress of a running study: one line per finished trial and one live status line."""

from typing import Any

from ray import tune
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from study.core import Outcome
from study.tracking import MlflowTracker, last_error

COLOURS = {
    "completed": "green",
    "patience_stopped": "cyan",
    "early_stopped": "yellow",
    "failed": "red",
    "diverged": "red",
}


class Progress(tune.Callback):
    """Prints each trial's outcome as it ends and keeps one status line up to date."""

    def __init__(
        self, tracker: MlflowTracker, metric: str, mode: str, num_samples: int, console: Console
    ) -> None:
        self.tracker = tracker
        self.metric = metric
        self.better = max if mode == "max" else min
        self.num_samples = num_samples
        self.console = console
        self.live = Live(Text(""), console=console, transient=True, auto_refresh=False)

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment
        return {k: v for k, v in self.__dict__.items() if k not in ("console", "live")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        console = Console()
        live = Live(Text(""), console=console, transient=True, auto_refresh=False)
        self.__dict__.update(state, console=console, live=live)

    def setup(self, **info: Any) -> None:
        self.live.start()

    def _best(self) -> tuple[str, float] | None:
        scored = [
            (r.last[self.metric], r.label)
            for r in self.tracker.records.values()
            if self.metric in r.last
        ]
        if not scored:
            return None
        value, trial = self.better(scored)
        return trial, value

    def _status(self, latest: str) -> Text:
        done = sum(r.outcome != Outcome.RUNNING for r in self.tracker.records.values())
        best = self._best()
        best_text = f" · best {self.metric} {best[1]:.4f} ({best[0]})" if best else ""
        return Text(f"trials {done}/{self.num_samples} done{best_text} · {latest}", style="dim")

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any):
        record = self.tracker.record(trial)
        value = result.get(self.metric, float("nan"))
        latest = f"{record.label} epoch {int(result['epoch'])} {self.metric} {value:.4f}"
        self.live.update(self._status(latest), refresh=True)

    def _ended(self, trial: Any) -> None:
        record = self.tracker.record(trial)
        colour = COLOURS.get(record.outcome, "white")
        value = record.last.get(self.metric)
        if record.outcome == Outcome.FAILED:  # one line; the traceback is in the trial's folder
            shown = f"{record.error} (traceback: {trial.storage.trial_fs_path}/error.txt)"
        elif record.outcome == Outcome.DIVERGED or value is None:
            shown = record.error
        else:
            shown = f"{self.metric}={value:.4f}"
        self.console.print(
            f"[{colour}]{record.outcome:<16}[/] {escape(record.name):<40} "
            f"epochs={record.epochs:<3} {escape(shown)}",
            highlight=False,
            soft_wrap=True,
        )
        self.live.update(self._status(""), refresh=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        name, error = escape(self.tracker.record(trial).name), escape(last_error(trial))
        self.console.print(
            f"[yellow]{'retrying':<16}[/] {name:<40} after {error}",
            highlight=False,
            soft_wrap=True,
        )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self.live.stop()
