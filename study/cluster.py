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


def connect(spec: Any) -> None:
    """Attach to the spec's Ray cluster, or start a local Ray (once per process); the
    study's plug-ins travel with it to every node."""
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
