"""The study spec: one YAML file (plus `--set` overrides) validated into a StudySpec.

Example:
    >>> from study.spec import load_spec
    >>> spec = load_spec(None, ["search.num_samples=4"])
    >>> spec.name, spec.search.num_samples, list(spec.space.params)[:2]
    ('digits-regularization', 4, ['lr', 'weight_decay'])
"""

import difflib
import math
import os
from importlib import resources
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

import search_spaces
from study.core import Found, Layout, RunSettings, TrialConfig
from study.core.errors import UserError
from trainables import DATASETS, DOMAINS, HYPERPARAMETERS, KINDS, METRICS, MODELS, TORCHVISION_SETS
from trainables.catalog import BUILTIN_KEYS, IMAGE_MODELS, MODEL_KEYS, TASKS
from trainables.hyperparameters import DEFAULT_METRIC, TASK_LOSSES, TASK_METRICS, direction
from trainables.plugins import is_plugin

DEFAULT_SPEC = "digits.yaml"  # in the `studies` folder, used when `study run` gets no file


def one_of(value: str, known: Any, what: str) -> str:
    """`value` if it is among `known`, else a ValueError that lists them."""
    if value not in known:
        raise ValueError(f"unknown {what} {value!r}; use one of {', '.join(known)}")
    return value


def import_path(name: str, example: str) -> str:
    """`name` if it is written as module:callable, else a ValueError showing `example`."""
    module, _, attribute = name.partition(":")
    if not module or not attribute or " " in name:
        raise ValueError(f"{name!r} is not module:callable; write it as {example}")
    return name


class _Strict(BaseModel):
    # Frozen: a validated spec is input, never a record; what preflight finds is `Found`.
    model_config = ConfigDict(extra="forbid", frozen=True)


def _resolve(model: BaseModel, name: str, value: Any) -> None:
    """Set a default that depends on other fields while the model is being validated (after
    that it is frozen)."""
    object.__setattr__(model, name, value)


class DatasetSpec(_Strict):
    """Which data set, where it lives, and how it is split."""

    name: str = "digits"
    val_fraction: float = Field(0.2, gt=0, lt=1)
    test_fraction: float = Field(0.0, ge=0, lt=1)
    train_size: int | None = Field(None, ge=2)
    root: str | None = None  # mnist, fashion_mnist, cifar10, cifar100, svhn: the data root
    download: bool = False
    path: str | None = None  # csv: the file
    target: str | None = None  # csv: the label column
    n_samples: int | None = Field(None, ge=10)  # circles, moons, noise
    noise: float | None = Field(None, ge=0)
    factor: float | None = Field(None, gt=0, lt=1)  # circles
    n_features: int | None = Field(None, ge=1)  # noise
    distribution: Literal["normal", "uniform"] | None = None  # noise: features and targets
    # classification or regression; None: the built-in's, or what the targets are (a CSV's
    # numeric column with many values, a loader's float targets: regression)
    task: Literal["classification", "regression"] | None = None
    # k-fold cross-validation: the data apart from the test split cut into this many folds
    # (stratified for classes, seeded by search.seed); a trial trains one model per fold side
    # by side and reports their mean. None: the hold-out split of val_fraction.
    cv_folds: int | None = None
    image_size: int | None = Field(None, ge=4)  # image_folder: each image resized to this square
    skip_bad_files: bool | None = None  # image_folder: leave out files Pillow cannot read
    args: dict[str, Any] | None = None  # a loader plug-in's keyword arguments
    num_classes: int | None = Field(None, ge=2)  # a streamed plug-in's, when not 1 + max label
    # memory: read by the driver, shipped through Ray's object store; stream: each trial reads
    # `root` (shared storage) itself. None: memory unless the examples exceed 2 GiB.
    placement: Literal["memory", "stream"] | None = None
    # What `study run` found (study.core.Found), accepted here as exported configs and the
    # specs of studies run before it was a record of its own carry it.
    shape: list[int] | None = None
    mean: list[float] | None = None
    std: list[float] | None = None
    source: dict[str, str] | None = None

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if is_plugin(name):
            return import_path(name, "my_data:load")
        return one_of(name, (*DATASETS, "image_folder"), "data set (or module:callable)")

    @model_validator(mode="after")
    def _fields_fit_the_data_set(self) -> "DatasetSpec":
        if self.name == "csv" and not (self.path and self.target):
            raise ValueError("csv needs path and target; set dataset.path and dataset.target")
        if self.name in TORCHVISION_SETS and self.test_fraction:
            raise ValueError(
                f"test_fraction: {self.name} has its own test split; remove test_fraction"
            )
        if self.name == "image_folder" and not (self.root and self.image_size):
            raise ValueError(
                "image_folder needs root and image_size; set dataset.root and dataset.image_size"
            )
        if self.cv_folds is not None:
            if self.cv_folds < 2:
                raise ValueError(
                    f"cv_folds: {self.cv_folds} is no number of folds (1 is the hold-out split); "
                    "use 2 or more, or leave cv_folds out"
                )
            if self.name == "image_folder" or is_plugin(self.name):
                raise ValueError(
                    f"cv_folds: {self.name}'s validation split is its own (a loader's, or a "
                    "folder's) and cross-validation is for the built-in data sets; leave "
                    "cv_folds out"
                )
        if self.task and self.name in TASKS and self.task != TASKS[self.name]:
            raise ValueError(f"task: {self.name} is a {TASKS[self.name]} data set; remove task")
        if self.placement == "stream" and self.name != "image_folder" and not is_plugin(self.name):
            raise ValueError(
                f"placement: {self.name} is read into memory; stream is for image_folder and "
                "loader plug-ins"
            )
        return self

    @property
    def known_task(self) -> str | None:
        """The task when it is known before the data is read: a built-in's, or the spec's."""
        return TASKS.get(self.name) or self.task

    @property
    def modality(self) -> str | None:
        """image or tabular; None for a plug-in not loaded yet."""
        return self.kind()[0]

    def kind(self, shape: list[int] | None = None) -> tuple[str | None, int]:
        """The modality and channels (0 for tables) a `when:` condition may test; a plug-in's
        come from its example `shape`, once preflight has read it."""
        if self.name in KINDS:
            return KINDS[self.name]
        if self.name == "image_folder":
            return "image", 3
        shape = shape or self.shape
        if shape:
            return ("image", shape[0]) if len(shape) == 3 else ("tabular", 0)
        return None, 0


