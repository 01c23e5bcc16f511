"""Ray, the cluster: attach to the spec's cluster or start a local Ray, with the study's
plug-ins shipped to every node."""

import logging
from typing import Any

import ray

from trainables.plugins import source_file


def runtime_env(spec: Any) -> dict[str, Any]:
    """Ray's runtime_env for the study's job: its plug-ins' modules (a file, or a package's
    folder) shipped to every worker, which imports them from there (`py_modules`)."""
    found = (source_file(name, spec.code_dir) for name in spec.plugins())
    modules = sorted({str(path) for path in found if path is not None})
    return {"py_modules": modules} if modules else {}


def trials_on_idle_workers() -> None:
    """Tune's trial actors start on the worker processes a new local Ray starts idle with
    itself, instead of on new ones.

    Tune gives every trial actor the runtime_env {"env_vars": {"PL_DISABLE_FORK": "1"}} (for
    PyTorch Lightning, which trials never run), and Ray starts a new worker process for an
    actor with env vars while its idle ones stay idle: a study's start took about 1 s longer
    (benchmarks/history/overhead.md). Tune reads this dict of
    `ray.tune.execution.class_cache` each time it makes an actor class (ray < 2.61,
    tests/unit/test_engine_internals.py); what it propagates from the driver's environment
    (cloud credentials, Ray Train's variables) still travels.
    """
    from ray.tune.execution.class_cache import DEFAULT_ENV_VARS

    DEFAULT_ENV_VARS.pop("PL_DISABLE_FORK", None)


def connect(spec: Any) -> None:
    """Attach to the spec's Ray cluster, or start a local Ray (once per process); the
    study's plug-ins travel with it to every node, its trials start on idle workers."""
    trials_on_idle_workers()
    if ray.is_initialized():
        return
    options: dict[str, Any] = {"log_to_driver": False, "logging_level": logging.ERROR}
    if env := runtime_env(spec):
        options["runtime_env"] = env
    if spec.cluster.address:
        ray.init(address=spec.cluster.address, **options)
    else:
        ray.init(address="local", include_dashboard=False, **options)


def usable_nodes(cpu: float, gpu: float) -> tuple[bool, float]:
    """Whether some live node has `cpu` CPUs and `gpu` GPUs for one trial, and the most GPUs
    on a node."""
    nodes = [node["Resources"] for node in ray.nodes() if node["Alive"]]
    fits = any(n.get("CPU", 0) >= cpu and n.get("GPU", 0) >= gpu for n in nodes)
    return fits, max((n.get("GPU", 0) for n in nodes), default=0)
