"""The `study` command: run, resume, status, report, export, train, ablate, confirm, ui,
spaces."""

import os
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Optional

import typer

from study.core.errors import UserError
from study.engines.logs import console as wide_console

if TYPE_CHECKING:
    from study.spec import StudySpec

# MLflow prints its own "View run ... at" and "View experiment at" links (into its GenAI view)
# for every run that ends on a tracking server; the study's console has its own lines.
os.environ.setdefault("MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT", "true")

app = typer.Typer(
    add_completion=False,
    no_args_is_help=True,
    rich_markup_mode=None,  # help texts are plain: "[default: ...]" is not markup
    pretty_exceptions_enable=False,  # an error that escapes is one line (`main`), no boxes
    help="Hyperparameter studies of neural-network regularization on Ray Tune, Optuna and MLflow.",
)
console = wide_console()
errors = wide_console(stderr=True)

RootOption = Annotated[
    Optional[str],  # noqa: UP045  (typer reads the annotation at run time)
    typer.Option("--root", help="Root folder of all study files [default: $STUDY_ROOT or ./runs]."),
]


def main() -> None:
    """The `study` command. An error of ours that escapes a command is one line naming the
    file its traceback went to, exit code 1 (a study's own errors go to its errors.txt)."""
    try:
        app(prog_name="study")
    except Exception as error:  # noqa: BLE001  (one line, whatever it was)
        import tempfile
        import traceback

        from study.engines.outages import brief

        try:
            handle, path = tempfile.mkstemp(prefix="study-error-", suffix=".txt")
            with os.fdopen(handle, "w") as file:
                file.write("".join(traceback.format_exception(error)))
            where = f"traceback: {path}"
        except OSError as unwritten:
            where = f"its traceback could not be written: {brief(unwritten)}"
        errors.print(f"error: {brief(error)} ({where})", highlight=False, soft_wrap=True)
        sys.exit(1)


def _warn(line: str) -> None:
    errors.print(line, highlight=False, soft_wrap=True, markup=False)


def _fail(error: UserError) -> None:
    errors.print(f"error: {error}", highlight=False, soft_wrap=True)
    raise typer.Exit(2)


def _stopped(error: BaseException, spec: "StudySpec", folder: Path) -> None:
    """A study that stopped on an error of its own, not the user's input, or on Ctrl-C: one
    line, never a traceback (that goes to the study's errors.txt, which the line names), also
    kept in the study's recorded state; exit code 1, or 130 when interrupted."""
    import traceback

    from study.core import stage
    from study.engines.logs import keep_traceback
    from study.engines.outages import brief, store_down, unwritable

    layout = spec.layout(folder)
    down = store_down(error, layout.tracking_uri)
    interrupted = isinstance(error, KeyboardInterrupt)
    if interrupted:
        line = "interrupted (Ctrl-C)"
        said = f"{line}; continue it with `study resume {spec.name}`"
    elif down is not None:
        line = said = down.line(spec.name)
    else:
        kept = keep_traceback(layout.errors_file, "".join(traceback.format_exception(error)))
        where = f"traceback: {layout.errors_file}" if kept else "no room for its traceback"
        line = unwritable(error, folder, spec.name)
        if line is not None:
            line = said = f"{line} ({where})"
        else:
            line = f"the study stopped on {brief(error)} ({where})"
            said = f"{line}; once it is fixed, continue with `study resume {spec.name}`"
    stage.stopped(layout.stage_record, line, interrupted)
    errors.print(f"{'' if interrupted else 'error: '}{said}", highlight=False, soft_wrap=True)
    raise typer.Exit(130 if interrupted else 1)


def _summary(ranked: list, spec: "StudySpec", elapsed: float) -> None:
    """The best trials of a study that ran; exit 1 when no trial produced a result."""
    from study.commands.run import print_best

    if not print_best(ranked, spec, elapsed, console):
        errors.print("no trial produced a result")
        raise typer.Exit(1)


