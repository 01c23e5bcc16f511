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
# made 20-ms digits epochs 5x slower (benchmarks/history/overhead.md). Rung,
# checkpoint, last and diverged epochs are always reported at once, so ASHA decides as before.
REPORT_EVERY_S = 1.0

# What a trial on a GPU adds to its results, for its MLflow run (study.engines.tracking): the GPU's
# model, and the most memory the trial's tensors took on it so far (in MiB).
GPU_TAG = "gpu"
GPU_PEAK = "gpu_peak_memory_mib"


def device_tags(dev: torch.device) -> dict[str, str]:
    """The device a trial trains on and, on a GPU, the GPU's model."""
    tags = {"device": str(dev)}
    if dev.type == "cuda":
        tags[GPU_TAG] = torch.cuda.get_device_name(dev)
    return tags


def gpu_memory(dev: torch.device) -> dict[str, float]:
    """The peak memory this process allocated on its GPU since the trial started, in MiB
    (torch.cuda.max_memory_allocated); nothing on the CPU."""
    if dev.type != "cuda":
        return {}
    return {GPU_PEAK: torch.cuda.max_memory_allocated(dev) / 2**20}


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
    dev = device()
    if dev.type == "cuda":  # the actor may have run another trial before (Tune reuses actors)
        torch.cuda.reset_peak_memory_stats(dev)
    where = {**device_tags(dev), "node_id": ray.get_runtime_context().get_node_id()}
    history: list[dict[str, float]] = []
    last_report = time.monotonic()

    def report(metrics: dict[str, Any], state: dict[str, Any]) -> None:
        nonlocal last_report
        final = metrics.get("final")  # patience restored the best epoch's weights
        epoch_metrics = {k: v for k, v in metrics.items() if k != "final"}
        history.append({**epoch_metrics, "wall_time": time.time()})
        epoch = metrics["epoch"]
        # A non-finite metric goes out at once too: the study ends such a trial as diverged.
        keep = (
            epoch in checkpoint_epochs
            or epoch == last_epoch
            or "diverged" in metrics
            or "patience_stopped" in metrics
            or not all(finite(value) for value in epoch_metrics.values())
        )
        if not keep and time.monotonic() - last_report < REPORT_EVERY_S:
            return
        # The epochs go out as `history`; the result itself is what the trial ends with (the
        # restored weights' metrics, `restored`, when patience brought the best epoch back).
        result = {**epoch_metrics, **where, **gpu_memory(dev), "history": list(history)}
        if final:
            result.update(final, restored=1.0)
        history.clear()
        if keep:
            with tempfile.TemporaryDirectory() as folder:
                torch.save(state, Path(folder) / STATE_FILE)
                tune.report(result, checkpoint=tune.Checkpoint.from_directory(folder))
        else:
            tune.report(result)
        last_report = time.monotonic()

    train(config, trial_data(config, data), report, state)