# Hyperparameter defaults that differ by model: a torchvision architecture keeps its own
# BatchNorm unless the study turns it off.
MODEL_DEFAULTS = {"torchvision": {"batch_norm": True}}


class ModelSpec(_Strict):
    """The network: mlp (hidden `widths`), cnn (conv `channels`, then a dense head of
    `widths`), torchvision (`arch`, `small_input`), or the user's own `module:callable`;
    `args` go to its builder as keyword arguments."""

    name: str = "mlp"
    widths: list[int] | None = None
    channels: list[int] | None = None
    arch: str | None = None  # torchvision: resnet18, vgg11, ...
    small_input: bool | None = None  # torchvision ResNets: the stem 32x32 images need
    args: dict[str, Any] | None = None
    source: dict[str, str] | None = None  # a plug-in's file and sha256, recorded by `study run`

    @field_validator("name")
    @classmethod
    def _known(cls, name: str) -> str:
        if is_plugin(name):
            return import_path(name, "my_net:build")
        return one_of(name, MODELS, "model (or module:callable for your own)")

    @model_validator(mode="after")
    def _keys_fit_the_model(self) -> "ModelSpec":
        allowed = MODEL_KEYS.get(self.name, ())
        for key in BUILTIN_KEYS:
            if getattr(self, key) is not None and key not in allowed:
                fix = "put it in model.args" if is_plugin(self.name) else "remove it"
                raise ValueError(f"{key}: not a key of model {self.name}; {fix}")
        if "widths" in allowed and self.widths is None:
            _resolve(self, "widths", [128, 128])
        if self.name == "torchvision" and self.arch is None:
            raise ValueError("arch: torchvision needs an architecture; set model.arch: resnet18")
        return self

    @field_validator("widths", "channels")
    @classmethod
    def _positive(cls, sizes: list[int] | None) -> list[int] | None:
        if sizes and any(size < 1 for size in sizes):
            raise ValueError(f"every size must be >= 1 (got {sizes})")
        return sizes


