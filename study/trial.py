"""The Ray trial: the plain training loop reporting to Tune, checkpointing and resuming.

Ray imports this module in every trial's worker process, so it imports no more than a trial
needs (Ray Tune, torch, trainables): not MLflow, Optuna or the rest of `study`.
"""

import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import ray
import torch
from ray import tune

from study.core import STATE_FILE, TrialConfig, finite
from trainables import Data, fit
from trainables.loading import trial_data
from trainables.loop import device, load_state

# Epochs shorter than this reach Tune together in one result (its `history`): each result is
# a round trip through the driver (Tune, Optuna, MLflow) during which the trial waits, which
# made 20-ms digits epochs 5x slower (benchmarks/RESULTS.md, orchestration overhead). Rung,
# checkpoint, last and diverged epochs are always reported at once, so ASHA decides as before.
REPORT_EVERY_S = 1.0


def trainable(
    config: dict[str, Any],
    data: Data,
    checkpoint_epochs: frozenset[int],
    train: Callable[..., Any] = fit,
) -> None:
    """One Ray trial: the training loop `train` (trainables.fit or one with its signature),
    reporting to Tune at least every REPORT_EVERY_S (each result carries the epochs since the
    last one as `history`), checkpointing at `checkpoint_epochs` and at its end, and
    continuing from its last checkpoint when retried. A config that sets knobs of a loader
    plug-in trains on what the loader gives for them."""
    state = None
    checkpoint = tune.get_checkpoint()
    if checkpoint:
        with checkpoint.as_directory() as folder:
            state = load_state(Path(folder) / STATE_FILE)
    last_epoch = TrialConfig.parse(config).run.last_epoch
    where = {"device": str(device()), "node_id": ray.get_runtime_context().get_node_id()}
    history: list[dict[str, float]] = []
    last_report = time.monotonic()

    def report(metrics: dict[str, float], state: dict[str, Any]) -> None:
        nonlocal last_report
        history.append({**metrics, "wall_time": time.time()})
        epoch = metrics["epoch"]
        # A non-finite metric goes out at once too: the study ends such a trial as diverged.
        keep = (
            epoch in checkpoint_epochs
            or epoch == last_epoch
            or "diverged" in metrics
            or not all(finite(value) for value in metrics.values())
        )
        if not keep and time.monotonic() - last_report < REPORT_EVERY_S:
            return
        result = {**metrics, **where, "history": list(history)}
        history.clear()
        if keep:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(state, Path(folder) / STATE_FILE)
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(result)
        last_report = time.monotonic()

    train(config, trial_data(config, data), report, state)
