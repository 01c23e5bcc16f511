"""`study status`: a study's state from its records, while it runs or after it ended."""

from pathlib import Path

from mlflow.tracking import MlflowClient
from rich.console import Console

from study.errors import UserError
from study.results import ranked, rows
from study.runner import parent_run, tracking_uri
from study.spec import StudySpec
from study.tracking import OUTCOMES, trial_runs


def study_status(spec: StudySpec, root: Path, console: Console) -> dict:
    """Print and return trials by outcome, the best so far and the epochs spent."""
    client = MlflowClient(tracking_uri(spec, root))
    experiment = client.get_experiment_by_name(spec.tracking.experiment or spec.name)
    parent_id = experiment and parent_run(client, experiment.experiment_id)
    if not parent_id:
        raise UserError(f"NAME: study {spec.name!r} has no MLflow runs yet")
    state = client.get_run(parent_id).info.status
    table = rows(trial_runs(client, experiment.experiment_id, parent_id), spec.metric)
    counts = {o: sum(r["outcome"] == o for r in table) for o in ("running", *OUTCOMES)}
    epochs = sum(r["epochs"] or 0 for r in table)
    best = ranked(table, spec.metric, spec.mode)
    console.print(
        f"{spec.name}: {state.lower()}, {len(table)} of {spec.search.num_samples} trials started"
    )
    console.print("  " + ", ".join(f"{o} {n}" for o, n in counts.items() if n))
    console.print(f"  epochs spent {epochs} (a full trial is {spec.scheduler.max_epochs})")
    if best:
        top = best[0]
        value = top["metrics"][spec.metric]
        console.print(f"  best {spec.metric} {value:.4f}: {top['run_name']}", highlight=False)
    return {"state": state, "counts": counts, "epochs": epochs, "best": best[:1]}
