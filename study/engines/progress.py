"""Progress of a running study: one line per finished trial, one live status line, and the
study's recorded state (study.core.stage) kept up to date as trials start and end, so that
`study status` reads what the console shows."""

import time
from pathlib import Path
from typing import Any

import ray
from ray import tune
from rich.console import Console
from rich.live import Live
from rich.markup import escape
from rich.text import Text

from study.core import Outcome, Stage, StudyState, stage
from study.core.record import TrialRecord
from study.engines.logs import console as wide_console
from study.engines.tracking import MlflowTracker, last_error

LOOK_S = 5.0  # how often the driver asks Ray which nodes are alive (one call to its GCS)
COLOURS = {
    "completed": "green",
    "patience_stopped": "cyan",
    "early_stopped": "yellow",
    "failed": "red",
    "diverged": "red",
}


class Progress(tune.Callback):
    """Prints each trial's outcome as it ends, keeps one status line up to date, and records
    the study's state (`record`: its file) at the start of the trials and at each trial's
    start and end. A resumed study's trials that earlier drivers recorded count too."""

    def __init__(
        self,
        tracker: MlflowTracker,
        metric: str,
        mode: str,
        num_samples: int,
        console: Console,
        record: Path,
    ) -> None:
        self.tracker = tracker
        self.metric, self.mode = metric, mode
        self.num_samples = num_samples
        self.console = console
        self.live = Live(Text(""), console=console, transient=True, auto_refresh=False)
        self.record = record
        self.state = StudyState(Stage.TRIALS_STARTED, num_samples)
        self.earlier: dict[int, TrialRecord] = {}  # trials that earlier drivers recorded
        self.alive: set[str] = set()  # Ray nodes seen alive
        self.left: dict[str, set[str]] = {}  # node id -> trials retried away from it
        self.next_look = 0.0

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment
        skip = ("console", "live", "earlier")
        return {k: v for k, v in self.__dict__.items() if k not in skip}

    def __setstate__(self, state: dict[str, Any]) -> None:
        console = wide_console()
        live = Live(Text(""), console=console, transient=True, auto_refresh=False)
        self.__dict__.update(state, console=console, live=live, earlier={})

    def setup(self, **info: Any) -> None:
        tracker = self.tracker
        if tracker.resumed:
            self.earlier = {record.number: record for record in tracker.records.trials()}
        self._save()
        self.live.start()

    def _save(self) -> None:
        """Record the study's state with the trials counted so far."""
        trials = {**self.earlier, **self.tracker.trials}.values()
        self.state = stage.counted(
            self.state.at(Stage.TRIALS_STARTED), trials, self.metric, self.mode
        )
        stage.save(self.record, self.state)

    def _status(self, latest: str) -> Text:
        best = self.state.best
        best_text = f" · best {self.metric} {best[1]:.4f} ({best[0].split()[0]})" if best else ""
        done = f"trials {self.state.ended}/{self.num_samples} done"
        return Text(f"{done}{best_text} · {latest}", style="dim")

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.tracker.running(trial)
        self._save()

    def on_trial_result(self, iteration: int, trials: list, trial: Any, result: dict, **info: Any):
        record = self.tracker.running(trial)
        value = result.get(self.metric, float("nan"))
        latest = f"{record.label} epoch {int(result['epoch'])} {self.metric} {value:.4f}"
        self.live.update(self._status(latest), refresh=True)

    def _ended(self, trial: Any) -> None:
        record = self.tracker.running(trial)
        colour = COLOURS.get(record.outcome, "white")
        value = record.metrics.get(self.metric)
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
        self._save()
        self.live.update(self._status(""), refresh=True)

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.tracker.running(trial)
        self.left.setdefault(record.node, set()).add(record.label)  # before it reports elsewhere
        name, error = escape(record.name), escape(last_error(trial))
        self.console.print(
            f"[yellow]{'retrying':<16}[/] {name:<40} after {error}",
            highlight=False,
            soft_wrap=True,
        )

    def on_step_begin(self, iteration: int, trials: list, **info: Any) -> None:
        if time.monotonic() >= self.next_look:
            self.next_look = time.monotonic() + LOOK_S
            self._look_at_nodes()

    def _look_at_nodes(self) -> None:
        """Say each node that went away since the last look, and the trials that ran there
        (those retried from it and those still recorded there), which Ray Tune retries from
        their last checkpoints on other nodes."""
        for node in ray.nodes():
            node_id = node["NodeID"]
            if node["Alive"]:
                self.alive.add(node_id)
            elif node_id in self.alive:
                self.alive.discard(node_id)
                there = {
                    r.label
                    for r in self.tracker.trials.values()
                    if r.node == node_id and r.outcome == Outcome.RUNNING
                }
                moved = sorted(self.left.pop(node_id, set()) | there)
                trials = ", ".join(moved) if moved else "no trial"
                self.console.print(
                    f"[yellow]{'node lost':<16}[/] node {node.get('NodeManagerAddress', '')} "
                    f"({node_id[:8]}) went away; {trials} ran there and continue from their "
                    "last checkpoints on other nodes",
                    highlight=False,
                    soft_wrap=True,
                )

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._ended(trial)

    def on_experiment_end(self, trials: list, **info: Any) -> None:
        self._look_at_nodes()
        self.live.stop()
