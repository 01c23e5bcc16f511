"""The MLflow tracker of a running study: a Ray Tune callback in the driver that writes one
child run per trial under the study's parent run (through study.engines.records), and the
stopper that ends a trial whose metric is not finite.

Only the driver writes to the store, and each Tune result (one or more epochs) costs one
batched `log_batch` call.
"""

import json
import math
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from ray import tune

from study.core import Outcome, TrialConfig, decide, finite, label, trial_number
from study.core.names import run_name
from study.core.record import BEST_SO_FAR, TrialRecord, better
from study.engines import outages
from study.engines.records import RAY_TRIAL_TAG, TRIAL_TAG, StudyRecords, flatten
from study.engines.trial import GPU_PEAK, GPU_TAG
from trainables import METRICS, resolve

# Per epoch: the loop's metrics and its flags (diverged; patience_stopped with the best and the
# stopped epoch, on the epoch whose patience ran out).
LOGGED = (*METRICS, "diverged", "patience_stopped", "best_epoch", "stopped_epoch")


def logged(name: str) -> bool:
    """Whether the run logs `name` each epoch: the loop's metrics and flags, and with k-fold
    cross-validation each metric's spread across the folds and each fold's own value."""
    metric = name.removesuffix("_std").partition("_")[2] if name.startswith("fold") else name
    return name in LOGGED or name.removesuffix("_std") in METRICS or metric in METRICS


@dataclass
class RunningTrial:
    """A trial as the tracker writes its run: changed at each result, the tracker's own. Its
    `record()` is the frozen record everything else reads."""

    number: int
    run_id: str
    name: str
    config: dict[str, Any]
    outcome: Outcome = Outcome.RUNNING
    error: str = ""
    epochs: int = 0
    metrics: dict[str, float] = field(default_factory=dict)  # the last epoch's
    node: str = ""
    best: float = math.nan  # the best value of the study's metric over the epochs so far
    sized: bool = False  # whether the run has its model's `num_params` param

    @property
    def label(self) -> str:
        return label(self.number)

    def record(self) -> TrialRecord:
        return TrialRecord(
            self.number,
            self.outcome,
            self.epochs,
            dict(self.metrics),
            TrialConfig.parse(self.config),
            self.run_id,
            self.name,
            self.error,
            self.node,
        )