class SearchSpec(_Strict):
    """How configurations are proposed."""

    # gp: Gaussian-process BO, shown early-stopped trials at their last value; the default, as
    # measured on LCBench and digits (benchmarks/RESULTS.md); tpe for hundreds of short trials
    sampler: Literal["tpe", "gp", "random", "grid"] = "gp"
    # trials of random configurations before TPE or GP learns from the finished ones; None:
    # the sampler's default here (gp 3, as measured; tpe Optuna's 10)
    startup_trials: int | None = Field(None, ge=1)
    num_samples: int = Field(24, ge=1)
    max_concurrent: int = Field(2, ge=1)
    seed: int = 0
    storage: str | None = None  # Optuna RDB URL (sqlite:///, postgresql://...); None: <root>
    # configs run first, in order, as ordinary trials (Optuna's enqueue_trial: the sampler
    # learns from them); the first is the study's baseline. Each: a `study export` file (its
    # hyperparameters), a mapping of hyperparameters (the others at their defaults, a
    # `label` to name it), or `unregularized` (every regularizer off); study.commands.recipes
    enqueue: list[str | dict[str, Any]] = Field(default_factory=list)
    # earlier studies (same Optuna storage) whose finished and early-stopped trials the
    # sampler learns from before its first proposal: not rerun, not counted in num_samples
    warm_start: list[str] = Field(default_factory=list)
    # stop asking for trials once the room left for improvement (a GP's regret bound) is below
    # the metric's noise (the folds' spread with dataset.cv_folds, else its epoch-to-epoch
    # jitter); running trials finish (study.engines.terminate; off by default: README)
    terminate: bool = False
    terminate_after: int = Field(20, ge=2)  # trials ended before the rule judges (Optuna's 20)

    @model_validator(mode="after")
    def _learning_sampler(self) -> "SearchSpec":
        """A grid runs its own points only, and a random sampler learns from nothing."""
        if self.sampler == "grid" and self.enqueue:
            raise ValueError("enqueue: the grid sampler runs the grid's points only; drop "
                             "search.enqueue or use sampler gp, tpe or random")  # fmt: skip
        if len(self.enqueue) > self.num_samples:
            many = f"{len(self.enqueue)} configs, but num_samples is {self.num_samples}"
            raise ValueError(f"enqueue: {many}; raise search.num_samples or enqueue fewer")
        if self.sampler in ("grid", "random") and self.warm_start:
            raise ValueError(f"warm_start: the {self.sampler} sampler learns nothing from "
                             "earlier trials; use sampler gp or tpe")  # fmt: skip
        if self.sampler == "grid" and self.terminate:
            raise ValueError("terminate: the grid sampler runs every point of its grid; drop "
                             "search.terminate or use sampler gp, tpe or random")  # fmt: skip
        return self


class SchedulerSpec(_Strict):
    """ASHA early stopping, counted in epochs (`name: none` runs every trial to max_epochs)."""

    name: Literal["asha", "none"] = "asha"
    max_epochs: int = Field(27, ge=1)
    grace_period: int = Field(3, ge=1)
    reduction_factor: float = Field(3, gt=1)
    # Hyperband's hedge of the first rung: bracket s judges from the s-th rung on (the last,
    # with no rung left, runs its trials to the end); a trial's bracket is drawn with Ray's odds
    brackets: int = Field(1, ge=1)

    def rung_epochs(self) -> list[int]:
        """The epochs at which ASHA judges trials (a checkpoint is worth keeping there)."""
        if self.name == "none":
            return []
        epochs, milestone = [], float(self.grace_period)
        while milestone < self.max_epochs:
            epochs.append(math.ceil(milestone))
            milestone *= self.reduction_factor
        return epochs

    @model_validator(mode="after")
    def _grace_within_budget(self) -> "SchedulerSpec":
        if self.name == "asha" and self.grace_period > self.max_epochs:
            raise ValueError(
                f"grace_period ({self.grace_period}) > max_epochs ({self.max_epochs}); "
                "make grace_period <= max_epochs"
            )
        rungs = len(self.rung_epochs())
        if self.name == "asha" and self.brackets > rungs + 1:
            raise ValueError(
                f"brackets: {self.brackets}, but {rungs} rungs make at most {rungs + 1} brackets "
                f"(one more would judge nothing); make brackets at most {rungs + 1}"
            )
        return self


class ResourcesSpec(_Strict):
    """What one trial asks Ray for."""

    cpu: float = Field(1, gt=0)
    gpu: float = Field(0, ge=0)


