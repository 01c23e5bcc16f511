"""`study status`: a study's state from its records, while it runs or after it ended. It
reads and writes nothing else: no store is made, no Ray is started."""

from pathlib import Path

from rich.console import Console

from study import driver
from study.records import counts, study_records, trial_runs
from study.results import ranked, rows
from study.spec import StudySpec

# The parent run's MLflow status once its driver is gone, as `study status` says it.
ENDED = {"FINISHED": "finished", "FAILED": "failed", "KILLED": "killed"}


def study_status(spec: StudySpec, root: Path, console: Console) -> dict:
    """Print and return the study's state (running, or finished, failed, killed, interrupted:
    its driver gone without closing it), trials by outcome, the best so far, epochs spent."""
    layout = spec.layout(root)
    client, experiment_id, parent_id = study_records(layout)
    table = rows(trial_runs(client, experiment_id, parent_id), spec.metric) if parent_id else []
    if driver.is_driven(layout):
        state = "running"
    else:
        status = client.get_run(parent_id).info.status if parent_id else "RUNNING"
        state = ENDED.get(status, "interrupted")
    # a dead driver's running trials are unfinished: resume runs them
    label = {"running": "running" if state == "running" else "unfinished"}
    counted = {label.get(o, o): n for o, n in counts(table).items()}
    epochs = sum(r["epochs"] or 0 for r in table)
    best = ranked(table, spec.metric, spec.mode)
    console.print(f"{spec.name}: {state}, {len(table)} of {spec.search.num_samples} trials started")
    if state == "interrupted":
        console.print(
            f"  its driver ({driver.who(layout)}) is gone; continue the study with "
            f"`study resume {spec.name}`",
            highlight=False,
        )
    elif state in ("failed", "killed"):
        console.print(f"  continue it with `study resume {spec.name}`", highlight=False)
    if table:
        console.print("  " + ", ".join(f"{o} {n}" for o, n in counted.items() if n))
    console.print(f"  epochs spent {epochs} (a full trial is {spec.scheduler.max_epochs})")
    if best:
        top = best[0]
        value = top["metrics"][spec.metric]
        console.print(f"  best {spec.metric} {value:.4f}: {top['run_name']}", highlight=False)
    return {"state": state, "counts": counted, "epochs": epochs, "best": best[:1]}
