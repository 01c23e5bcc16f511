"""Early stopping by patience: the epochs (and wall time) a study that samples `patience` saves
against the same study without it, and what it finds.

Two studies, each run with seeds 0-4 as benchmarks/search.py runs its methods (the seed drives
the sampler, the data split and the training), through `study run`'s code path (Ray Tune, TPE,
ASHA, MLflow, Optuna in SQLite under a temporary root):
  digits     the default study (24 trials of up to 27 epochs), and the same with
             patience in {0, 3, 10} sampled (monitor val_loss, the best epoch's weights kept)
  diabetes   studies/diabetes.yaml (40 trials of up to 81 epochs) without its `patience`
             parameter, and as shipped (patience in {0, 5, 15})

    python -m benchmarks.patience
"""

import io
import statistics
import tempfile
from pathlib import Path
from typing import Any

from rich.console import Console

from benchmarks.common import ROOT, arguments, record, timer
from study.commands.preflight import preflight
from study.commands.run import run_study
from study.core import results
from study.spec import StudySpec, load_spec

DIGITS_PATIENCE = [0, 3, 10]  # diabetes samples the choices studies/diabetes.yaml ships


def studies(quick: bool) -> dict[str, tuple[StudySpec, StudySpec]]:
    """Per data set: the study without patience, and with it sampled."""
    pairs = {}
    for name, path in (("digits", None), ("diabetes", ROOT / "studies" / "diabetes.yaml")):
        raw = load_spec(path).model_dump(exclude={"code_dir"})
        params = dict(raw["space"]["params"])
        shipped = params.pop("patience", None)
        choices = shipped["choices"] if shipped else DIGITS_PATIENCE
        if quick:
            raw["search"] = {**raw["search"], "num_samples": 2, "max_concurrent": 1}
            raw["scheduler"] = {**raw["scheduler"], "max_epochs": 4, "grace_period": 2}
        without = {**raw, "space": {"params": params}}
        patient = {"type": "categorical", "choices": choices}
        sampled = {**raw, "space": {"params": {**params, "patience": patient}}}
        pairs[name] = (StudySpec.model_validate(without), StudySpec.model_validate(sampled))
    return pairs


def one(spec: StudySpec, seed: int, folder: Path) -> dict[str, Any]:
    """Epochs spent, wall seconds, the best value and the patience-stopped trials of one
    study run with `seed`."""
    search = spec.search.model_copy(update={"seed": seed})
    spec = spec.model_copy(update={"search": search, "name": f"p{seed}"})
    root = folder / f"{spec.dataset.name}-{len(spec.space.params)}-{seed}"
    checked = preflight(spec, root)
    with timer() as elapsed:
        ranked = run_study(checked.spec, root, checked, Console(file=io.StringIO()))
    table = results.load(spec.layout(root))
    return {
        "epochs": sum(trial.epochs for trial in table),
        "seconds": elapsed[0],
        "best": ranked[0].metrics[checked.spec.metric],
        "stopped": sum(trial.outcome == "patience_stopped" for trial in table),
    }


def main() -> None:
    def options(parser):
        parser.add_argument("--seeds", type=int, default=5)

    args = arguments("Early stopping by patience: epochs and wall time saved.", options)
    seeds = 1 if args.quick else args.seeds
    rows, verdicts = [], []
    with tempfile.TemporaryDirectory() as folder:
        for name, (without, patient) in studies(args.quick).items():
            runs = {
                label: [one(spec, seed, Path(folder)) for seed in range(seeds)]
                for label, spec in (("without", without), ("patience sampled", patient))
            }
            mean = {k: {m: statistics.mean(r[m] for r in v) for m in v[0]} for k, v in runs.items()}
            spread = {
                k: statistics.stdev([r["best"] for r in v]) if len(v) > 1 else 0.0
                for k, v in runs.items()
            }
            for label, values in mean.items():
                rows.append(
                    [name, label, f"{values['epochs']:.0f}", f"{values['seconds']:.1f}",
                     f"{values['best']:.4f} +- {spread[label]:.4f}", f"{values['stopped']:.1f}",
                     f"{values['epochs'] / mean['without']['epochs']:.2f}x"]
                )  # fmt: skip
            better = max if without.mode == "max" else min
            noise = max(spread.values())
            pair = (mean["patience sampled"]["best"], mean["without"]["best"])
            same_or_better = better(pair) == pair[0] or abs(pair[0] - pair[1]) <= noise
            saved = mean["patience sampled"]["epochs"] < mean["without"]["epochs"]
            verdicts.append(f"{name}: {'met' if saved and same_or_better else 'NOT met'}")
    notes = (
        f"Seeds 0-{seeds - 1}, means over seeds (best: mean +- std across seeds of the study's "
        "best value: val_acc on digits, val_rmse on diabetes). Epochs: all the trials of a "
        "study trained, ASHA's cuts and patience's stops included; patience-stopped: trials per "
        "study that patience ended. Target (patience saves epochs, its best no worse beyond seed "
        f"noise): {'; '.join(verdicts)}."
    )
    headers = ["data", "study", "epochs", "wall s", "best", "patience-stopped", "epochs vs without"]
    record("Early stopping by patience", args, headers, rows, notes)


if __name__ == "__main__":
    main()