class TrackingSpec(_Strict):
    """Where MLflow records go: None means SQLite under the root folder."""

    uri: str | None = None
    experiment: str | None = None


class ClusterSpec(_Strict):
    """Where trials run and how they survive faults."""

    # auto | HOST:PORT | ray://HOST:PORT. Unset: $RAY_ADDRESS, which Ray sets for the command
    # of a `ray job submit`; without it the study starts a local Ray of its own.
    address: str | None = Field(default_factory=lambda: os.environ.get("RAY_ADDRESS") or None)
    storage: str | None = None  # Ray's storage_path: a shared folder or URI; None: <root>/ray
    max_failures: int = Field(2, ge=0)  # retries of a failed trial, from its last checkpoint
    checkpoint_every: int = Field(0, ge=0)  # extra checkpoints every N epochs (0: rungs + end)


class StudySpec(_Strict):
    """Everything one study needs, defaults resolved."""

    name: str = Field("digits-regularization", pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$")
    dataset: DatasetSpec = Field(default_factory=DatasetSpec)
    model: ModelSpec = Field(default_factory=ModelSpec)
    space: search_spaces.Space = Field(default_factory=lambda: search_spaces.load("regularization"))
    fixed: dict[str, Any] = Field(default_factory=dict)
    # None: val_acc for classification, val_rmse for regression; mode: the metric's own
    # direction (max for accuracy and R^2, min for losses and errors)
    metric: str | None = None
    mode: Literal["max", "min"] | None = None
    search: SearchSpec = Field(default_factory=SearchSpec)
    scheduler: SchedulerSpec = Field(default_factory=SchedulerSpec)
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    tracking: TrackingSpec = Field(default_factory=TrackingSpec)
    cluster: ClusterSpec = Field(default_factory=ClusterSpec)
    root: str = "runs"
    code_dir: str | None = None  # where plug-ins are found besides the import path: the
    # spec file's folder, set by load_spec

    @field_validator("space", mode="before")
    @classmethod
    def _load_space(cls, space: Any) -> Any:
        if isinstance(space, str):
            return search_spaces.read(space)
        return space

    @field_validator("metric")
    @classmethod
    def _known_metric(cls, metric: str | None) -> str | None:
        return metric and one_of(metric, METRICS, "metric")

    @model_validator(mode="after")
    def _consistent(self) -> "StudySpec":
        """Check the sections against each other and resolve the defaults that hang on them."""
        self._check_names()
        self._check_values()
        self._check_conditions()
        self._check_model_fits_data()
        self._resolve_metric()
        self._check_cutmix()
        self._resolve_grid()
        return self

    def _check_names(self) -> None:
        """Each sampled or fixed name is ours (or a plug-in's), and none is both."""
        # A name not of ours may be a plug-in's own knob: preflight, which imports the
        # plug-ins, checks it against their keyword arguments (check_own_knobs).
        for where, names in (("space.params", self.space.params), ("fixed", self.fixed)):
            for name in names:
                if name not in HYPERPARAMETERS and not self.plugins():
                    raise ValueError(f"{where}.{name}: {_unknown(name, HYPERPARAMETERS)}")
        for name in set(self.space.params) & set(self.fixed):
            raise ValueError(f"fixed.{name}: also in the space; remove it from one of them")

    def _check_values(self) -> None:
        """Each fixed value and each sampled range lies in its hyperparameter's domain."""
        for name, value in self.fixed.items():
            if name in DOMAINS and (problem := value_problem(name, value)):
                raise ValueError(f"fixed.{name}: {problem}")
        for name, param in self.space.params.items():
            if name in DOMAINS and (problem := param_problem(name, param)):
                raise ValueError(f"space.params.{name}: {problem}")

    def _check_conditions(self) -> None:
        """Each `when:` condition tests a parameter of the space or the study's context."""
        for name, param in self.space.params.items():
            for other in param.when or {}:
                if other not in self.space.params and other not in self.context():
                    raise ValueError(
                        f"space.params.{name}.when: {other!r} is neither a parameter of the "
                        f"space nor one of {', '.join(sorted(self.context()))}"
                    )

    def _check_model_fits_data(self) -> None:
        """An image model is not given a table."""
        if self.model.name in IMAGE_MODELS and self.dataset.modality == "tabular":
            raise ValueError(
                f"model.name: {self.model.name} needs images and {self.dataset.name} is a "
                "table; use mlp"
            )

    def _resolve_metric(self) -> None:
        """The spec fits a task known in advance; the metric and mode default from it."""
        if self.dataset.known_task:
            if problem := task_problem(self, self.dataset.known_task):
                raise ValueError(problem)
            _resolve(self, "metric", self.metric or DEFAULT_METRIC[self.dataset.known_task])
        if self.metric and self.mode is None:
            _resolve(self, "mode", direction(self.metric))

    def _check_cutmix(self) -> None:
        """Cutmix is not fixed for a table."""
        if self.fixed.get("cutmix_alpha") and self.dataset.modality == "tabular":
            raise ValueError(
                f"fixed.cutmix_alpha: cutmix pastes image boxes and {self.dataset.name} is a "
                "table; use mixup_alpha"
            )

    def _resolve_grid(self) -> None:
        """A grid search's num_samples defaults to, and must equal, the grid's size."""
        if self.search.sampler == "grid":
            points = math.prod(len(values) for values in self.grid().values())
            if "num_samples" not in self.search.model_fields_set:
                _resolve(self.search, "num_samples", points)
            elif self.search.num_samples != points:
                raise ValueError(
                    f"search.num_samples: the grid has {points} points and num_samples is "
                    f"{self.search.num_samples}; set num_samples to {points} or leave it out"
                )

    def for_task(self, task: str) -> "StudySpec":
        """The spec of a study whose data turned out to be for `task` (a CSV or a loader that
        left it open): the metric and mode it defaults to; ValueError naming the field where
        the spec does not fit the task."""
        if problem := task_problem(self, task):
            raise ValueError(problem)
        metric = self.metric or DEFAULT_METRIC[task]
        return self.model_copy(update={"metric": metric, "mode": self.mode or direction(metric)})

    def task(self, found: Found | None = None) -> str | None:
        """classification or regression: known from the spec, else from what preflight found."""
        return self.dataset.known_task or (found.dataset.get("task") if found else None)

    def context(self, found: Found | None = None) -> dict[str, Any]:
        """What a `when:` condition may test besides sampled values: the data set's modality
        and channels (a plug-in's from what preflight `found`), the model's name, and every
        fixed (or default) hyperparameter."""
        modality, channels = self.dataset.kind(found.shape if found else None)
        hyperparameters = {**HYPERPARAMETERS, **self.defaults(found), **self.fixed}
        return {
            **hyperparameters,
            "modality": modality,
            "channels": channels,
            "task": self.task(found),
            "model": self.model.name,
            "dataset": self.dataset.name,
        }

    def grid(self) -> dict[str, list[Any]]:
        """The grid of a space of categorical (or stepped int) parameters, for `sampler: grid`."""
        grid = {}
        for name, param in self.space.params.items():
            if hasattr(param, "choices"):
                grid[name] = list(param.choices)
            elif param.type == "int" and not param.log:
                grid[name] = list(range(param.low, param.high + 1, param.step or 1))
            else:
                raise ValueError(
                    f"search.sampler: grid needs categorical or int parameters and "
                    f"space.params.{name} is a {param.type}; list its values as choices"
                )
        return grid

    def defaults(self, found: Found | None = None) -> dict[str, Any]:
        """The model's and the task's own defaults of hyperparameters the study neither samples
        nor fixes (a regression study trains with mse)."""
        losses = {"loss": TASK_LOSSES["regression"][0]} if self.task(found) == "regression" else {}
        defaults = {**MODEL_DEFAULTS.get(self.model.name, {}), **losses}
        return {k: v for k, v in defaults.items() if k not in self.space.params}

    def plugins(self) -> list[str]:
        """The `module:callable` names the study uses."""
        return [name for name in (self.model.name, self.dataset.name) if is_plugin(name)]

    def trial_constants(self, found: Found | None = None) -> dict[str, Any]:
        """What every trial's config holds besides the sampled values: the fixed and default
        hyperparameters and the run settings, with what preflight `found` of the data and
        the model (a flat study.core.TrialConfig)."""
        found = found or Found()
        run = RunSettings(
            dataset=self.recorded_dataset(found),
            model={**self.model.model_dump(exclude_none=True), **found.model},
            epochs=self.scheduler.max_epochs,
            seed=self.search.seed,
            threads=max(1, int(self.resources.cpu)),
        )
        return TrialConfig({**self.defaults(found), **self.fixed}, run).flat()

    def recorded_dataset(self, found: Found) -> dict[str, Any]:
        """The data set as the study records it: the spec's keys and what preflight found."""
        return {**self.dataset.model_dump(exclude_none=True), **found.dataset}

    def layout(self, root: Path) -> Layout:
        """Every path and URI of the study under `root`."""
        return Layout.of(self, root)


# Knobs that only make sense for classes.
CLASS_KNOBS = ("label_smoothing", "cutmix_alpha")


def task_problem(spec: StudySpec, task: str) -> str | None:
    """Why `spec` cannot run on data for `task` (one line naming the field), None when it can:
    a metric, monitored metric or loss of the other task, or a knob only classes have."""
    other = "regression" if task == "classification" else "classification"
    data = f"{spec.dataset.name} is a {task} data set"
    if spec.metric and spec.metric not in (*TASK_METRICS[task], "lr", "epoch_time"):
        return (
            f"metric: {spec.metric} is a {other} metric and {data}; use one of "
            f"{', '.join(TASK_METRICS[task])}"
        )
    for name, values in sampled_and_fixed(spec):
        if name == "loss" and (wrong := [v for v in values if v not in TASK_LOSSES[task]]):
            return (
                f"{where(spec, name)}: loss {wrong[0]} is for {other} and {data}; use "
                f"{' or '.join(TASK_LOSSES[task])}"
            )
        if name == "monitor" and (wrong := [v for v in values if v not in TASK_METRICS[task]]):
            return (
                f"{where(spec, name)}: {wrong[0]} is a {other} metric and {data}; monitor one "
                f"of {', '.join(m for m in TASK_METRICS[task] if m.startswith('val_'))}"
            )
        if task == "regression" and name in CLASS_KNOBS and any(values):
            return f"{where(spec, name)}: {name} is for classes and {data}; remove it"
    return None


def sampled_and_fixed(spec: StudySpec) -> list[tuple[str, list[Any]]]:
    """Each hyperparameter the study sets: the values its space may sample, or the fixed one."""
    pairs = [(name, [value]) for name, value in spec.fixed.items()]
    for name, param in spec.space.params.items():
        values = list(param.choices) if param.type == "categorical" else [param.low, param.high]
        pairs.append((name, values))
    return pairs


def where(spec: StudySpec, name: str) -> str:
    """The spec field that sets hyperparameter `name`."""
    return f"space.params.{name}" if name in spec.space.params else f"fixed.{name}"


def value_problem(name: str, value: Any) -> str | None:
    """Why hyperparameter `name` cannot take `value`, with its domain (None when it can)."""
    domain = DOMAINS[name]
    problem = domain.problem(value)
    return problem and f"{value!r} {problem}; {name} takes {domain}"


def param_problem(name: str, param: Any) -> str | None:
    """Why a space's parameter can sample values that hyperparameter `name` cannot take:
    a choice or a range bound outside its domain, or a type that cannot fit it."""
    domain = DOMAINS[name]
    if param.type == "categorical":
        for value in param.choices:
            if problem := value_problem(name, value):
                return f"choice {problem}"
        return None
    if domain.boolean or domain.choices:
        return f"a {param.type} range, but {name} takes {domain}; use type: categorical"
    if domain.integer and param.type == "float":
        return f"type float, but {name} takes {domain}; use type: int"
    for bound in ("low", "high"):
        if problem := value_problem(name, getattr(param, bound)):
            return f"{bound} {problem}"
    return None


def own_knobs(spec: StudySpec) -> list[tuple[str, str]]:
    """(where, name) of each name the study samples or fixes that is not one of ours."""
    pairs = [("space.params", name) for name in spec.space.params]
    pairs += [("fixed", name) for name in spec.fixed]
    return [(where, name) for where, name in pairs if name not in HYPERPARAMETERS]


def _unknown(name: str, known: Any) -> str:
    close = difflib.get_close_matches(name, list(known), n=1)
    hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(known)}"
    return f"unknown name; {hint}"


