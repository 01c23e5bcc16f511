"""Checks that run before Ray starts or any MLflow run exists: each failure is one clear line."""

import contextlib
import difflib
import inspect
import os
import socket
import sys
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from search_spaces import load_yaml
from study.commands.recipes import with_recipes
from study.core import Found, Layout, Stage, StudyState, driver, stage, standing
from study.core.errors import UserError, already_exists, missing_study
from study.core.layout import known_studies
from study.spec import StudySpec, own_knobs
from trainables import Data, DataError
from trainables.hyperparameters import HYPERPARAMETERS, NETWORK_KNOBS, resolve
from trainables.plugins import PluginError, brief, describe, is_plugin, keywords, load_callable


@dataclass(frozen=True)
class Checked:
    """What preflight hands `study run`: the spec as the data's task completes it (its metric
    and mode), the data set (in memory, or a streamed set's index) and what it found of the
    data and the model."""

    spec: StudySpec
    data: Data
    found: Found


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


def check_new(spec: StudySpec, root: Path) -> None:
    """A study name is used once per root folder unless the user asks to replace it; the
    refusal says where the study stands."""
    layout = spec.layout(root)
    if layout.spec_file.exists():
        state = stage.load(layout.stage_record)
        now = state and standing(spec.name, state, driver.is_driven(layout))
        raise UserError(already_exists(spec.name, root, now.word if now else ""))


def unanswered(address: str) -> str | None:
    """Why nothing answers at a HOST:PORT (or ray://HOST:PORT) address, as the socket says;
    None when something does, or for `auto`. Ray's own connect retries a dead address for
    minutes."""
    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return None
    try:
        with socket.create_connection((host, int(port)), timeout=5):
            return None
    except OSError as error:
        return (error.strerror or type(error).__name__).lower()


def check_cluster(spec: StudySpec) -> None:
    """Attach to the spec's Ray cluster and make sure some node can run one trial."""
    from study.engines.cluster import connect, usable_nodes

    # An address the spec took from $RAY_ADDRESS is named as such: the user gave none.
    field, unset = "cluster.address", ""
    if spec.cluster.address == os.environ.get("RAY_ADDRESS"):
        field = "cluster.address (from RAY_ADDRESS)"
        unset = ", or unset RAY_ADDRESS for a local Ray"
    if why := unanswered(spec.cluster.address):
        raise UserError(
            f"{field}: cannot connect to Ray at {spec.cluster.address} ({why}); "
            f"start the cluster or fix the address{unset}"
        )
    try:
        connect(spec)
    except (ConnectionError, RuntimeError, ValueError) as error:
        if "Authentication" in repr(error.__cause__) or "auth" in str(error).lower():
            raise UserError(
                f"{field}: the Ray cluster at {spec.cluster.address} requires token "
                "authentication; export RAY_AUTH_MODE=token and copy ~/.ray/auth_token from "
                "its head node"
            ) from None
        first = str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__
        raise UserError(
            f"{field}: cannot connect to Ray at {spec.cluster.address} ({first}); "
            f"start the cluster or fix the address{unset}"
        ) from None
    cpu, gpu = spec.resources.cpu, spec.resources.gpu
    fits, most = usable_nodes(cpu, gpu)
    if not fits:
        import ray

        ray.shutdown()
        raise UserError(
            f"resources: no node of the cluster has {cpu:g} CPU and {gpu:g} GPU for one trial "
            f"(the most GPUs on a node: {most:g}); lower resources.gpu / resources.cpu"
        )


def saved_spec(root: Path, name: str, address: str | None = None) -> StudySpec:
    """The spec a study was run with, as saved under the root (optionally on another cluster)."""
    from study.core.layout import SPEC_FILE, study_dir

    path = study_dir(root, name) / SPEC_FILE
    if not path.exists():
        raise UserError(missing_study(root, name))
    raw = load_yaml(path)
    if address:
        raw["cluster"]["address"] = address
    return StudySpec.model_validate(raw)


