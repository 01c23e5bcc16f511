"""Ray Tune wired for a study, in one place: the trainable with its data and resources, how
Tune runs a study's trials (TuneConfig) and where and how it keeps them (RunConfig), and a fit
whose engine logs are one line each. The study (study.commands.run), its repeats
(study.engines.repeats) and the benchmarks build their Tuners from these."""

import contextlib
import logging
import os
from collections.abc import Callable, Iterator
from typing import Any

from ray import tune
from ray.tune.search import ConcurrencyLimiter
from rich.console import Console

from study.core import Layout, trial_dirname
from study.engines import outages
from study.engines.logs import loud_engines, quiet_engines
from study.engines.schedule import build_scheduler
from study.engines.trial import trainable
from study.spec import StudySpec
from trainables import Data, fit


def trial_folder(trial: Any) -> str:
    """A short folder name per trial (Ray's default spells out the whole config)."""
    return trial_dirname(trial.trial_id)


def with_data(spec: StudySpec, data: Data, train: Callable[..., Any] = fit) -> Any:
    """The trainable with the data set in the object store and its resources attached;
    `train` is the training loop (benchmarks swap in one that only sleeps)."""
    every = spec.cluster.checkpoint_every
    extra = range(every, spec.scheduler.max_epochs + 1, every) if every else ()
    checkpoints = frozenset(spec.scheduler.rung_epochs()) | frozenset(extra)
    resources = {"cpu": spec.resources.cpu, "gpu": spec.resources.gpu}
    wrapped = tune.with_parameters(trainable, data=data, checkpoint_epochs=checkpoints, train=train)
    return tune.with_resources(wrapped, resources)


def tune_config(spec: StudySpec, layout: Layout, searcher: Any) -> tune.TuneConfig:
    """How Tune runs a study's trials: `searcher` proposes them, the study's number at a time,
    its scheduler stops them, actors are reused."""
    return tune.TuneConfig(
        metric=spec.metric,
        mode=spec.mode,
        search_alg=ConcurrencyLimiter(searcher, max_concurrent=spec.search.max_concurrent),
        scheduler=build_scheduler(spec, layout),
        num_samples=spec.search.num_samples,
        reuse_actors=True,
        trial_dirname_creator=trial_folder,
    )


def run_config(
    spec: StudySpec, name: str, storage_path: str, callbacks: list[Any], stop: Any = None
) -> tune.RunConfig:
    """Where Tune keeps the experiment `name` and how: our callbacks (no console output of its
    own), the spec's retries of a failed trial, two checkpoints per trial. Two, not one:
    keeping one, Tune saves the whole experiment's state after each trial's checkpoint (its
    state must not name a deleted one), which grows with the trials: 303 saves in a 300-trial
    study, 24 ms each (benchmarks/history/scale.md)."""
    return tune.RunConfig(
        name=name,
        storage_path=storage_path,
        verbose=0,
        callbacks=callbacks,
        stop=stop,
        failure_config=tune.FailureConfig(max_failures=spec.cluster.max_failures),
        checkpoint_config=tune.CheckpointConfig(num_to_keep=2),
    )


def on_console(console: Console) -> None:
    """The study's console lines go to `console`: MLflow's own INFO lines stay off it, and a
    store that stops answering is said there (study.engines.outages)."""
    logging.getLogger("mlflow").setLevel(logging.WARNING)
    outages.WATCH.say = lambda line: console.print(
        line, highlight=False, markup=False, soft_wrap=True
    )


@contextlib.contextmanager
def quiet(layout: Layout) -> Iterator[None]:
    """Ray's and Optuna's logs one line each on the console while Tune runs (their tracebacks
    in the study's folder). A failed trial gets one line from our callbacks, not Ray's
    traceback: it stays in the trial's folder (error.txt) and on its MLflow run. Ctrl-C raises
    KeyboardInterrupt at once (Tune's own handler would wind the trials down and return, as
    if they had ended)."""
    os.environ.setdefault("TUNE_PRINT_ALL_TRIAL_ERRORS", "0")
    os.environ.setdefault("TUNE_DISABLE_SIGINT_HANDLER", "1")
    quieted = quiet_engines(layout.errors_file)
    try:
        yield
    finally:
        loud_engines(quieted)
