"""The MLflow tracker of a running study: a Ray Tune callback in the driver that writes one
child run per trial under the study's parent run (records in `study.engines.records`), and the stopper
that ends a trial whose metric is not finite.

Only the driver writes to the store, and each Tune result (one or more epochs) costs one
batched `log_batch` call.
"""

import json
import math
import time
from pathlib import Path
from typing import Any

from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from ray import tune

from study.core import Outcome, TrialConfig, decide, finite, trial_number
from study.engines import outages
from study.engines.records import (
    BEST_SO_FAR,
    PARENT_TAG,
    RAY_TRIAL_TAG,
    STATUS,
    TRIAL_TAG,
    TrialRecord,
    better,
    flatten,
    log_params,
    record_of,
    run_name,
)
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


class MlflowTracker(tune.Callback):
    """Records each Ray trial as a child run nested under the study's parent run.

    A restored tracker (a resumed study) looks each trial's run up by the trial's number before
    it makes one, so a resumed trial keeps its run; epochs already logged are not logged again,
    and a trial that already ended is left as it ended. A new study's tracker (`resumed`
    False) has a parent run with no children yet, so it makes runs without looking.
    """

    def __init__(
        self,
        tracking_uri: str,
        experiment_id: str,
        parent_run_id: str,
        sampled: list[str],
        metric: str = "val_acc",
        mode: str = "max",
        resumed: bool = False,
    ) -> None:
        self.tracking_uri = tracking_uri
        self.metric, self.mode = metric, mode
        self.client = MlflowClient(tracking_uri)
        self.experiment_id = experiment_id
        self.parent_run_id = parent_run_id
        self.sampled = sampled
        self.records: dict[int, TrialRecord] = {}
        self.resumed = resumed

    def __getstate__(self) -> dict[str, Any]:  # Ray pickles callbacks with the experiment
        return {k: v for k, v in self.__dict__.items() if k not in ("client", "records")}

    def __setstate__(self, state: dict[str, Any]) -> None:
        client = MlflowClient(state["tracking_uri"])
        self.__dict__.update(state, client=client, records={}, resumed=True)

    def setup(self, **info: Any) -> None:
        # A tracking server that stops answering: MLflow's client retries each request for
        # minutes; the console hears of it once, and once when it answers again.
        outages.listen_to_tracking(self.tracking_uri)

    def _answered(self) -> None:
        outages.WATCH.up(outages.TRACKING)

    def key(self, trial_id: str, config: dict[str, Any]) -> Any:
        """What the tracker's records are keyed by: the trial's number (the same across
        resumes, where Ray's trial id is not)."""
        return trial_number(config)

    def record(self, trial: Any) -> TrialRecord:
        """The record of `trial`: known, found in MLflow, or made with a new child run."""
        number = self.key(trial.trial_id, trial.config)
        if number not in self.records:
            found = self._find(number) if self.resumed else None
            self.records[number] = found or self._create(number, trial)
        return self.records[number]

    def finished(self, trial: Any) -> bool:
        """Whether `trial` already has its outcome (a resumed trial Ray thought was running)."""
        return self.record(trial).outcome != Outcome.RUNNING

    def _create(self, number: int, trial: Any) -> TrialRecord:
        config = trial.config
        name = run_name(number, {k: config[k] for k in self.sampled if k in config})
        tags = {
            PARENT_TAG: self.parent_run_id,
            TRIAL_TAG: str(number),
            RAY_TRIAL_TAG: trial.trial_id,
            "outcome": Outcome.RUNNING.value,
            "config": json.dumps(config),
        }
        retries = outages.RETRIES.count
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        if outages.RETRIES.count != retries:  # the server may have made the run before it fell
            run = self._one_run(number, run)
        # Every hyperparameter, defaults included: runs of studies that sample different knobs
        # compare side by side (weight_decay 0.0 rather than a blank).
        log_params(self.client, run.info.run_id, resolve(config))
        self._answered()
        return TrialRecord(number, run.info.run_id, name, dict(config))

    def _one_run(self, number: int, made: Any) -> Any:
        """The trial's first run, any other deleted: a create_run that MLflow's client retried
        after the server went away may have made the run twice."""
        query = f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' and tags.`{TRIAL_TAG}` = '{number}'"
        runs = self.client.search_runs(
            [self.experiment_id], filter_string=query, order_by=["attributes.start_time ASC"]
        )
        for extra in runs[1:]:
            self.client.delete_run(extra.info.run_id)
        return runs[0] if runs else made

    def _find(self, number: int) -> TrialRecord | None:
        query = f"tags.`{PARENT_TAG}` = '{self.parent_run_id}' and tags.`{TRIAL_TAG}` = '{number}'"
        runs = self.client.search_runs([self.experiment_id], filter_string=query, max_results=1)
        if not runs:
            return None
        record = record_of(runs[0])
        resolved = resolve(record.config)
        if len(runs[0].data.params) < len(flatten(resolved)):
            # The driver died between making the run and logging its params.
            log_params(self.client, record.run_id, resolved)
        # The epochs logged so far (the `epochs` tag is written only when the trial ends);
        # epoch_time is logged for every epoch trained and for no restored step.
        steps = [m.step for m in self.client.get_metric_history(record.run_id, "epoch_time")]
        record.epochs = max(steps, default=0)
        record.best = record.last.get(BEST_SO_FAR, math.nan)
        return record

    def on_trial_start(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self.record(trial)

    def on_trial_result(
        self, iteration: int, trials: list, trial: Any, result: dict, **info: Any
    ) -> None:
        record = self.record(trial)
        # A result carries the epochs since the previous one (`history`); epochs replayed
        # from a checkpoint were logged already, and an ended trial is left as it ended.
        epochs = [m for m in result.get("history") or [result] if int(m["epoch"]) > record.epochs]
        if record.outcome != Outcome.RUNNING or not epochs:
            return
        metrics = []
        for epoch_metrics in epochs:
            epoch = int(epoch_metrics["epoch"])
            record.epochs = epoch
            record.last = {k: float(v) for k, v in epoch_metrics.items() if logged(k)}
            value = record.last.get(self.metric, math.nan)
            if finite(value) and not better(record.best, value, self.mode):
                record.best = value
            when = int(epoch_metrics.get("wall_time", time.time()) * 1000)
            metrics += [Metric(k, v, when, epoch) for k, v in record.last.items()]
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
            record.last = {**restored, **{k: record.last[k] for k in flags if k in record.last}}
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
        for start in range(0, len(metrics), 1000):  # MLflow's limit per batch
            first = not start
            self.client.log_batch(
                record.run_id,
                metrics=metrics[start : start + 1000],
                params=params if first else [],
                tags=tags if first else [],
            )
        self._answered()

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.record(trial)
        self.client.set_tag(record.run_id, "retries", str(trial.num_failures))

    def on_trial_complete(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.record(trial)
        if record.outcome == Outcome.RUNNING:
            last_epoch = TrialConfig.parse(trial.config).run.last_epoch
            last = {**record.last, "epoch": record.epochs} if record.epochs else None
            self._finish(record, decide(last, metric=self.metric, last_epoch=last_epoch))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        record = self.record(trial)
        if record.outcome != Outcome.RUNNING:
            return
        if trial.error_file and Path(trial.error_file).exists():
            # the full traceback stays in the trial's folder and goes on its run
            self.client.log_artifact(record.run_id, trial.error_file)
        self._finish(
            record, decide(None, metric=self.metric, last_epoch=0, error=last_error(trial))
        )

    def _finish(self, record: TrialRecord, decision: Any) -> None:
        outcome = decision.outcome
        record.outcome, record.error = outcome.value, decision.error
        tags = [RunTag("outcome", outcome.value), RunTag("epochs", str(record.epochs))]
        if outcome == Outcome.EARLY_STOPPED:
            tags.append(RunTag("early_stopped_epoch", str(record.epochs)))
        if record.error:
            tags.append(RunTag("error", record.error))
        self.client.log_batch(record.run_id, tags=tags)
        self.client.set_terminated(record.run_id, STATUS[outcome])
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
        record = self.tracker.records.get(self.tracker.key(trial_id, result["config"]))
        return record is not None and record.outcome != Outcome.RUNNING

    def stop_all(self) -> bool:
        return False
