"""Checks that run before Ray starts or any MLflow run exists: each failure is one clear line."""

import os
import urllib.error
import urllib.request
from pathlib import Path

import yaml

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
    """An MLflow server URI must answer, an Optuna storage URL open; a local store's folder
    must be writable."""
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
    if spec.search.storage:
        import optuna

        try:
            optuna.storages.RDBStorage(spec.search.storage)
        except Exception as error:  # noqa: BLE001  (SQLAlchemy and drivers raise many kinds)
            first = str(error).strip().splitlines()[0][:200]
            raise UserError(
                f"search.storage: cannot open the Optuna storage {spec.search.storage} "
                f"({first}); fix the URL or leave it out for SQLite under the root"
            ) from None
    existing = next(p for p in (root, *root.parents) if p.exists())  # root may not exist yet
    if not existing.is_dir() or not os.access(existing, os.W_OK):
        raise UserError(f"root: {root} is not writable; choose another folder with --root")


def already_exists(name: str, root: Path) -> str:
    """The message for a study name taken under the root."""
    return (
        f"name: a study {name!r} already exists under {root}; continue it with `study resume "
        f"{name}`, pick another name with --set name=NEW, or pass --replace to start it over"
    )


def check_new(spec: StudySpec, root: Path) -> None:
    """A study name is used once per root folder unless the user asks to replace it."""
    if (results.study_dir(root, spec.name) / "spec.yaml").exists():
        raise UserError(already_exists(spec.name, root))


def check_cluster(spec: StudySpec) -> None:
    """Attach to the spec's Ray cluster and make sure some node can run one trial."""
    import ray

    from study.runner import connect

    try:
        connect(spec)
    except (ConnectionError, RuntimeError, ValueError) as error:
        if "Authentication" in repr(error.__cause__) or "auth" in str(error).lower():
            raise UserError(
                f"cluster.address: the Ray cluster at {spec.cluster.address} requires token "
                "authentication; export RAY_AUTH_MODE=token and copy ~/.ray/auth_token from "
                "its head node"
            ) from None
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"cluster.address: cannot connect to Ray at {spec.cluster.address} ({first}); "
            "start the cluster or fix the address"
        ) from None
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    cpu, gpu = spec.resources.cpu, spec.resources.gpu
    if not any(n.get("CPU", 0) >= cpu and n.get("GPU", 0) >= gpu for n in nodes):
        most = max((n.get("GPU", 0) for n in nodes), default=0)
        ray.shutdown()
        raise UserError(
            f"resources: no node of the cluster has {cpu:g} CPU and {gpu:g} GPU for one trial "
            f"(the most GPUs on a node: {most:g}); lower resources.gpu / resources.cpu"
        )


def saved_spec(root: Path, name: str, address: str | None = None) -> StudySpec:
    """The spec a study was run with, as saved under the root (optionally on another cluster)."""
    from study.spec import StudySpec

    path = results.study_dir(root, name) / "spec.yaml"
    if not path.exists():
        raise UserError(results.missing_study(root, name))
    raw = yaml.safe_load(path.read_text())
    if address:
        raw["cluster"]["address"] = address
    return StudySpec.model_validate(raw)


def load_data(spec: StudySpec) -> Dataset:
    """The study's data set, read once on the driver; unreadable data is the user's to fix."""
    try:
        return load_dataset(spec.dataset.model_dump(exclude_none=True), seed=spec.search.seed)
    except DataError as error:
        raise UserError(str(error)) from None


def preflight(spec: StudySpec, root: Path, replace: bool = False) -> Dataset:
    """Every check a study must pass before anything is launched or recorded; returns the
    data set, loaded along the way."""
    if spec.cluster.address:
        check_cluster(spec)
    else:
        check_resources(spec)
    check_tracking(spec, root)
    if not replace:
        check_new(spec, root)
    return load_data(spec)