def format_error(error: ValidationError) -> str:
    """One line for the first problem pydantic found: the field's path and what to do."""
    first = error.errors()[0]
    # Drop pydantic's union-member labels (the param `type` tags) from the path.
    parts = [str(part) for part in first["loc"] if part not in ("float", "int", "categorical")]
    location = ".".join(part for part in parts if not part.startswith("function"))
    message = first["msg"].removeprefix("Value error, ")
    field, sep, rest = message.partition(": ")
    if sep and location and field in getattr(_model_at(location), "model_fields", {}):
        location, message = f"{location}.{field}", rest  # "model" + "arch: ..."
    if first["type"] == "extra_forbidden":
        parent = location.rpartition(".")[0]
        model = _model_at(parent)
        known = list(model.model_fields) if model else []
        message = f"unknown key; {_unknown(location.rpartition('.')[2], known).split('; ')[1]}"
    elif first["type"] == "union_tag_invalid":
        message = "type must be one of float, int, categorical"
    elif message.startswith("Input should be"):
        message = f"must be{message.removeprefix('Input should be')} (got {first['input']!r})"
    return f"{location}: {message}" if location else message


def _model_at(path: str) -> type[BaseModel] | None:
    model: Any = StudySpec
    for part in filter(None, path.split(".")):
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return None
        model = field.annotation
    return model if isinstance(model, type) and issubclass(model, BaseModel) else None


