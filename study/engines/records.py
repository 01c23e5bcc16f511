"""A study's MLflow records, and their one owner: `StudyRecords` alone reads and writes the
study's runs (the parent run, a child run per trial, the runs of `study ablate` and
`study confirm` nested beside them) and hands out the core's `TrialRecord`s. No Ray."""

import json
import math
import time
from pathlib import Path
from typing import Any

import yaml
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient

from study.core import Layout, Outcome, TrialConfig
from study.core.driver import stores_made
from study.core.record import BEST_SO_FAR, TrialRecord

EXPERIMENT_KIND = {"mlflow.experimentKind": "custom_model_development"}
PARENT_TAG = "mlflow.parentRunId"
TRIAL_TAG = "trial"  # the trial number, stable across resumes
RAY_TRIAL_TAG = "ray.trial_id"
ROLE_TAG = "study.role"  # the study's parent run, or an ablation, confirm or retrain run
PARENT_ROLE, RETRAIN_ROLE = "parent", "retrain"
GROUP_TAG = "repeat.group"  # an ablation's variant, a confirmation's trial
SEED_TAG = "repeat.seed"
# The MLflow run status of each outcome: red in the UI for a trial that went wrong only (an
# early-stopped trial ended as ASHA meant it to; its `outcome` tag tells it apart).
STATUS = {
    Outcome.COMPLETED: "FINISHED",
    Outcome.PATIENCE_STOPPED: "FINISHED",
    Outcome.EARLY_STOPPED: "FINISHED",
    Outcome.FAILED: "FAILED",
    Outcome.DIVERGED: "FAILED",
}
# Outcomes a repeat's run keeps: a run that raised (failed) is trained again by the next call.
KEPT = (Outcome.COMPLETED.value, Outcome.PATIENCE_STOPPED.value, Outcome.DIVERGED.value)
BATCH = 1000  # MLflow's limit of metrics per log_batch (100 for params)