def check_resumable(spec: StudySpec, layout: Layout) -> StudyState:
    """The recorded state of a study `study resume` continues; a UserError for one that has
    nothing to resume (its trials all ended) or that a live driver runs. A study recorded
    before its state was (an older version's) is taken as one whose driver died while Tune
    ran."""
    state = stage.load(layout.stage_record) or StudyState(
        Stage.TRIALS_STARTED, spec.search.num_samples
    )
    where = standing(spec.name, state, driven=False)
    if where.word == "stopped":
        raise UserError(
            f"NAME: study {spec.name!r} was stopped by search.terminate: {state.terminated}; "
            f"nothing to resume (see `study report {spec.name}`; to search on, run a new "
            "study with search.warm_start)"
        )
    if where.resume == "nothing":
        raise UserError(
            f"NAME: study {spec.name!r} finished all its {state.wanted} trials; nothing to "
            f"resume (see `study report {spec.name}`, or start it over with `study run "
            "--replace`)"
        )
    return state


def saved_found(layout: Layout) -> Found | None:
    """What preflight found when the study started, if it was recorded."""
    return Found.from_dict(load_yaml(layout.found_file)) if layout.found_file.exists() else None


def load_data(spec: StudySpec) -> tuple[Any, dict[str, Any]]:
    """The study's data set, read once on the driver (with placement stream, only its index),
    and what was found of it: a loader plug-in's file and hash, the example shape, the
    placement chosen and an image set's statistics, so exports and resumes read the same data
    the same way. Unreadable data is the user's to fix."""
    from trainables import load_dataset

    dataset, found = spec.dataset, {}
    if is_plugin(dataset.name):
        with contextlib.suppress(PluginError, ImportError, ValueError):  # load_dataset says
            found["source"] = describe(dataset.name, spec.code_dir) or None  # why, its own way
    described = {**dataset.model_dump(exclude_none=True), "code_dir": spec.code_dir}
    try:
        data = load_dataset(described, seed=spec.search.seed)
    except DataError as error:
        raise UserError(str(error)) from None
    found["shape"] = list(data.input_shape)
    found["task"] = data.task
    if dataset.name == "image_folder" or is_plugin(dataset.name):
        found["placement"] = data.placement
        if data.mean is not None:  # computed from its training split: part of the record
            found["mean"], found["std"] = list(data.mean), list(data.std)
    return data, {k: v for k, v in found.items() if v is not None}


def plugin_keywords(spec: StudySpec) -> dict[str, tuple[str, ...]]:
    """field -> the keyword arguments of the study's plug-in model builder (past input_shape,
    num_classes, hp) and loader: where a knob that is not ours can go."""
    from trainables.models import BUILDER_POSITIONAL

    takes = {}
    for field, name, skip in (
        ("model", spec.model.name, BUILDER_POSITIONAL),
        ("dataset", spec.dataset.name, 0),
    ):
        if is_plugin(name):
            try:
                takes[field] = keywords(load_callable(name, spec.code_dir), skip)
            except PluginError as error:
                raise UserError(f"{field}.name: {error}; fix {field}.name or the module") from None
    return takes


def check_own_knobs(spec: StudySpec) -> dict[str, list[str]]:
    """Each name the study samples or fixes that is not ours must be a keyword argument of its
    plug-in builder (a network knob) or loader (a data knob), and given nowhere else; returns
    field -> the own knobs it takes."""
    names = own_knobs(spec)
    takes = plugin_keywords(spec) if names else {}
    owned: dict[str, list[str]] = {field: [] for field in takes}
    for where, name in names:
        fields = [field for field, arguments in takes.items() if name in arguments]
        plugins = " or ".join(getattr(spec, field).name for field in takes) or "no plug-in"
        if not fields:
            known = [*HYPERPARAMETERS, *(a for arguments in takes.values() for a in arguments)]
            close = difflib.get_close_matches(name, known, n=1)
            theirs = ", ".join(a for arguments in takes.values() for a in arguments) or "nothing"
            hint = f"did you mean {close[0]!r}?" if close else f"{plugins} takes {theirs}"
            raise UserError(
                f"{where}.{name}: unknown name, not ours and not an argument of {plugins}; {hint}"
            )
        if len(fields) > 1:
            raise UserError(
                f"{where}.{name}: both {spec.model.name} and {spec.dataset.name} take {name}; "
                "rename it in one of them"
            )
        field = fields[0]
        if name in (getattr(spec, field).args or {}):
            raise UserError(f"{where}.{name}: also in {field}.args; remove it from one of them")
        owned[field].append(name)
    return owned