def apply_override(raw: dict[str, Any], assignment: str) -> None:
    """Apply one `key.sub=value` override to the raw spec mapping (value parsed as YAML)."""
    key, sep, text = assignment.partition("=")
    if not sep or not key:
        raise UserError(
            f"--set {assignment!r}: write it as key.sub=value, e.g. search.num_samples=8"
        )
    try:
        value = search_spaces.parse_yaml(text)
    except (yaml.YAMLError, search_spaces.YamlFileError):
        value = text
    try:
        _assign(raw, key, value)
    except (search_spaces.SpaceNotFound, search_spaces.YamlFileError) as error:
        raise UserError(f"space: {error}") from None


def _assign(raw: dict[str, Any], key: str, value: Any) -> None:
    *parents, last = key.split(".")
    if parents and parents[0] == "space" and isinstance(raw.get("space"), str):
        raw["space"] = search_spaces.read(raw["space"])  # a named space, edited in place
    node = raw
    for part in parents:
        node = node.setdefault(part, {})
        if not isinstance(node, dict):
            raise UserError(f"--set {key}: {part} is not a mapping; set {part} itself")
    node[last] = value


def read_yaml(path: Path) -> dict[str, Any]:
    """The mapping a spec file holds, or a UserError that says what is wrong with it."""
    try:
        raw = search_spaces.load_yaml(path)
    except search_spaces.YamlFileError as error:
        raise UserError(str(error)) from None
    if raw is None:
        raise UserError(
            f"{path}: the file is empty; write a spec in it, or run `study run` with no file "
            "for the default study"
        )
    if not isinstance(raw, dict):
        raise UserError(
            f"{path}: a spec is a mapping of keys (name:, dataset:, ...); got a list or value"
        )
    return raw


def default_spec_path() -> Path:
    """The shipped default study file."""
    return Path(str(resources.files("studies").joinpath(DEFAULT_SPEC)))


def load_spec(path: str | Path | None, overrides: list[str] = ()) -> StudySpec:
    """Read a spec file (the default study when None), apply overrides and validate it."""
    raw = read_yaml(Path(path) if path else default_spec_path())
    for assignment in overrides:
        apply_override(raw, assignment)
    try:
        spec = StudySpec.model_validate(raw)
    except ValidationError as error:
        raise UserError(format_error(error)) from None
    if spec.plugins() and spec.code_dir is None:  # the spec file's folder, else where we are
        folder = Path(path).resolve().parent if path else Path.cwd()
        spec = spec.model_copy(update={"code_dir": str(folder)})
    return spec


def root_folder(root: str | None = None, spec_root: str = "runs") -> Path:
    """The root folder: --root, else $STUDY_ROOT, else the spec's `root`; made absolute."""
    return Path(root or os.environ.get("STUDY_ROOT") or spec_root).resolve()


def resolve_root(spec: StudySpec, root: str | None = None) -> Path:
    """The root folder of `spec` (see `root_folder`)."""
    return root_folder(root, spec.root)