def _saved(root: str | None, name: str, address: str | None = None) -> tuple[Path, "StudySpec"]:
    """The root folder and the saved spec of study `name` (UserError: none there)."""
    from study.commands.preflight import saved_spec
    from study.spec import root_folder

    folder = root_folder(root)
    return folder, saved_spec(folder, name, address)


def _ended_short(spec: "StudySpec", folder: Path) -> None:
    """A study whose trials did not all end (its recorded state says so): one line, exit 1."""
    from study.core import Stage, stage, standing

    state = stage.load(spec.layout(folder).stage_record)
    if state is not None and state.stage == Stage.ENDED_SHORT:
        errors.print(standing(spec.name, state, driven=False).line, highlight=False)
        raise typer.Exit(1)


@app.command()
def run(
    spec_file: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Argument(help="Study YAML file [default: the shipped digits study]."),
    ] = None,
    set_: Annotated[
        Optional[list[str]],  # noqa: UP045
        typer.Option("--set", help="Override a spec field: key.sub=value (repeatable)."),
    ] = None,
    root: RootOption = None,
    replace: Annotated[
        bool, typer.Option("--replace", help="Start over a study that already exists.")
    ] = False,
    address: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--address",
            help="An existing Ray cluster: auto, HOST:PORT or ray://... "
            "[default: $RAY_ADDRESS, else a local Ray]",
        ),
    ] = None,
) -> None:
    """Run a study: Optuna proposes, ASHA stops early, MLflow records every trial."""
    from study.commands.preflight import preflight
    from study.spec import load_spec, resolve_root

    overrides = [*(set_ or []), *([f"cluster.address={address}"] if address else [])]
    try:
        spec = load_spec(spec_file, overrides)
        folder = resolve_root(spec, root)
        checked = preflight(spec, folder, replace=replace, warn=_warn)
        spec = checked.spec  # its metric and mode as the data's task completes them
    except UserError as error:
        _fail(error)
    from study.commands.run import run_study

    console.print(
        f"study [bold]{spec.name}[/]: {spec.search.num_samples} trials of up to "
        f"{spec.scheduler.max_epochs} epochs on {spec.dataset.name}, space "
        f"{spec.space.name} ({', '.join(spec.space.params)}); records under {folder}"
    )
    started = time.perf_counter()
    try:
        ranked = run_study(spec, folder, checked, console, replace=replace)
    except UserError as error:  # another driver claimed the name since preflight
        _fail(error)
    except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001  (one line, whatever it was)
        _stopped(error, spec, folder)
    _summary(ranked, spec, time.perf_counter() - started)
    _ended_short(spec, folder)


@app.command()
def resume(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    root: RootOption = None,
    address: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option("--address", help="The Ray cluster to continue on [default: the spec's]."),
    ] = None,
) -> None:
    """Continue a study whose driver stopped: same Optuna study, same MLflow runs, unfinished
    trials from their last checkpoints."""
    from study.commands.preflight import check_resumable, prepare_resume

    try:
        folder, spec = _saved(root, name, address)
        check_resumable(spec, spec.layout(folder))  # before its data is read
        checked = prepare_resume(spec, folder)
        spec = checked.spec
    except UserError as error:
        _fail(error)
    from study.commands.run import resume_study

    console.print(f"resuming study [bold]{name}[/] under {folder}")
    started = time.perf_counter()
    try:
        ranked = resume_study(spec, folder, checked, console)
    except UserError as error:
        _fail(error)
    except (Exception, KeyboardInterrupt) as error:  # noqa: BLE001  (one line, whatever it was)
        _stopped(error, spec, folder)
    _summary(ranked, spec, time.perf_counter() - started)
    _ended_short(spec, folder)


@app.command()
def status(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    root: RootOption = None,
) -> None:
    """Show a running or finished study from its records: trials by outcome, best so far,
    epochs spent."""
    from study.commands.status import study_status

    try:
        folder, spec = _saved(root, name)
        study_status(spec, folder, console)
    except UserError as error:
        _fail(error)