def check_model(spec: StudySpec, data: Data, found: Found) -> tuple[dict[str, Any], dict]:
    """Import the model's builder, build it with the study's first config and run one forward
    pass on two real examples: every failure is the user's to fix, in one line. Returns the
    first config and what was found of the model (a plug-in's file and content hash)."""
    import torch

    from study.engines.sampler import first_config
    from trainables.models import model_arguments, model_builder

    name, model = spec.model.name, {}
    if is_plugin(name):
        try:
            builder = model_builder({"name": name, "code_dir": spec.code_dir})
        except PluginError as error:
            raise UserError(f"model.name: {error}; fix model.name or the module") from None
        if source := describe(name, spec.code_dir):
            model["source"] = source
        _check_signature(name, builder, model_arguments(spec.model.model_dump()))
    config = first_config(spec, Found(found.dataset, model))
    shape = data.input_shape
    try:
        network = network_of(config, data)
    except UserError:
        raise
    except Exception as error:  # noqa: BLE001  (the user's code may raise anything)
        if str(error).startswith("model."):  # a built-in's own word on its keys
            raise UserError(str(error)) from None
        raise UserError(
            f"model.name: building {name} for input {shape} raised {brief(error)}; fix the model"
        ) from None
    try:
        with torch.no_grad():
            out = network.train()(data.examples(2))
    except Exception as error:  # noqa: BLE001
        raise UserError(
            f"model.name: the forward pass of {name} on 2 examples of shape {shape} raised "
            f"{brief(error)}; make the network take inputs (N, {', '.join(map(str, shape))})"
        ) from None
    expected = (2, data.num_classes)
    got = tuple(out.shape) if isinstance(out, torch.Tensor) else type(out).__name__
    if data.task == "regression" and data.num_classes == 1 and got == (2,):
        got = expected  # one target: (N,) outputs are taken as (N, 1)
    if got != expected:
        what = (
            f"outputs of shape {expected} ({data.num_classes} target values per example)"
            if data.task == "regression"
            else f"logits of shape {expected} ({data.num_classes} classes)"
        )
        raise UserError(
            f"model.name: {name} gave {got} for 2 examples, expected {what}; make its last "
            "layer output num_classes"
        )
    return config, model


def network_of(config: dict[str, Any], data: Data) -> Any:
    """The network a trial's config builds (seeded as the loop seeds it)."""
    import torch

    from trainables.models import build_model

    hp = resolve(config)
    torch.manual_seed(hp["seed"])
    return build_model(data.input_shape, data.num_classes, hp["model"], hp)


def _check_signature(name: str, builder: Callable[..., Any], args: dict[str, Any]) -> None:
    try:
        signature = inspect.signature(builder)
    except (TypeError, ValueError):  # a builtin without a signature: the build will tell
        return
    try:
        signature.bind((1,), 2, {}, **args)
    except TypeError as error:
        takes = [p for p in signature.parameters][3:]
        positional = [
            p for p in signature.parameters.values()
            if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD, p.VAR_POSITIONAL)
        ]  # fmt: skip
        if len(positional) < 3 and not any(p.kind == p.VAR_POSITIONAL for p in positional):
            raise UserError(
                f"model.name: {name}{signature} must take (input_shape, num_classes, hp, "
                "**args); fix its signature"
            ) from None
        raise UserError(
            f"model.args: {name} does not take them ({error}); it takes "
            f"{', '.join(takes) or 'no args'}: fix model.args"
        ) from None


# What a knob needs to be able to change the network at all (dropout needs use_dropout, ...).
_ENABLE = {
    "use_dropout": {"dropout": 0.5},
    "dropout": {"use_dropout": True},
    "dropout2d": {"use_dropout": True, "dropout": 0.5},
    "width": {"depth": 1},
}


