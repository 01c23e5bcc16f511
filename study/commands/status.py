"""`study status`: where a study stands, from its own recorded state (study.core.stage), while
it runs or after it ended: no store is opened, no Ray is started, nothing is written. A study
recorded before its state was (an older version's) is counted from its MLflow records."""

from pathlib import Path

from rich.console import Console

from study.core import ENDED, Stage, StudyState, driver, stage, standing
from study.spec import StudySpec


def study_status(spec: StudySpec, root: Path, console: Console) -> dict:
    """Print and return where the study stands (running, finished, ended short, failed,
    killed, interrupted: its driver gone mid-way), its trials by outcome, the best so far and
    the epochs spent."""
    layout = spec.layout(root)
    state = stage.load(layout.stage_record) or from_records(spec, root)
    now = standing(spec.name, state, driver.is_driven(layout), driver.who(layout))
    console.print(now.line, highlight=False, soft_wrap=True)
    # a dead driver's running trials are unfinished: resume runs them
    unfinished = "running" if now.word == "running" else "unfinished"
    counted = {unfinished: state.running}
    counted |= {o.value: state.outcomes.get(o.value, 0) for o in ENDED}
    if state.started:
        console.print("  " + ", ".join(f"{o} {n}" for o, n in counted.items() if n))
    console.print(f"  epochs spent {state.epochs} (a full trial is {spec.scheduler.max_epochs})")
    if state.best:
        trial, value = state.best
        console.print(f"  best {spec.metric} {value:.4f}: {trial}", highlight=False)
    return {"state": now.word, "counts": counted, "epochs": state.epochs, "best": state.best}


def from_records(spec: StudySpec, root: Path) -> StudyState:
    """The state of a study that has no recorded one, counted from its MLflow records (its
    parent run's status as its stage)."""
    from study.engines.records import StudyRecords

    records = StudyRecords.reading(spec.layout(root))
    trials = records.trials() if records else []
    status = records.status(records.parent_id) if records else "RUNNING"
    state = StudyState(Stage.TRIALS_STARTED, spec.search.num_samples)
    if status == "FINISHED":
        state = state.at(Stage.FINISHED)
    elif status in ("FAILED", "KILLED"):
        state = StudyState(
            Stage.TRIALS_STARTED,
            spec.search.num_samples,
            stopped="its driver stopped before the trials ended",
            interrupted=status == "KILLED",
        )
    return stage.counted(state, trials, spec.metric, spec.mode)