@app.command()
def report(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    root: RootOption = None,
    gap: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            help="Overfitting: the final train-val gap above this (accuracy; regression: "
            "(val_rmse - train_rmse) / val_rmse) ... [default: 0.05; regression 0.10]"
        ),
    ] = None,
    rise: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(help="... and val_loss this fraction above its minimum [default: 0.10]."),
    ] = None,
    underfit: Annotated[
        Optional[float],  # noqa: UP045
        typer.Option(
            help="Underfitting: final train_acc this far below the study's best train_acc "
            "(regression: train R^2 below the best val R^2) [default: 0.10; regression 0.05]."
        ),
    ] = None,
) -> None:
    """Which regularization works here: plots, fit diagnosis, importance, equal-budget
    leaderboard and a summary, as PNGs + one HTML page, also logged on the parent run."""
    try:
        folder, spec = _saved(root, name)
        from study.commands.report import report as write

        made = write(spec, folder, gap=gap, rise=rise, underfit=underfit)
    except UserError as error:
        _fail(error)
    for line in made["summary"]:
        console.print(line, highlight=False, soft_wrap=True)
    page = made["folder"] / "report.html"
    console.print(f"report: {page} (also on the parent MLflow run, under report/)", soft_wrap=True)


@app.command()
def export(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    output: Annotated[
        Optional[Path],  # noqa: UP045
        typer.Option("-o", "--output", help="A .yaml file (top 1) or a folder."),
    ] = None,
    top: Annotated[int, typer.Option("--top", min=1, help="How many of the best trials.")] = 1,
    fmt: Annotated[
        str,
        typer.Option(
            "--format",
            help="bundle: a folder per trial (config.yaml + checkpoint.pt), or one .yaml file "
            "with -o x.yaml; yaml, json, csv: the configs alone, to -o or standard output.",
        ),
    ] = "bundle",
    metric: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Rank by this metric [default: the study's]."),
    ] = None,
    mode: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="max or min [default: the study's, or min for a loss]."),
    ] = None,
    root: RootOption = None,
) -> None:
    """Write the best trials: full config, seed, code version, MLflow run and checkpoint."""
    from study.commands.export import FORMATS, export_configs
    from study.commands.export import export as write
    from study.spec import root_folder

    try:
        for option, value, known in (("--format", fmt, FORMATS), ("--mode", mode, ("max", "min"))):
            if value is not None and value not in known:
                raise UserError(f"{option}: unknown value {value!r}; use one of {', '.join(known)}")
        if fmt != "bundle":
            text = export_configs(root_folder(root), name, fmt, top, output, metric, mode)
            if output is None:
                sys.stdout.write(text)
            return
        written = write(root_folder(root), name, top, output, metric, mode)
    except UserError as error:
        _fail(error)
    for path, document in written:
        console.print(
            f"{path}  {document['trial']} {document['metric']}={document['value']:.4f}",
            highlight=False,
        )


@app.command()
def train(
    config: Annotated[Path, typer.Argument(help="A config written by `study export`.")],
    test: Annotated[
        bool, typer.Option("--test", help="Also score the held-out test split at the end.")
    ] = False,
    seeds: Annotated[
        int, typer.Option(min=1, help="Train with this many seeds; print mean and std.")
    ] = 1,
    register: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(help="Register the (first seed's) model in MLflow's registry as NAME."),
    ] = None,
    log: Annotated[
        bool, typer.Option(help="Log the retraining as a run in the study's MLflow experiment.")
    ] = True,
    refit: Annotated[
        bool,
        typer.Option(
            "--refit",
            help="A cross-validated config: train one model on all of its folds' data, for "
            "the epochs the folds trained, and score it with --test.",
        ),
    ] = False,
) -> None:
    """Retrain one exported config with the same loop, without Ray; print every epoch, or
    each seed's result and their mean and std with --seeds."""
    from study.commands.train import train as retrain

    try:
        retrain(config, console, test=test, seeds=seeds, register=register, log=log, refit=refit)
    except UserError as error:
        _fail(error)