class MlflowTracker(tune.Callback):
    """Records each Ray trial as a child run nested under the study's parent run.

    A restored tracker (a resumed study) looks each trial's run up by the trial's number before
    it makes one, so a resumed trial keeps its run; epochs already logged are not logged again,
    and a trial that already ended is left as it ended. A new study's tracker (`resumed`
    False) has a parent run with no children yet, so it makes runs without looking.
    """

    def __init__(
        self,
        records: StudyRecords,
        sampled: list[str],
        metric: str = "val_acc",
        mode: str = "max",
        resumed: bool = False,
    ) -> None:
        self.records = records
        self.metric, self.mode = metric, mode
        self.sampled = sampled
        self.trials: dict[Any, RunningTrial] = {}
        self.resumed = resumed

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment
        return {k: v for k, v in self.__dict__.items() if k != "trials"}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state, trials={}, resumed=True)

    def setup(self, **info: Any) -> None:
        # A tracking server that stops answering: MLflow's client retries each request for
        # minutes; the console hears of it once, and once when it answers again.
        outages.listen_to_tracking(self.records.tracking_uri)

    def _answered(self) -> None:
        outages.WATCH.up(outages.TRACKING)

    def key(self, trial_id: str, config: dict[str, Any]) -> Any:
        """What the tracker's records are keyed by: the trial's number (the same across
        resumes, where Ray's trial id is not)."""
        return trial_number(config)

    def running(self, trial: Any) -> RunningTrial:
        """`trial` as the tracker writes it: known, found in MLflow, or made with a new run."""
        key = self.key(trial.trial_id, trial.config)
        if key not in self.trials:
            number = trial_number(trial.config)
            found = self._find(number) if self.resumed else None
            self.trials[key] = found or self._create(number, trial)
        return self.trials[key]

    def finished(self, trial: Any) -> bool:
        """Whether `trial` already has its outcome (a resumed trial Ray thought was running)."""
        return self.running(trial).outcome != Outcome.RUNNING

    def _create(self, number: int, trial: Any) -> RunningTrial:
        config = trial.config
        name = run_name(number, {k: config[k] for k in self.sampled if k in config})
        tags = {TRIAL_TAG: str(number), RAY_TRIAL_TAG: trial.trial_id, "config": json.dumps(config)}
        if config.get("enqueued"):  # a config the study ran first (search.enqueue)
            tags["enqueued"] = config["enqueued"]
        # Every hyperparameter, defaults included: runs of studies that sample different knobs
        # compare side by side (weight_decay 0.0 rather than a blank).
        run_id = self.records.new_run(name, tags, resolve(config))
        self._answered()
        return RunningTrial(number, run_id, name, dict(config))

    def _find(self, number: int) -> RunningTrial | None:
        run = self.records.trial_run(number)
        if run is None:
            return None
        tags, run_id = run.data.tags, run.info.run_id
        config = json.loads(tags["config"])
        resolved = resolve(config)
        if len(run.data.params) < len(flatten(resolved)):
            # The driver died between making the run and logging its params.
            self.records.log_params(run_id, resolved)
        metrics = dict(run.data.metrics)
        return RunningTrial(
            number,
            run_id,
            run.info.run_name,
            config,
            Outcome(tags.get("outcome", Outcome.RUNNING.value)),
            tags.get("error", ""),
            # the epochs logged so far (the `epochs` tag is written only when the trial ends)
            self.records.epochs_logged(run_id),
            metrics,
            tags.get("node_id", ""),
            metrics.get(BEST_SO_FAR, math.nan),
            sized="num_params" in run.data.params,
        )

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.running(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        record = self.running(trial)
        # A result carries the epochs since the previous one (`history`); epochs replayed
        # from a checkpoint were logged already, and an ended trial is left as it ended.
        epochs = [m for m in result.get("history") or [result] if int(m["epoch"]) > record.epochs]
        if record.outcome != Outcome.RUNNING or not epochs:
            return
        metrics = []
        for epoch_metrics in epochs:
            epoch = int(epoch_metrics["epoch"])
            record.epochs = epoch
            record.metrics = {k: float(v) for k, v in epoch_metrics.items() if logged(k)}
            value = record.metrics.get(self.metric, math.nan)
            if finite(value) and not better(record.best, value, self.mode):
                record.best = value
            when = int(epoch_metrics.get("wall_time", time.time()) * 1000)
            metrics += [Metric(k, v, when, epoch) for k, v in record.metrics.items()]
            if finite(record.best):
                metrics.append(Metric(BEST_SO_FAR, record.best, when, epoch))
        if result.get("restored"):
            # Patience brought the best epoch's weights back: their metrics are the run's
            # last values, one step after the last epoch trained (as MLflow's own Keras
            # autologging logs restored weights), and its score.
            restored = {k: float(v) for k, v in result.items() if logged(k) and k != "epoch_time"}
            for flag in ("patience_stopped", "best_epoch", "stopped_epoch", "diverged"):
                restored.pop(flag, None)
            flags = ("patience_stopped", "best_epoch", "stopped_epoch")
            record.metrics = {
                **restored,
                **{k: record.metrics[k] for k in flags if k in record.metrics},
            }
            metrics += [Metric(k, v, when, record.epochs + 1) for k, v in restored.items()]
        if GPU_PEAK in result:  # a GPU trial's peak memory so far, at the result's last epoch
            metrics.append(Metric(GPU_PEAK, float(result[GPU_PEAK]), when, record.epochs))
        params = []
        if "num_params" in result and not record.sized:  # the trial built its model
            params, record.sized = [Param("num_params", str(int(result["num_params"])))], True
        tags = []
        if result.get("node_id") and result["node_id"] != record.node:
            record.node = result["node_id"]
            tags = [
                RunTag("node_id", record.node),
                RunTag("node_ip", str(result.get("node_ip", ""))),
                RunTag("hostname", str(result.get("hostname", ""))),
                RunTag("device", str(result.get("device", ""))),
                *([RunTag(GPU_TAG, str(result[GPU_TAG]))] if GPU_TAG in result else []),
            ]
        self.records.log(record.run_id, metrics, params, tags)
        self._answered()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.running(trial)
        self.records.tag(record.run_id, "retries", str(trial.num_failures))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.running(trial)
        if record.outcome == Outcome.RUNNING:
            last_epoch = TrialConfig.parse(trial.config).run.last_epoch
            last = {**record.metrics, "epoch": record.epochs} if record.epochs else None
            self._finish(record, decide(last, metric=self.metric, last_epoch=last_epoch))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.running(trial)
        if record.outcome != Outcome.RUNNING:
            return
        if trial.error_file and Path(trial.error_file).exists():
            # the full traceback stays in the trial's folder and goes on its run
            self.records.attach(record.run_id, trial.error_file)
        self._finish(
            record, decide(None, metric=self.metric, last_epoch=0, error=last_error(trial))
        )

    def _finish(self, trial: RunningTrial, decision: Any) -> None:
        trial.outcome, trial.error = decision.outcome, decision.error
        self.records.end(trial.run_id, trial.outcome, trial.epochs, trial.error)
        self._answered()


def last_error(trial: Any) -> str:
    """The error type and message of a Ray trial's last failure (its traceback's last line)."""
    if not trial.error_file or not Path(trial.error_file).exists():
        return "unknown error"
    lines = Path(trial.error_file).read_text().strip().splitlines()
    return lines[-1].strip()[:500] if lines else "unknown error"


class StudyStopper(tune.Stopper):
    """Stops a trial whose study metric is not finite (NaN or infinity: it ends as diverged),
    and, at its first result, a trial that had already ended before a resume."""

    def __init__(self, tracker: MlflowTracker) -> None:
        self.tracker = tracker

    def __call__(self, trial_id: str, result: dict) -> bool:
        if not finite(result.get(self.tracker.metric, 0.0)):
            return True
        record = self.tracker.trials.get(self.tracker.key(trial_id, result["config"]))
        return record is not None and record.outcome != Outcome.RUNNING

    def stop_all(self) -> bool:
        return False
