"""Tracking cost: what recording a trial's epoch in MLflow costs the driver.

Part 1 times our MLflow callback (study.engines.tracking.MlflowTracker, one `log_batch` per result)
against the naive way (one `log_metric` call per metric), on the SQLite store and on a local
`mlflow server` started here on 127.0.0.1, with the same stream of per-epoch results of 16
trials. The callback runs in the Ray driver, so its time is time the trials wait for their next
round trip; the target is < 2% of a 1 s epoch.

Part 2 runs a real study with 16 trials at a time (fractional CPUs) on the SQLite store and
counts "database is locked" errors: in the trials, in the driver and in Ray's logs.

    python -m benchmarks.tracking
"""

import io
import math
import os
import statistics
import tempfile
import time
from contextlib import redirect_stderr
from pathlib import Path
from types import SimpleNamespace

from rich.console import Console

from benchmarks.common import arguments, mlflow_server, record
from study.commands.preflight import preflight
from study.commands.run import run_study
from study.core import Layout
from study.engines.cluster import connect
from study.engines.records import StudyRecords
from study.engines.tracking import MlflowTracker
from study.spec import StudySpec
from trainables import METRICS


def results_stream(trials: int, epochs: int) -> list[tuple[SimpleNamespace, dict]]:
    """Per-epoch results of `trials` trials, interleaved as concurrent trials report."""
    run = {"dataset": {"name": "digits"}, "model": {"name": "mlp"}, "epochs": epochs, "seed": 0}
    fakes = [
        SimpleNamespace(
            trial_id=f"t{i:05d}",
            config={"lr": 1e-3 * (i + 1), "dropout": 0.1, **run, "optuna_trial": i},
        )
        for i in range(trials)
    ]
    stream = []
    for epoch in range(1, epochs + 1):
        for fake in fakes:
            metrics = {k: 1.0 / (epoch + 1) for k in METRICS}
            metrics.update(epoch=epoch, val_acc=1 - math.exp(-epoch), epoch_time=1.0)
            stream.append((fake, {**metrics, "node_id": "node", "history": [metrics]}))
    return stream


def time_tracker(uri: str, root: Path, trials: int, epochs: int, naive: bool) -> list[float]:
    """Seconds per result of the tracker (or of one log_metric call per metric) on `uri`."""
    name = f"bench-tracking-{'naive' if naive else 'ours'}"
    records = StudyRecords.opened(Layout(root, name, name, uri, "", str(root / "ray")))
    client = records.client
    records.parent_id = client.create_run(records.experiment_id, run_name="parent").info.run_id
    tracker = MlflowTracker(records, ["lr", "dropout"])
    stream = results_stream(trials, epochs)
    for fake, _ in stream[:trials]:
        tracker.on_trial_start(0, [], fake)
    seconds = []
    for fake, result in stream:
        started = time.perf_counter()
        if naive:
            run_id = tracker.trials[fake.config["optuna_trial"] + 1].run_id
            for key in METRICS:
                client.log_metric(run_id, key, result[key], step=int(result["epoch"]))
        else:
            tracker.on_trial_result(0, [], fake, result)
        seconds.append(time.perf_counter() - started)
    for fake, _ in stream[:trials]:
        tracker.on_trial_complete(0, [], fake)
    return seconds


def locked_study(root: Path, concurrent: int, quick: bool) -> tuple[int, int, int]:
    """Run a study with `concurrent` trials at a time on the SQLite store; returns (trials
    completed, trials in all, 'database is locked' messages seen)."""
    spec = StudySpec.model_validate(
        {
            "name": "bench-tracking-concurrency",
            "search": {
                "sampler": "random",
                "num_samples": 2 * concurrent,
                "max_concurrent": concurrent,
            },
            "scheduler": {"name": "none", "max_epochs": 2 if quick else 5},
            "resources": {"cpu": round((os.cpu_count() or 1) / concurrent, 4)},
        }
    )
    checked = preflight(spec, root)
    connect(spec)
    stderr = io.StringIO()
    with redirect_stderr(stderr):
        ranked = run_study(spec, root, checked, Console(file=io.StringIO()))
    texts = [stderr.getvalue(), *(trial.error for trial in ranked)]
    import ray

    logs = Path(ray._private.worker._global_node.get_session_dir_path()) / "logs"
    for path in logs.glob("*"):
        if path.is_file():
            texts.append(path.read_text(errors="replace"))
    locked = sum(text.count("database is locked") for text in texts)
    completed = sum(trial.outcome == "completed" for trial in ranked)
    return completed, len(ranked), locked


def main() -> None:
    args = arguments("Tracking cost per result: SQLite vs a local MLflow server.")
    trials, epochs, concurrent = (2, 2, 2) if args.quick else (16, 30, 16)
    rows = []
    worst = 0.0
    with tempfile.TemporaryDirectory() as folder:
        root = Path(folder)
        with mlflow_server(root) as server_uri:
            stores = {"SQLite file": f"sqlite:///{root / 'mlflow.db'}", "local server": server_uri}
            for store, uri in stores.items():
                naive = time_tracker(uri, root, trials, epochs, naive=True)
                ours = time_tracker(uri, root, trials, epochs, naive=False)
                mean_ours, mean_naive = statistics.mean(ours), statistics.mean(naive)
                p95 = statistics.quantiles(ours, n=20)[-1] if len(ours) > 1 else ours[0]
                worst = max(worst, mean_ours)
                rows.append(
                    [
                        store,
                        len(ours),
                        f"{mean_naive * 1000:.1f}",
                        f"{mean_ours * 1000:.1f}",
                        f"{p95 * 1000:.1f}",
                        f"{mean_naive / mean_ours:.1f}x",
                        f"{mean_ours / 1.0 * 100:.2f}%",
                    ]
                )
        completed, total, locked = locked_study(root / "concurrency", concurrent, args.quick)
    met_cost = "met" if worst < 0.02 else "NOT met"
    met_locked = "met" if locked == 0 and completed == total else "NOT met"
    notes = (
        f"{trials} trials x {epochs} epochs, one result per epoch (epochs of 1 s or more are "
        f"reported one by one; shorter ones arrive together in one result, one call for all). "
        f"Naive: one `log_metric` call per metric ({len(METRICS)}). Target < 2% of a 1 s epoch: "
        f"{met_cost} (worst mean {worst * 1000:.1f} ms).\n\n"
        f"{concurrent} trials at a time on the SQLite store ({total} trials): {completed} "
        f"completed, **{locked} 'database is locked'** in the driver, the trials and Ray's logs "
        f"(target 0: {met_locked}). Only the driver writes to the store, so there is no "
        f"writer to collide with."
    )
    headers = [
        "store",
        "results",
        "naive ms/result",
        "ours ms/result",
        "ours p95 ms",
        "naive / ours",
        "of a 1 s epoch",
    ]
    record("Tracking cost", args, headers, rows, notes)


if __name__ == "__main__":
    main()
