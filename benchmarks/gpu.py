"""The GPU path in one command: does a study run on a GPU, how much faster is our GPU-resident
loop than a DataLoader, and how many trials does one GPU hold.

On a machine with CUDA, within --budget minutes (default 8), in this order:

  runs        the default study as shipped, and studies/cifar10_cnn.yaml for 2 epochs with
              resources.gpu: 1, through the `study` command; each trial's MLflow run must name
              its device (a GPU trial's also the GPU's model and its peak memory).
  tests       pytest -m cuda: tests/test_gpu.py (placement, bf16, channels_last, checkpoints
              between GPU and CPU, torch.compile, what a GPU trial reports).
  throughput  our loop (the data set resident on the GPU, batches by index) against the same
              model and optimizer fed by DataLoader(num_workers=4, pin_memory=True): the MLP of
              studies/mnist_batchnorm.yaml on MNIST-size data, the CNN of cifar10_cnn.yaml on
              CIFAR-10-size data, samples/s of training epochs; bf16 autocast, channels_last
              and torch.compile each turned from the loop's GPU default to the other way.
  packing     the CNN study at resources.gpu 1, 0.5, 0.25 and 0.125 (1, 2, 4, 8 trials at once
              per GPU), every trial the same few epochs: trial-epochs per GPU-hour while all of
              them run, GPU utilisation and memory sampled with nvidia-smi, the host's CPU,
              each trial's peak memory as its MLflow run recorded it.

Its data are written first, in their real on-disk formats at their real sizes (MNIST's IDX
files, 60,000 training images; CIFAR-10's python batches, 50,000; tests/data_files.py) in a
temporary folder: a GPU machine may reach no network. A step that would run past the budget is
stopped and what it finished is reported. Each step's table is recorded (common.record) with
the GPU, driver, torch and CUDA versions; a one-screen summary ends the output; the exit status
is 1 when a step failed. Without CUDA, --dry-run runs the same steps at tiny sizes on the CPU
(tests/test_benchmarks.py does, so that this script cannot rot).

    python -m benchmarks.gpu [--budget 8] [--steps runs,tests,throughput,packing] [--json F]
    python -m benchmarks.gpu --dry-run
"""

import argparse
import json
import os
import signal
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import ROOT, arguments, record

STEPS = ("runs", "tests", "throughput", "packing")
CNN_STUDY = ROOT / "studies" / "cifar10_cnn.yaml"
MLP_STUDY = ROOT / "studies" / "mnist_batchnorm.yaml"
RESERVE_S = 20  # kept from the budget for the tables, the summary and RESULTS.md


@dataclass(frozen=True)
class Sizes:
    """How much of everything: the real sizes on a GPU, tiny ones for --dry-run."""

    mnist: tuple[int, int]  # training and test images in the IDX files
    cifar_per_batch: int  # images per CIFAR-10 batch file (five training batches, one test)
    default_study: tuple[str, ...]  # overrides of the default study (none: as shipped)
    cnn_trials: int  # of the 2-epoch CNN study
    timed_epochs: int  # per throughput measurement, after one untimed epoch
    packing: tuple[float, ...]  # resources.gpu of each packing level
    packing_epochs: int  # every packing trial's epochs


FULL = Sizes((60000, 10000), 10000, (), 2, 2, (1, 0.5, 0.25, 0.125), 4)
TINY = Sizes(
    (600, 100), 60,
    ("search.num_samples=2", "search.max_concurrent=1", "scheduler.max_epochs=3",
     "scheduler.grace_period=1"),
    2, 1, (1, 0.5), 2
)  # fmt: skip


class Budget:
    """The seconds left of --budget minutes, less RESERVE_S for the report."""

    def __init__(self, minutes: float) -> None:
        self.minutes, self.started = minutes, time.monotonic()
        self.end = self.started + minutes * 60 - RESERVE_S

    def left(self) -> float:
        return self.end - time.monotonic()

    def share(self, fraction: float) -> float:
        """Seconds a child may take: `fraction` of the budget and no more than is left (one
        that hangs leaves the later steps their time)."""
        return min(self.left(), fraction * self.minutes * 60)

    def used(self) -> float:
        return time.monotonic() - self.started


@dataclass
class Context:
    """What every step works with."""

    folder: Path  # temporary: data, study roots, logs
    sizes: Sizes
    cuda: bool
    gpus: int
    budget: Budget
    machine: str  # the GPU line of every table

    @property
    def data(self) -> Path:
        return self.folder / "data"


@dataclass
class Step:
    """What one step did. `why` is empty when it did all it should; `table` is (title,
    headers, rows, notes) for RESULTS.md; `lines` its part of the summary."""

    name: str
    status: str = "not run"  # done, failed, stopped (at the budget), not run
    seconds: float = 0.0
    why: str = ""
    figures: dict[str, Any] = field(default_factory=dict)
    table: tuple[str, list[str], list[list[Any]], str] | None = None
    lines: list[str] = field(default_factory=list)