def flatten(mapping: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """{"a": {"b": 1}} -> {"a.b": 1}."""
    flat: dict[str, Any] = {}
    for key, value in mapping.items():
        if isinstance(value, dict):
            flat.update(flatten(value, f"{prefix}{key}."))
        else:
            flat[f"{prefix}{key}"] = value
    return flat


def record_of(run: Any) -> TrialRecord:
    """The record a trial's (or a repeat's) child run holds."""
    tags = run.data.tags
    return TrialRecord(
        int(tags.get(TRIAL_TAG, 0)),
        Outcome(tags.get("outcome", Outcome.RUNNING.value)),
        int(tags.get("epochs", 0)),
        dict(run.data.metrics),
        TrialConfig.parse(json.loads(tags["config"])),
        run.info.run_id,
        run.info.run_name,
        tags.get("error", ""),
        tags.get("node_id", ""),
    )


def reading_client(tracking_uri: str) -> MlflowClient | None:
    """A client of the store at `tracking_uri`, None for a local store that does not exist
    (MLflow's client makes one when it opens it)."""
    store = tracking_uri.removeprefix("sqlite:///")
    if tracking_uri.startswith("sqlite:") and not Path(store).exists():
        return None
    return MlflowClient(tracking_uri)


def find_experiment(client: MlflowClient, layout: Layout) -> str | None:
    """The id of the study's experiment, None when there is none yet."""
    experiment = client.get_experiment_by_name(layout.experiment)
    return experiment.experiment_id if experiment is not None else None


class StudyRecords:
    """The MLflow records of one study: its experiment and parent run (None before it is made).
    Pickled (Ray pickles the callbacks that hold it) as its store's URI and ids."""

    def __init__(self, client: MlflowClient, experiment_id: str, parent_id: str | None) -> None:
        self.client, self.experiment_id, self.parent_id = client, experiment_id, parent_id

    def __getstate__(self) -> dict[str, Any]:
        return {"uri": self.tracking_uri, "ids": (self.experiment_id, self.parent_id)}

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__init__(MlflowClient(state["uri"]), *state["ids"])

    @property
    def tracking_uri(self) -> str:
        return self.client.tracking_uri

    @classmethod
    def reading(cls, layout: Layout) -> "StudyRecords | None":
        """The study's records, reading only; None where it has no parent run (yet). A local
        store that does not exist is not made."""
        with stores_made(layout):  # a store another driver is making is opened once made
            client = reading_client(layout.tracking_uri)
        experiment_id = client and find_experiment(client, layout)
        if experiment_id is None:
            return None
        records = cls(client, experiment_id, None)
        records.parent_id = records.newest_parent()
        return records if records.parent_id else None

    @classmethod
    def of_run(cls, tracking_uri: str, run_id: str) -> "StudyRecords":
        """The records of the study whose experiment holds `run_id` (an exported trial's)."""
        client = MlflowClient(tracking_uri)
        return cls(client, client.get_run(run_id).info.experiment_id, None)

    @classmethod
    def opened(cls, layout: Layout) -> "StudyRecords":
        """The study's records, its experiment made (artifacts under the root) if new; the
        parent run is the newest one, None when there is none yet."""
        client = MlflowClient(layout.tracking_uri)
        experiment_id = find_experiment(client, layout)
        if experiment_id is None:
            location = layout.artifacts.as_uri() if layout.local_tracking else None
            experiment_id = client.create_experiment(
                layout.experiment, artifact_location=location, tags=EXPERIMENT_KIND
            )
        records = cls(client, experiment_id, None)
        records.parent_id = records.newest_parent()
        return records

    # -- the parent run --------------------------------------------------------------

    def newest_parent(self) -> str | None:
        """The id of the newest parent run of the study's experiment."""
        runs = self.client.search_runs(
            [self.experiment_id],
            filter_string=f"tags.`{ROLE_TAG}` = '{PARENT_ROLE}'",
            order_by=["attributes.start_time DESC"],
            max_results=1,
        )
        return runs[0].info.run_id if runs else None

    def new_parent(
        self, name: str, params: dict[str, Any], spec_text: str, found: dict[str, Any]
    ) -> str:
        """A new parent run for study `name`, holding its spec (`params` and the file) and what
        preflight found of its data and model; returns its id."""
        tags = {ROLE_TAG: PARENT_ROLE, **EXPERIMENT_KIND}
        self.parent_id = self.client.create_run(
            self.experiment_id, run_name=name, tags=tags
        ).info.run_id
        self.log_params(self.parent_id, {**params, "found": found})
        self.client.log_text(self.parent_id, spec_text, "spec.yaml")
        self.client.log_text(self.parent_id, yaml.safe_dump(found, sort_keys=False), "found.yaml")
        return self.parent_id

    def log_inputs(self, run_id: str, inputs: list[Any]) -> None:
        """MLflow dataset inputs (study.engines.stores.dataset_input) on `run_id`."""
        self.client.log_inputs(run_id, datasets=inputs)

    def status(self, run_id: str) -> str:
        """The MLflow status of `run_id` (RUNNING, FINISHED, FAILED, KILLED)."""
        return self.client.get_run(run_id).info.status

    def parent_tags(self) -> dict[str, str]:
        """The parent run's tags (search.warm_start's and search.terminate's among them)."""
        return self.client.get_run(self.parent_id).data.tags if self.parent_id else {}

    def set_status(self, run_id: str, status: str) -> None:
        """End `run_id` as `status` (FINISHED, FAILED, KILLED), or open it again (RUNNING)."""
        if status == "RUNNING":
            self.client.update_run(run_id, status="RUNNING")
        else:
            self.client.set_terminated(run_id, status)

    def finish_parent(
        self, trials: list[TrialRecord], best: list[TrialRecord], metric: str, csv: Path
    ) -> None:
        """Log the results table, the trials per outcome and the best trial on the parent
        run: its metrics under their own names (the study metric's value also as best_so_far)
        and its hyperparameters as params, so that the parent's row reads as the study's result
        and sorts with the trials; its metrics also as best_*, its run and its config."""
        parent = self.parent_id
        self.client.log_artifact(parent, str(csv))
        outcomes = [t.outcome.value for t in trials]
        values = {f"trials_{o}": outcomes.count(o) for o in set(outcomes)}
        if best:
            top = best[0]
            ended = {k: v for k, v in top.metrics.items() if k != BEST_SO_FAR}
            values |= {**ended, metric: top.metrics[metric], BEST_SO_FAR: top.metrics[metric]}
            values |= {f"best_{k}": v for k, v in ended.items()}
        self.log_values(parent, values)
        if not best:
            return
        self.client.set_tag(parent, "best_run_id", top.run_id)
        self.client.set_tag(parent, "best_trial", top.name)
        config = yaml.safe_dump(top.config.flat(), sort_keys=False)
        self.client.log_text(parent, config, "best_config.yaml")
        logged = self.client.get_run(parent).data.params
        # params cannot change: a resumed study whose best trial changed keeps the first
        hyperparameters = {k: v for k, v in flatten(top.config.hyperparameters).items()}
        self.log_params(parent, {k: v for k, v in hyperparameters.items() if k not in logged})

    # -- trials' child runs ------------------------------------------------------------

    def child_runs(self, parent_id: str | None = None, **tags: str) -> list[Any]:
        """The child runs of `parent_id` (the study's parent run by default) with `tags`,
        oldest first."""
        query = " and ".join(
            [f"tags.`{PARENT_TAG}` = '{parent_id or self.parent_id}'"]
            + [f"tags.`{k}` = '{v}'" for k, v in tags.items()]
        )
        return self.client.search_runs(
            [self.experiment_id],
            filter_string=query,
            order_by=["attributes.start_time ASC"],
            max_results=50000,
        )

    def trial_runs(self) -> list[Any]:
        """Every trial's child run (not the runs of `study ablate` and `study confirm`
        nested beside them, which carry no trial number)."""
        return [run for run in self.child_runs() if TRIAL_TAG in run.data.tags]

    def trials(self) -> list[TrialRecord]:
        """Every trial of the study as a record, by trial number."""
        return sorted((record_of(run) for run in self.trial_runs()), key=lambda r: r.number)

    def histories(self, trials: list[TrialRecord], keys: list[str]) -> list[tuple]:
        """Every logged value of `keys` of each trial: (trial number, key, epoch, value)."""
        return [
            (trial.number, key, point.step, point.value)
            for trial in trials
            for key in keys
            for point in self.client.get_metric_history(trial.run_id, key)
        ]

    def attach_folder(self, run_id: str, folder: str, under: str) -> None:
        """A folder's files as artifacts of `run_id`, under `under`."""
        self.client.log_artifacts(run_id, folder, under)

    def trial_run(self, number: int) -> Any | None:
        """Trial `number`'s run, None when it has none."""
        runs = self.child_runs(**{TRIAL_TAG: str(number)})
        return runs[0] if runs else None

    def new_run(self, name: str, tags: dict[str, str], params: dict[str, Any]) -> str:
        """A new child run of the study's parent run (or of `tags`' own parent), running,
        with `params`; returns its id. A run that MLflow's client retried making after the
        server went away may have been made twice: the first is kept, any other deleted."""
        from study.engines import outages

        tags = {PARENT_TAG: self.parent_id, "outcome": Outcome.RUNNING.value, **tags}
        retries = outages.RETRIES.count
        run_id = self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id
        if outages.RETRIES.count != retries and TRIAL_TAG in tags:
            runs = self.child_runs(tags[PARENT_TAG], **{TRIAL_TAG: tags[TRIAL_TAG]})
            for extra in runs[1:]:
                self.client.delete_run(extra.info.run_id)
            run_id = runs[0].info.run_id if runs else run_id
        self.log_params(run_id, params)
        return run_id

    def epochs_logged(self, run_id: str) -> int:
        """The epochs a run has logged (epoch_time is logged for every epoch trained)."""
        steps = self.client.get_metric_history(run_id, "epoch_time")
        return max((m.step for m in steps), default=0)

    def log(
        self,
        run_id: str,
        metrics: list[Metric] = (),
        params: list[Param] = (),
        tags: list[RunTag] = (),
    ) -> None:
        """One batched write (or more, past MLflow's limit per batch) on `run_id`."""
        metrics = list(metrics)
        for start in range(0, max(len(metrics), 1), BATCH):
            first = not start
            self.client.log_batch(
                run_id,
                metrics=metrics[start : start + BATCH],
                params=list(params) if first else [],
                tags=list(tags) if first else [],
            )

    def log_params(self, run_id: str, params: dict[str, Any]) -> None:
        """A flat (or nested) mapping as params, 100 at a time (MLflow's batch limit)."""
        items = [Param(k, str(v)) for k, v in flatten(params).items()]
        for start in range(0, len(items), 100):
            self.client.log_batch(run_id, params=items[start : start + 100])

    def log_values(self, run_id: str, values: dict[str, float]) -> None:
        """Single values (a study's or a repeat role's result) as metrics of `run_id`."""
        now = int(time.time() * 1000)
        self.log(run_id, metrics=[Metric(k, float(v), now, 0) for k, v in values.items()])

    def tag(self, run_id: str, key: str, value: str) -> None:
        self.client.set_tag(run_id, key, value)

    def attach(self, run_id: str, path: str) -> None:
        """A file (a failed trial's traceback) as an artifact of `run_id`."""
        self.client.log_artifact(run_id, path)

    def end(self, run_id: str, outcome: Outcome, epochs: int, error: str = "") -> None:
        """Close a trial's run: its outcome, epochs and error as tags, its status."""
        tags = [RunTag("outcome", outcome.value), RunTag("epochs", str(epochs))]
        if outcome == Outcome.EARLY_STOPPED:
            tags.append(RunTag("early_stopped_epoch", str(epochs)))
        if error:
            tags.append(RunTag("error", error))
        self.log(run_id, tags=tags)
        self.client.set_terminated(run_id, STATUS[outcome])

    def repair(self, ended: dict[int, tuple[str, int]]) -> None:
        """Close the runs of trials that ended (`ended`: trial number -> outcome and epochs,
        as Optuna recorded them) whose MLflow run a dead driver did not get to close."""
        for run in self.trial_runs():
            number = int(run.data.tags[TRIAL_TAG])
            if number not in ended or run.info.status != "RUNNING":
                continue
            outcome, epochs = ended[number]
            outcome = Outcome(outcome or run.data.tags.get("outcome") or Outcome.FAILED)
            if outcome == Outcome.RUNNING:  # the driver died before Optuna knew why
                outcome = Outcome.FAILED
            self.end(run.info.run_id, outcome, epochs)

    # -- the runs of `study ablate`, `study confirm` and `study train` ------------------

    def new_retrain(self, source_run_id: str, name: str, params: dict[str, Any]) -> str:
        """A run of `study train` beside (not under) the study's parent run, with `params`."""
        tags = {ROLE_TAG: RETRAIN_ROLE, "source_run_id": source_run_id}
        run = self.client.create_run(self.experiment_id, run_name=name, tags=tags)
        self.log_params(run.info.run_id, params)
        return run.info.run_id

    def log_series(self, run_id: str, steps: list[dict[str, float]]) -> None:
        """Values as metrics of `run_id`, one step per mapping of `steps`."""
        now = int(time.time() * 1000)
        self.log(
            run_id,
            metrics=[
                Metric(k, float(v), now, step)
                for step, values in enumerate(steps)
                for k, v in values.items()
            ],
        )

    def role_run(self, role: str, name: str, key: dict[str, str]) -> str:
        """The id of the run of `role` nested under the study's parent run with the tags `key`
        (the first made, when there are several), made if there is none."""
        found = self.child_runs(**{ROLE_TAG: role, **key})
        if found:
            return found[0].info.run_id
        tags = {PARENT_TAG: self.parent_id, ROLE_TAG: role, **key}
        return self.client.create_run(self.experiment_id, run_name=name, tags=tags).info.run_id

    def settle(
        self, role_id: str, wanted: set[tuple[str, int]], keep_failed: bool
    ) -> dict[tuple[str, int], TrialRecord]:
        """The finished child run of each wanted (group, seed) under the role's run, as a
        record; every other child run of a wanted key (left RUNNING by a driver that died, a
        second one, or failed unless `keep_failed`) is deleted. Runs of other keys (seeds
        beyond a smaller --seeds) are left as they are."""
        kept_outcomes = (*KEPT, Outcome.FAILED.value) if keep_failed else KEPT
        finished: dict[tuple[str, int], TrialRecord] = {}
        for run in self.child_runs(role_id):
            tags = run.data.tags
            key = (tags.get(GROUP_TAG, ""), int(tags.get(SEED_TAG, -1)))
            if key not in wanted:
                continue
            done = run.info.status != "RUNNING" and tags.get("outcome") in kept_outcomes
            if done and key not in finished:
                finished[key] = record_of(run)
            else:
                self.client.delete_run(run.info.run_id)
        return finished


def best_so_far(record: TrialRecord) -> float:
    """The best value of the study metric a trial's run logged so far (NaN: none yet)."""
    return record.metrics.get(BEST_SO_FAR, math.nan)


def delete_runs(layout: Layout) -> None:
    """Delete every run of the study's experiment (`run --replace`)."""
    client = MlflowClient(layout.tracking_uri)
    experiment_id = find_experiment(client, layout)
    if experiment_id is not None:
        for run in client.search_runs([experiment_id], max_results=50000):
            client.delete_run(run.info.run_id)
