"""Checks that run before Ray starts or any MLflow run exists: each failure is one clear line."""

import os
import urllib.error
import urllib.request
from pathlib import Path

from study import results
from study.errors import UserError
from study.spec import StudySpec
from trainables import DataError, Dataset, load_dataset


def check_resources(spec: StudySpec) -> None:
    """One trial's CPUs and GPUs must fit on this machine."""
    cpus = os.cpu_count() or 1
    if spec.resources.cpu > cpus:
        raise UserError(
            f"resources.cpu: {spec.resources.cpu:g} per trial but this machine has {cpus} CPUs; "
            f"set resources.cpu to at most {cpus}"
        )
    if spec.resources.gpu > 0:
        import torch

        gpus = torch.cuda.device_count()
        if spec.resources.gpu > gpus:
            fix = f"at most {gpus}" if gpus else "0"
            raise UserError(
                f"resources.gpu: {spec.resources.gpu:g} GPU per trial but this machine has "
                f"{gpus} GPUs; set resources.gpu to {fix}"
            )


def check_tracking(spec: StudySpec, root: Path) -> None:
    """An MLflow server URI must answer; a local store's folder must be writable."""
    uri = spec.tracking.uri
    if uri and uri.startswith(("http://", "https://")):
        try:
            with urllib.request.urlopen(f"{uri.rstrip('/')}/health", timeout=5):
                pass
        except (urllib.error.URLError, OSError) as error:
            reason = getattr(error, "reason", error)
            raise UserError(
                f"tracking.uri: cannot reach the MLflow server at {uri} ({reason}); start it or "
                "fix the URI"
            ) from None
    existing = next(p for p in (root, *root.parents) if p.exists())  # root may not exist yet
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UserError(f"root: {root} is not writable; choose another folder with --root")


def check_new(spec: StudySpec, root: Path) -> None:
    """A study name is used once per root folder unless the user asks to replace it."""
    if (results.study_dir(root, spec.name) / "spec.yaml").exists():
        raise UserError(
            f"name: a study {spec.name!r} already exists under {root}; pick another name with "
            "--set name=NEW, or pass --replace to start it over"
        )


def load_data(spec: StudySpec) -> Dataset:
    """The study's data set, read once on the driver; unreadable data is the user's to fix."""
    try:
        return load_dataset(spec.dataset.model_dump(exclude_none=True), seed=spec.search.seed)
    except DataError as error:
        raise UserError(str(error)) from None


def preflight(spec: StudySpec, root: Path, replace: bool = False) -> Dataset:
    """Every check a study must pass before anything is launched or recorded; returns the
    data set, loaded along the way."""
    check_resources(spec)
    check_tracking(spec, root)
    if not replace:
        check_new(spec, root)
    return load_data(spec)