# ----------------------------------------------------------------------------------------------
# Child processes, stopped at their share of the budget.


def child_env() -> dict[str, str]:
    """This checkout first on the import path (children and Ray's workers import it, whether
    it is installed or not), Ray without usage reports."""
    path = os.pathsep.join(p for p in (str(ROOT), os.environ.get("PYTHONPATH")) if p)
    return {**os.environ, "PYTHONPATH": path, "RAY_USAGE_STATS_ENABLED": "0", "COLUMNS": "160"}


def run_child(command: list[str], timeout: float, log: Path) -> int | None:
    """Run `command` from the repository root in a process group of its own, its output to
    `log`; after `timeout` seconds the whole group (a study's local Ray with it) is stopped and
    None returned, else its exit status."""
    with log.open("w") as out:
        child = subprocess.Popen(
            command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT, env=child_env(),
            start_new_session=True
        )  # fmt: skip
        try:
            return child.wait(timeout=max(timeout, 1))
        except subprocess.TimeoutExpired:
            for sig in (signal.SIGTERM, signal.SIGKILL):
                try:
                    os.killpg(child.pid, sig)
                    child.wait(timeout=15)
                    break
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    continue
            return None


def tail(log: Path, lines: int = 15) -> str:
    """The last lines of a child's output."""
    return "\n".join(log.read_text(errors="replace").splitlines()[-lines:]) if log.exists() else ""


def exit_problem(code: int | None) -> str:
    """'' for a child that succeeded, else what became of it."""
    return {0: "", None: "stopped at the budget"}.get(code, f"exit status {code}")


# ----------------------------------------------------------------------------------------------
# The machine: GPU, driver, torch and CUDA; nvidia-smi and the host's CPUs sampled.


def nvidia_smi(*query: str) -> list[list[str]]:
    """One row per GPU of `nvidia-smi --query-gpu=...` (none without nvidia-smi)."""
    try:
        done = subprocess.run(
            ["nvidia-smi", f"--query-gpu={','.join(query)}", "--format=csv,noheader,nounits"],
            capture_output=True,
            text=True,
            timeout=20,
        )
    except (OSError, subprocess.TimeoutExpired):
        return []
    return [[cell.strip() for cell in line.split(",")] for line in done.stdout.splitlines()]


def gpu_line(cuda: bool) -> str:
    """The GPUs and their memory, the driver, torch and CUDA, in one line."""
    import torch

    if not cuda:
        return f"no GPU: a dry run on the CPU, torch {torch.__version__}"
    rows = nvidia_smi("name", "driver_version", "memory.total")
    gpus = ", ".join(f"{name} ({int(mib) / 1024:.0f} GiB)" for name, _, mib in rows)
    driver = rows[0][1] if rows else "unknown"
    return (
        f"{gpus or torch.cuda.get_device_name(0)}, driver {driver}, "
        f"torch {torch.__version__}, CUDA {torch.version.cuda}"
    )