TrialOption = Annotated[
    Optional[str],  # noqa: UP045
    typer.Option("--trial", help="The trial to ablate, e.g. t007 [default: the best]."),
]
SeedsOption = Annotated[
    int, typer.Option("--seeds", help="Training seeds per config: s, s+1, ... (2 or more).")
]


def _repeated(command: str, spec: "StudySpec", folder: Path, work: Callable[[], object]) -> None:
    """Run `work` (an ablation's or a confirmation's run; `command` the one that continues
    it): an interruption or an error of its own is one line (the traceback in the study's
    errors.txt), exit 130 or 1."""
    import traceback

    from study.core.repeat import Interrupted
    from study.engines.logs import keep_traceback
    from study.engines.outages import brief

    try:
        work()
    except UserError as error:
        _fail(error)
    except Interrupted as error:
        errors.print(
            f"interrupted: {error.done} of {error.wanted} runs recorded; `{command}` again "
            f"trains the other {error.wanted - error.done}",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(130) from None
    except Exception as error:  # noqa: BLE001  (one line for whatever stopped it)
        layout = spec.layout(folder)
        keep_traceback(layout.errors_file, "".join(traceback.format_exception(error)))
        errors.print(
            f"error: {command.split(' --')[0]} stopped on {brief(error)} (traceback: "
            f"{layout.errors_file}); once it is fixed, `{command}` continues",
            highlight=False,
            soft_wrap=True,
        )
        raise typer.Exit(1) from None


@app.command()
def ablate(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    trial: TrialOption = None,
    seeds: SeedsOption = 5,
    root: RootOption = None,
) -> None:
    """What each regularizer of the best trial is worth: the config and a variant per
    regularizer on in it, switched off (BatchNorm also on where it is off), each over
    --seeds seeds through Ray; the change paired by seed with 95% CIs and a verdict."""
    try:
        folder, spec = _saved(root, name)
        from study.commands import ablate as ablation

        made = ablation.plan(spec, folder, trial, seeds)
    except UserError as error:
        _fail(error)
    again = f"study ablate {name}" + (f" --trial {trial}" if trial else "")
    again += f" --seeds {seeds}" if seeds != 5 else ""
    _repeated(again, spec, folder, lambda: ablation.run(made, console))


@app.command()
def confirm(
    name: Annotated[str, typer.Argument(help="The study's name.")],
    top: Annotated[int, typer.Option("--top", help="How many of the best trials.")] = 3,
    seeds: SeedsOption = 5,
    against: Annotated[
        Optional[str],  # noqa: UP045
        typer.Option(
            "--with",
            help="A trial (your baseline, e.g. t001) each of the top is compared with, paired "
            "by seed, with 95% CIs and a verdict.",
        ),
    ] = None,
    root: RootOption = None,
) -> None:
    """The top trials retrained over --seeds seeds each through Ray, ranked by mean with 95%
    CIs, and which are indistinguishable from the first at this number of seeds; with --with,
    each against that trial."""
    try:
        folder, spec = _saved(root, name)
        from study.commands import confirm as confirmation

        made = confirmation.plan(spec, folder, top, seeds, against)
    except UserError as error:
        _fail(error)
    again = f"study confirm {name} --top {top}" + (f" --seeds {seeds}" if seeds != 5 else "")
    again += f" --with {against}" if against else ""
    _repeated(again, spec, folder, lambda: confirmation.run(made, console))


@app.command()
def ui(
    port: Annotated[int, typer.Option("--port", help="Port on 127.0.0.1.")] = 5000,
    root: RootOption = None,
) -> None:
    """Serve the MLflow UI for the root folder's store on 127.0.0.1 and print the study links."""
    from study.commands.ui import serve
    from study.spec import root_folder

    try:
        serve(root_folder(root), port, console)
    except UserError as error:
        _fail(error)


@app.command()
def spaces() -> None:
    """List the shipped search spaces and their parameters."""
    from study.commands.spaces import print_spaces

    print_spaces(console)