def ignored_knobs(
    spec: StudySpec, data: Data, config: dict[str, Any], own: tuple[str, ...] = ()
) -> list[str]:
    """The network knobs the study samples (ours, and the builder's `own`) that the model
    ignores: built with two of the space's values, the same seed and config otherwise, it is
    the same network (modules and weights) with the same optimizer settings."""
    import torch

    from trainables.optim import param_groups

    def fingerprint(values: dict[str, Any]) -> tuple[str, list[Any], list[Any]]:
        # The optimizer's settings are its parameter groups (which parameters, what decay)
        # and the hyperparameters it reads: building a torch optimizer would cost seconds of
        # imports (torch._dynamo) and tell nothing more.
        trial = {**config, **values}
        network = network_of(trial, data)
        groups = param_groups(network, resolve(trial))
        settings = [(len(g["params"]), g["weight_decay"]) for g in groups]
        return str(network), list(network.state_dict().values()), settings

    def same(a: Any, b: Any) -> bool:
        if a[0] != b[0] or a[2] != b[2] or len(a[1]) != len(b[1]):
            return False
        pairs = zip(a[1], b[1], strict=True)
        return all(x.shape == y.shape and torch.equal(x, y) for x, y in pairs)

    ignored = []
    for knob, param in spec.space.params.items():
        if knob not in NETWORK_KNOBS and knob not in own:
            continue
        values = param.choices[:2] if param.type == "categorical" else [param.low, param.high]
        if len(values) < 2 or values[0] == values[1]:
            continue
        enable = {k: v for k, v in _ENABLE.get(knob, {}).items() if k not in (knob,)}
        first, second = ({**enable, knob: value} for value in values)
        if same(fingerprint(first), fingerprint(second)):
            ignored.append(
                f"space.params.{knob}: {spec.model.name} builds the same network for "
                f"{knob}={values[0]!r} and {knob}={values[1]!r}; the study tunes a knob the "
                f"model never reads ({'use the argument' if knob in own else f'read hp[{knob!r}]'}"
                f" in it, or drop {knob} from the space)"
            )
    return ignored


def _stderr(line: str) -> None:
    print(line, file=sys.stderr)


def check_warm_start(spec: StudySpec, root: Path, warn: Callable[[str], None]) -> None:
    """Each study `search.warm_start` names is an earlier one in the same Optuna storage and
    shares a parameter with the space; one line says how many trials come in (and how many
    are left out, and why)."""
    names = spec.search.warm_start
    if not names:
        return
    from study.engines import warm_start

    if spec.name in names:
        raise UserError(f"search.warm_start: {spec.name} is this study; name an earlier one")
    layout = spec.layout(root)
    found = warm_start.earlier_trials(layout, names)
    missing = [name for name, trials in found.items() if trials is None]
    if missing:
        known = ", ".join(n for n in known_studies(root) if n != spec.name) or "none"
        raise UserError(f"search.warm_start: no study {missing[0]!r} in {layout.optuna_url}; "
                        f"studies there: {known}")  # fmt: skip
    earlier = warm_start.prior(layout, names, spec.space)
    if not earlier.shared:
        raise UserError(f"search.warm_start: no trial of {', '.join(names)} holds a parameter of "
                        f"this space ({', '.join(spec.space.params)}) in its range; name a study "
                        "of the same knobs")  # fmt: skip
    warn(earlier.line(names))


def preflight(
    spec: StudySpec, root: Path, replace: bool = False, warn: Callable[[str], None] = _stderr
) -> Checked:
    """Every check a study must pass before anything is launched or recorded; returns the
    data set, loaded along the way, and what was found of it and of the model. Warnings (a
    sampled knob the model ignores) go to `warn`."""
    if spec.cluster.address:
        check_cluster(spec)
    else:
        check_resources(spec)
    check_tracking(spec, root)
    if not replace:
        check_new(spec, root)
    spec = with_recipes(spec, Path.cwd())  # search.enqueue: its files read once, here
    check_warm_start(spec, root, warn)
    data, dataset = load_data(spec)
    if data.task_note:
        warn(f"note: {data.task_note}")
    try:
        spec = spec.for_task(data.task)
    except ValueError as error:
        raise UserError(str(error)) from None
    owned = check_own_knobs(spec)
    config, model = check_model(spec, data, Found(dataset))
    for line in ignored_knobs(spec, data, config, tuple(owned.get("model", ()))):
        warn(f"warning: {line}")
    return Checked(spec, data, Found(dataset, model))


def prepare_resume(spec: StudySpec, root: Path) -> Checked:
    """The data of a study being resumed, with what its first driver found (found anew for a
    study that did not record it)."""
    data, dataset = load_data(spec)
    found = saved_found(spec.layout(root)) or Found(dataset)
    return Checked(spec.for_task(data.task), data, found)