def cpu_times() -> tuple[float, float]:
    """The host's busy and total CPU time so far (/proc/stat, in ticks)."""
    try:
        ticks = [float(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0.0, 0.0
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # less idle and iowait


class Sampler(threading.Thread):
    """Every `every` seconds: the GPUs' mean utilisation (nvidia-smi: the % of the time a
    kernel ran) and used memory (MiB, all GPUs), and the share of the host's CPUs busy."""

    def __init__(self, every: float = 0.5) -> None:
        super().__init__(daemon=True)
        self.every, self.stopped = every, threading.Event()
        self.samples: list[tuple[float, float | None, float | None, float]] = []

    def run(self) -> None:
        busy, total = cpu_times()
        while not self.stopped.wait(self.every):
            rows = nvidia_smi("utilization.gpu", "memory.used")
            now_busy, now_total = cpu_times()
            cpu = (now_busy - busy) / (now_total - total) if now_total > total else 0.0
            busy, total = now_busy, now_total
            util = sum(float(r[0]) for r in rows) / len(rows) if rows else None
            memory = sum(float(r[1]) for r in rows) if rows else None
            self.samples.append((time.time(), util, memory, cpu))

    def stop(self) -> None:
        self.stopped.set()
        self.join(timeout=30)

    def summary(self, start: float | None, stop: float | None) -> dict[str, float | None]:
        """Mean GPU utilisation and CPU busy between `start` and `stop` (over every sample
        where they are None or hold none), and the most GPU memory any sample saw."""
        inside = [s for s in self.samples if start is None or start <= s[0] <= stop]
        inside = inside or self.samples

        def mean(values: list[float | None]) -> float | None:
            known = [v for v in values if v is not None]
            return sum(known) / len(known) if known else None

        memory = [s[2] for s in self.samples if s[2] is not None]
        return {
            "gpu_util": mean([s[1] for s in inside]),
            "gpu_memory_mib": max(memory, default=None),
            "cpu_busy": mean([s[3] for s in inside]),
        }


# ----------------------------------------------------------------------------------------------
# Studies through the `study` command, and what their MLflow runs recorded.


def read_trials(spec_file: Path | None, overrides: list[str], root: Path) -> list[dict]:
    """Each trial of the study under `root` as its MLflow run recorded it: outcome, device,
    GPU, peak GPU memory, val_acc and its epochs' end times (as far as a stopped study got)."""
    from study.engines.records import TRIAL_TAG, StudyRecords
    from study.engines.trial import GPU_PEAK, GPU_TAG
    from study.spec import load_spec

    records = StudyRecords.reading(load_spec(spec_file, overrides).layout(root))
    if records is None:
        return []
    client, trials = records.client, []
    for run in records.trial_runs():
        history = client.get_metric_history(run.info.run_id, "epoch_time")
        history = sorted(history, key=lambda m: m.step)
        tags, metrics = run.data.tags, run.data.metrics
        trials.append(
            {
                "trial": int(tags[TRIAL_TAG]),
                "outcome": tags.get("outcome", ""),
                "device": tags.get("device", ""),
                "gpu": tags.get(GPU_TAG, ""),
                "peak_mib": metrics.get(GPU_PEAK),
                "val_acc": metrics.get("val_acc"),
                "epochs": len(history),
                "ends": [m.timestamp / 1000 for m in history],  # the epochs' wall_time
                "epoch_times": [m.value for m in history],
            }
        )
    return sorted(trials, key=lambda t: t["trial"])


def run_study(
    context: Context,
    label: str,
    spec_file: Path | None,
    overrides: list[str],
    timeout: float,
    sampler: Sampler | None = None,
) -> dict[str, Any]:
    """`study run [spec_file] --root ... --set ...` as a user types it, to its end or to
    `timeout`: its exit status (None: stopped), seconds, trials and log."""
    root, log = context.folder / f"runs-{label}", context.folder / f"{label}.log"
    sets = [part for override in overrides for part in ("--set", override)]
    spec = [str(spec_file)] if spec_file else []
    command = [sys.executable, "-m", "study", "run", *spec, "--root", str(root), *sets]
    started = time.time()
    if sampler:
        sampler.start()
    code = run_child(command, timeout, log)
    if sampler:
        sampler.stop()
    seconds = time.time() - started
    try:
        trials = read_trials(spec_file, overrides, root)
    except Exception as error:  # noqa: BLE001  (a study stopped early may have left no store)
        trials = []
        with log.open("a") as out:
            out.write(f"\nbenchmarks.gpu: cannot read the study's records: {error!r}\n")
    return {"code": code, "seconds": seconds, "trials": trials, "log": log}


def check_records(trials: list[dict], device: str | None) -> str:
    """Why the trials' records are not what a run promises ('' when they are): every trial
    ended completed or early_stopped and names its device (`device`, where given); a GPU
    trial also the GPU and its peak memory, a CPU trial neither."""
    if not trials:
        return "no trial recorded"
    for t in trials:
        name = f"trial {t['trial']}"
        if t["outcome"] not in ("completed", "early_stopped"):
            return f"{name} ended {t['outcome'] or 'without an outcome'}"
        if not t["device"] or (device and not t["device"].startswith(device)):
            return f"{name} ran on {t['device'] or 'no recorded device'}, not {device}"
        on_gpu = t["device"].startswith("cuda")
        if on_gpu and not (t["gpu"] and t["peak_mib"]):
            return f"{name} on {t['device']}: no GPU model or peak memory recorded"
        if not on_gpu and (t["gpu"] or t["peak_mib"] is not None):
            return f"{name} on {t['device']} recorded a GPU's fields"
    return ""


def shown(overrides: list[str]) -> str:
    """A study's overrides as a table shows them: without the temporary data folder."""
    return " ".join(o for o in overrides if not o.startswith("dataset.root=")) or "as shipped"


def number(value: float | None, digits: int = 0) -> str:
    """A figure for a table, '-' where there is none."""
    return "-" if value is None else f"{value:,.{digits}f}"


# ----------------------------------------------------------------------------------------------
# runs: the default study, then the CNN study on one GPU.


def step_runs(step: Step, context: Context) -> None:
    """The default study as shipped (tiny in a dry run), then the CNN study for 2 epochs with
    resources.gpu 1 (0 on the CPU), whose band-coded images it must learn (full sizes)."""
    cnn = [
        f"dataset.root={context.data}",
        "scheduler.max_epochs=2",
        "scheduler.grace_period=1",
        f"search.num_samples={context.sizes.cnn_trials}",
        f"resources.gpu={1 if context.cuda else 0}",
        f"search.max_concurrent={context.gpus}",  # one a GPU (on the CPU: one trial actor)
    ]
    studies = [
        ("default", None, list(context.sizes.default_study), None),
        ("cnn", CNN_STUDY, cnn, "cuda" if context.cuda else "cpu"),
    ]
    rows, problems = [], []
    for label, spec_file, overrides, device in studies:
        if context.budget.left() < 20:
            problems.append(f"{label}: not run (the budget was spent)")
            continue
        done = run_study(context, label, spec_file, overrides, context.budget.share(0.25))
        trials = done["trials"]
        why = exit_problem(done["code"]) or check_records(trials, device)
        best = max((t["val_acc"] for t in trials if t["val_acc"] is not None), default=None)
        if not why and label == "cnn" and context.sizes is FULL and (best or 0) < 0.5:
            why = f"best val_acc {best:.3f}: it did not learn the band-coded images"
        devices = "/".join(sorted({t["device"] for t in trials})) or "-"
        gpus = ", ".join(sorted({t["gpu"] for t in trials if t["gpu"]})) or "-"
        peak = max((t["peak_mib"] for t in trials if t["peak_mib"]), default=None)
        names = [t["outcome"] for t in trials]
        outcomes = ", ".join(f"{names.count(n)} {n}" for n in sorted(set(names))) or "none"
        status = f"failed: {why}" if why else "done"
        rows.append([
                label, shown(overrides), len(trials), outcomes, devices, gpus,
                number(peak), number(best, 3), round(done["seconds"]), status
        ])  # fmt: skip
        step.lines.append(
            f"{label}: {status}, {len(trials)} trials ({outcomes}) on {devices}"
            + (f", {gpus}, peak {peak:,.0f} MiB" if peak else "")
            + f", best val_acc {number(best, 3)}, {done['seconds']:.0f} s"
        )
        step.figures[label] = {"status": status, "trials": trials, "seconds": done["seconds"]}
        if why:
            problems.append(f"{label}: {why}")
            step.figures[label]["log_tail"] = tail(done["log"])
    step.why = "; ".join(problems)
    headers = [
        "study", "overrides", "trials", "outcomes", "device", "gpu tag", "peak GPU MiB",
        "best val_acc", "s", "status"
    ]  # fmt: skip
    notes = (
        f"{context.machine}. `study run` of the default study and of studies/cifar10_cnn.yaml "
        "(2 epochs, resources.gpu 1 where there is a GPU) on generated CIFAR-10 batches whose "
        "classes are bright bands; device, GPU and peak memory as each trial's MLflow run "
        "recorded them. Target: every trial completes and its run names its device (a GPU "
        f"trial's run its GPU and peak memory): {'NOT met' if step.why else 'met'}."
    )
    step.table = ("GPU path: study runs", headers, rows, notes)


# ----------------------------------------------------------------------------------------------
# tests: pytest -m cuda.


def step_tests(step: Step, context: Context) -> None:
    """The tests marked `cuda` (tests/test_gpu.py): all pass; skipped only without CUDA."""
    report, log = context.folder / "cuda-tests.xml", context.folder / "cuda-tests.log"
    command = [
        sys.executable, "-m", "pytest", "tests/test_gpu.py", "-m", "cuda", "-n", "0", "-q", "-p",
        "no:cacheprovider", f"--junitxml={report}"
    ]  # fmt: skip
    started = time.monotonic()
    code = run_child(command, context.budget.share(0.25), log)
    seconds = time.monotonic() - started
    counts, failed = {"passed": 0, "failed": 0, "skipped": 0}, []
    if report.exists():
        for case in ET.parse(report).getroot().iter("testcase"):
            kinds = {child.tag for child in case}
            if kinds & {"failure", "error"}:
                counts["failed"] += 1
                failed.append(case.get("name"))
            else:
                counts["skipped" if "skipped" in kinds else "passed"] += 1
    step.figures = {**counts, "failed_tests": failed}
    if failed:
        step.why = f"{len(failed)} failed: {', '.join(failed)}"
    elif code not in (0, 5):  # 5: no test ran (all deselected)
        step.why = exit_problem(code)
    if step.why:
        step.figures["log_tail"] = tail(log, 40)
    step.lines.append(", ".join(f"{n} {k}" for k, n in counts.items()))
    verdict = ("NOT met" if step.why else "met") if context.cuda else "not checked (no CUDA)"
    step.table = (
        "GPU path: the CUDA tests",
        ["tests", "passed", "failed", "skipped", "s"],
        [["pytest -m cuda tests/test_gpu.py", *counts.values(), round(seconds)]],
        f"{context.machine}. Failed: {', '.join(failed) or 'none'}. Target: all pass: {verdict}.",
    )


# ----------------------------------------------------------------------------------------------
# throughput: in a child process of its own (`--step throughput`), one JSON line per
# measurement, so that what it measured before a stop is kept.

# Each turns one setting from the loop's GPU default; channels_last is for convolutions.
VARIANTS = {
    "default: bf16, channels_last": {"bf16": True, "channels_last": True, "compile": False},
    "bf16 off": {"bf16": False, "channels_last": True, "compile": False},
    "channels_last off": {"bf16": True, "channels_last": False, "compile": False},
    "compile on": {"bf16": True, "channels_last": True, "compile": True},
}
DEFAULT = "default: bf16, channels_last"
DATALOADER = "DataLoader(num_workers=4, pin_memory=True)"


def study_model(spec_file: Path, data: Path) -> tuple[dict, dict]:
    """The data set (rooted at `data`) and the training config of a study file: its model and
    fixed hyperparameters, the defaults for what it samples."""
    spec = yaml.safe_load(spec_file.read_text())
    dataset = {**spec["dataset"], "root": str(data)}
    return dataset, {**spec["fixed"], "model": spec["model"], "seed": 0, "threads": 1}


def our_run(config: dict, data: Any, variant: dict, cuda: bool) -> Any:
    """trainables.loop's run of `config`, with `variant`'s bf16, channels_last and compile.
    On the CPU (a dry run) bf16 changes nothing (the loop autocasts CUDA only) and compile
    uses the eager backend: the model is traced, no code generated."""
    import torch

    from trainables.loop import start

    run = start(config, data)
    model = run.setup.model
    run.channels_last = variant["channels_last"] and config["model"]["name"] == "cnn"
    model.to(memory_format=torch.channels_last if run.channels_last else torch.contiguous_format)
    run.amp = variant["bf16"] and cuda and torch.cuda.is_bf16_supported()
    if variant["compile"]:
        run.forward = torch.compile(model, backend="inductor" if cuda else "eager")
    return run


def dataloader_epoch(run: Any, loader: Any, epoch: int) -> None:
    """One training epoch of `run`'s model and optimizer on the batches a DataLoader draws
    (shuffled by the loader, whatever the epoch), copied to the device in the loop, bf16 and
    channels_last as `run` has them."""
    import torch
    import torch.nn.functional as F

    model, optimizer = run.setup.model, run.setup.optimizer
    model.train()
    for x, y in loader:
        x, y = x.to(run.device, non_blocking=True), y.to(run.device, non_blocking=True)
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        with torch.autocast("cuda", dtype=torch.bfloat16, enabled=run.amp):
            loss = F.cross_entropy(run.forward(x), y)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
    if run.device.type == "cuda":
        torch.cuda.synchronize()


def samples_per_second(train: Callable[[int], Any], samples: int, epochs: int) -> float:
    """Training samples per second over `epochs` epochs of `train(epoch)`, after one untimed
    epoch (workers start, kernels load, torch.compile compiles)."""
    train(1)
    started = time.perf_counter()
    for epoch in range(2, 2 + epochs):
        train(epoch)  # each ends on the host: train_epoch reads its losses, the other syncs
    return samples * epochs / (time.perf_counter() - started)


def throughput(data: Path, out: Path, epochs: int) -> None:
    """Samples/s of the DataLoader loop and of ours in each variant, for the MLP on MNIST and
    the CNN on CIFAR-10; a JSON line per measurement appended to `out`."""
    import torch
    from torch.utils.data import DataLoader, TensorDataset

    from trainables import load_dataset
    from trainables.loop import train_epoch

    cuda = torch.cuda.is_available()
    for study_file in (MLP_STUDY, CNN_STUDY):
        spec, config = study_model(study_file, data)
        config = {**config, "epochs": 1 + epochs}
        dataset = load_dataset(spec, seed=0)
        samples, model = dataset.sizes()["train"], config["model"]["name"]
        case = {
            "model": model,
            "data": spec["name"],
            "train_samples": samples,
            "batch_size": config["batch_size"],
            "epochs": epochs,
        }

        run = our_run(config, dataset, VARIANTS[DEFAULT], cuda)
        prepared = dataset.to("cpu").normalized()  # preprocessed once, as ours is
        loader = DataLoader(
            TensorDataset(prepared.x_train, prepared.y_train), batch_size=config["batch_size"],
            shuffle=True, num_workers=4, pin_memory=cuda, persistent_workers=True
        )  # fmt: skip
        rate = samples_per_second(partial(dataloader_epoch, run, loader), samples, epochs)
        emit(out, {**case, "loop": DATALOADER, "variant": DEFAULT, "samples_s": rate})
        del run, loader, prepared
        for name, variant in VARIANTS.items():
            if name == "channels_last off" and model != "cnn":
                continue
            run = our_run(config, dataset, variant, cuda)
            rate = samples_per_second(partial(train_epoch, run), samples, epochs)
            emit(out, {**case, "loop": "ours", "variant": name, "samples_s": rate})
            del run
            if cuda:
                torch.cuda.empty_cache()


def emit(out: Path, line: dict) -> None:
    """Append one measurement to the child's JSON lines."""
    with out.open("a") as f:
        f.write(json.dumps(line) + "\n")


def step_throughput(step: Step, context: Context) -> None:
    """The throughput child, then its table: each loop and variant, samples/s and the ratio
    to the DataLoader loop on the same model."""
    out, log = context.folder / "throughput.jsonl", context.folder / "throughput.log"
    command = [
        sys.executable, "-m", "benchmarks.gpu", "--step", "throughput", "--data",
        str(context.data), "--out", str(out), "--epochs", str(context.sizes.timed_epochs)
    ]  # fmt: skip
    code = run_child(command, context.budget.share(0.35), log)
    lines = [json.loads(line) for line in out.read_text().splitlines()] if out.exists() else []
    step.figures["measurements"] = lines
    step.why = exit_problem(code)
    if code:
        step.figures["log_tail"] = tail(log, 30)
    rows, lowest = [], None
    for model in dict.fromkeys(line["model"] for line in lines):
        group = [line for line in lines if line["model"] == model]
        baseline = next((line["samples_s"] for line in group if line["loop"] == DATALOADER), None)
        ratios = []
        for line in group:
            ratio = line["samples_s"] / baseline if baseline else None
            if line["loop"] == "ours" and ratio:
                ratios.append(f"{line['variant'].split(':')[0]} {ratio:.2f}x")
                if line["variant"] == DEFAULT:
                    lowest = ratio if lowest is None else min(lowest, ratio)
            rows.append([
                    model, line["data"], line["train_samples"], line["batch_size"], line["loop"],
                    line["variant"], round(line["samples_s"]), f"{ratio:.2f}x" if ratio else "-"
            ])  # fmt: skip
        step.lines.append(f"{model} vs DataLoader: " + (", ".join(ratios) or "-"))
    met = "met" if lowest is not None and lowest >= 3 else "NOT met"
    headers = [
        "model", "data", "train samples", "batch", "loop", "variant", "samples/s", "vs DataLoader"
    ]  # fmt: skip
    notes = (
        f"{context.machine}. Training epochs only (no evaluation), {context.sizes.timed_epochs} "
        "timed after one untimed (workers start, torch.compile compiles). Both loops train the "
        "same model with the same fused optimizer, bf16 autocast and channels_last (the "
        "loop's GPU default); only the data path differs: ours keeps the set on the device and "
        "slices batches by index, the DataLoader draws them from a TensorDataset in 4 worker "
        "processes into pinned memory and the loop copies them over. Each other row turns one "
        f"setting of ours the other way. Target: ours >= 3x the DataLoader: {met}"
        + (f" (lowest {lowest:.2f}x)." if lowest else ".")
    )
    step.table = ("GPU throughput: our loop vs DataLoader", headers, rows, notes)


# ----------------------------------------------------------------------------------------------
# packing: the CNN study at fractions of a GPU.


def progress(ends: list[float], moment: float) -> float:
    """Epochs a trial had finished at `moment`: 1 at its first epoch's end, linear between the
    ends of its epochs."""
    import numpy as np

    return float(np.interp(moment, ends, np.arange(1, len(ends) + 1)))


def steady(trials: list[dict]) -> tuple[float, float, float] | None:
    """Trial-epochs per second while every trial ran (from the moment the last of them ended
    its first epoch, start-up and compilation behind it, to the moment the first of them ended
    its last), and that window's start and end; None where there is no such window."""
    ends = [t["ends"] for t in trials]
    if not ends or any(len(e) < 2 for e in ends):
        return None
    start, stop = max(e[0] for e in ends), min(e[-1] for e in ends)
    if stop <= start:
        return None
    return sum(progress(e, stop) - progress(e, start) for e in ends) / (stop - start), start, stop


def pack(context: Context, fraction: float) -> dict[str, Any]:
    """One packing level: resources.gpu `fraction` and gpus / fraction trials at once, one
    trial each, no early stopping; on the CPU (a dry run) as many trials on no GPU."""
    at_once = max(1, round(context.gpus / fraction))
    overrides = [
        f"name=cifar10-cnn-pack-{at_once}", f"dataset.root={context.data}", "scheduler.name=none",
        f"scheduler.max_epochs={context.sizes.packing_epochs}", f"search.num_samples={at_once}",
        f"search.max_concurrent={at_once}", "resources.cpu=1",
        f"resources.gpu={fraction if context.cuda else 0}"
    ]  # fmt: skip
    sampler = Sampler()
    done = run_study(
        context, f"pack-{fraction:g}", CNN_STUDY, overrides, context.budget.left(), sampler
    )
    trials = [t for t in done["trials"] if t["ends"]]
    window = steady(trials)
    epochs = sum(t["epochs"] for t in trials)
    rate = window[0] if window else epochs / done["seconds"]  # the whole study's, at worst
    level = {
        "fraction": fraction,  # the level's resources.gpu (0 on the CPU, same trials at once)
        "at_once": at_once,
        "trials": len(trials),
        "epochs": epochs,
        "seconds": done["seconds"],
        "per_gpu_hour": rate * 3600 / context.gpus,
        "steady": window is not None,
        "s_per_epoch": [
            sum(t["epoch_times"][1:]) / (len(t["epoch_times"]) - 1)
            for t in trials
            if len(t["epoch_times"]) > 1
        ],
        "peak_mib": [t["peak_mib"] for t in trials if t["peak_mib"]],
        **sampler.summary(*(window[1:] if window else (None, None))),
        "problem": exit_problem(done["code"])
        or check_records(done["trials"], "cuda" if context.cuda else "cpu"),
    }
    if level["problem"]:
        level["log_tail"] = tail(done["log"])
    return level


def step_packing(step: Step, context: Context) -> None:
    """Every level the budget leaves time for, then the table: trial-epochs per GPU-hour and
    their ratio to one trial per GPU, with what was sampled meanwhile."""
    levels, problems = [], []
    for fraction in context.sizes.packing:
        if context.budget.left() < 30:
            problems.append(f"{fraction:g}: not run (the budget was spent)")
            continue
        levels.append(pack(context, fraction))
        if levels[-1]["problem"]:
            problems.append(f"{fraction:g}: {levels[-1]['problem']}")
    step.why = "; ".join(problems)
    step.figures["levels"] = levels
    rows, best = [], None
    for level in levels:
        first = levels[0]["per_gpu_hour"]
        ratio = level["per_gpu_hour"] / first if first else None
        if level is not levels[0] and ratio:
            best = max(best or 0, ratio)
        per_epoch, peaks = level["s_per_epoch"], level["peak_mib"]
        rows.append([
                level["fraction"], level["at_once"], level["trials"], level["epochs"],
                round(level["seconds"]), number(level["per_gpu_hour"]),
                f"{ratio:.2f}x" if ratio else "-",
                "yes" if level["steady"] else "no (whole study)",
                number(sum(per_epoch) / len(per_epoch), 2) if per_epoch else "-",
                number(level["gpu_util"]), number(level["gpu_memory_mib"]),
                number(level["cpu_busy"] and 100 * level["cpu_busy"]),
                ", ".join(f"{p:,.0f}" for p in peaks) or "-"
        ])  # fmt: skip
    step.lines.append(
        "trial-epochs per GPU-hour: "
        + ", ".join(f"{row[0]:g}: {row[5]} ({row[6]})" for row in rows)
    )
    headers = [
        "resources.gpu", "trials at once", "trials", "epochs", "study s",
        "trial-epochs / GPU-hour", "vs 1 per GPU", "all running", "s / epoch / trial",
        "GPU util %", "GPU MiB (max)", "host CPU %", "each trial's peak MiB"
    ]  # fmt: skip
    met = "met" if best and best >= 3 else "NOT met"
    notes = (
        f"{context.machine}. studies/cifar10_cnn.yaml, {context.sizes.packing_epochs} epochs "
        "a trial, no early stopping, one CPU a trial, all of a level's trials at once"
        f"{'' if context.cuda else ' (on the CPU: resources.gpu 0, as many trials at once)'}. "
        "Trial-epochs per GPU-hour while all of them ran: from the moment the last ended its "
        "first epoch to the moment the first ended its last, each trial's progress "
        "interpolated between the ends of its epochs (where there is no such window, the whole "
        "study's rate, start-up included). GPU utilisation (nvidia-smi: % of the time a kernel "
        "ran) and host CPU averaged over that window; GPU memory the most any sample saw; each "
        "trial's peak as its MLflow run recorded it (torch.cuda.max_memory_allocated). "
        f"Target: >= 3x one trial per GPU: {met}"
        + (f" (best {best:.2f}x). " if best else ". ")
        + shortfall(levels, best)
    )
    step.table = ("GPU packing: fractional resources.gpu", headers, rows, notes)


def shortfall(levels: list[dict], best: float | None) -> str:
    """What the samples say where packing falls short of 3x: how busy one trial kept the GPU
    and all of them, the host's CPUs, the memory, and how much longer a packed epoch took."""
    if not levels or (best and best >= 3):
        return ""
    first, last = levels[0], levels[-1]
    facts = []
    if first["gpu_util"] is not None and last["gpu_util"] is not None:
        facts.append(
            f"a kernel ran {first['gpu_util']:.0f}% of the time with one trial, "
            f"{last['gpu_util']:.0f}% with {last['at_once']}"
        )
    if last["cpu_busy"] is not None:
        facts.append(f"the host's CPUs {100 * last['cpu_busy']:.0f}% busy with {last['at_once']}")
    if last["gpu_memory_mib"] is not None:
        facts.append(f"at most {last['gpu_memory_mib']:,.0f} MiB of GPU memory used")
    if first["s_per_epoch"] and last["s_per_epoch"]:
        alone = sum(first["s_per_epoch"]) / len(first["s_per_epoch"])
        packed = sum(last["s_per_epoch"]) / len(last["s_per_epoch"])
        facts.append(f"an epoch {alone:.2f} s alone, {packed:.2f} s packed")
    return ("Short of 3x; sampled: " + "; ".join(facts) + ".") if facts else ""


# ----------------------------------------------------------------------------------------------
# The command.


def step_data(step: Step, context: Context) -> None:
    """MNIST's IDX files and CIFAR-10's python batches (tests/data_files.py)."""
    from tests.data_files import fake_cifar10, fake_mnist

    train, test = context.sizes.mnist
    fake_mnist(context.data, "MNIST", train, test)
    fake_cifar10(context.data, context.sizes.cifar_per_batch)
    images = 5 * context.sizes.cifar_per_batch
    step.lines.append(
        f"MNIST {train:,} + {test:,} (IDX), CIFAR-10 {images:,} + "
        f"{context.sizes.cifar_per_batch:,} (python batches)"
    )


ACTIONS = {
    "data": step_data,
    "runs": step_runs,
    "tests": step_tests,
    "throughput": step_throughput,
    "packing": step_packing,
}


def options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--dry-run",
        action="store_true",
        help="the same steps at tiny sizes (on the CPU where there is no CUDA)",
    )
    parser.add_argument("--budget", type=float, default=8.0, help="minutes for it all")
    parser.add_argument(
        "--steps",
        default=",".join(STEPS),
        help=f"which of {','.join(STEPS)} to run (the data are always written)",
    )
    parser.add_argument("--json", type=Path, help="also write every figure to this file")
    # what the command gives its own throughput child
    parser.add_argument("--step", choices=["throughput"], help=argparse.SUPPRESS)
    parser.add_argument("--data", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--epochs", type=int, help=argparse.SUPPRESS)


def main() -> None:
    args = arguments("The GPU path: study runs, CUDA tests, throughput and packing.", options)
    if args.step == "throughput":
        throughput(args.data, args.out, args.epochs)
        return
    import torch

    cuda, tiny = torch.cuda.is_available(), args.dry_run or args.quick
    wanted = [name for name in args.steps.split(",") if name]
    if unknown := sorted(set(wanted) - set(STEPS)):
        sys.exit(f"--steps: no step {', '.join(unknown)}; use some of {','.join(STEPS)}")
    if not cuda and not tiny:
        print(
            f"benchmarks.gpu: no CUDA GPU here (torch {torch.__version__} sees none); run it "
            "on a GPU machine, or with --dry-run for tiny sizes on the CPU",
            file=sys.stderr,
        )
        sys.exit(2)
    args.quick = tiny  # a dry run leaves RESULTS.md alone, as --quick does
    budget = Budget(args.budget)
    steps = [Step(name) for name in ("data", *wanted)]
    with tempfile.TemporaryDirectory(prefix="benchmarks-gpu-") as folder:
        context = Context(
            Path(folder), TINY if tiny else FULL, cuda, torch.cuda.device_count() if cuda else 1,
            budget, gpu_line(cuda)
        )  # fmt: skip
        for step in steps:
            if budget.left() < 20:
                step.why = "the budget was spent"
                continue
            started = time.monotonic()
            ACTIONS[step.name](step, context)
            step.seconds = time.monotonic() - started
            step.status = "stopped" if "budget" in step.why else "failed" if step.why else "done"
            print(
                f"benchmarks.gpu: {step.name} {step.status} in {step.seconds:.0f} s "
                f"{step.why}".rstrip(),
                flush=True,
            )
    for step in steps:
        if step.table and step.table[2]:
            record(*step.table[:1], args, *step.table[1:])
    summary = [
        f"benchmarks.gpu: {context.machine}; {budget.used() / 60:.1f} of {args.budget:g} "
        f"min{' (--dry-run: tiny sizes)' if tiny else ''}"
    ]
    for step in steps:
        summary.append(f"  {step.name:<10} {step.status:<7} {step.seconds:4.0f} s")
        summary += [f"    {line}" for line in step.lines]
        if step.why:
            summary.append(f"    why: {step.why[:200]}")
    print("\n".join(summary))
    if args.json:
        figures = {
            step.name: {k: v for k, v in vars(step).items() if k != "table"} for step in steps
        }
        args.json.write_text(
            json.dumps({"machine": context.machine, "steps": figures}, indent=1, default=str)
        )
    sys.exit(1 if any(step.status == "failed" for step in steps) else 0)


if __name__ == "__main__":
    main()
