"""k-fold cross-validation inside a trial: what an epoch of K folds trained side by side costs
against K epochs of the hold-out split (the target: K times, no more).

The same config (a digits MLP, a diabetes MLP) trains for a few epochs on the hold-out split
and with `cv_folds: 5`, in this process, one torch thread, the two interleaved; each figure is
the median over rounds of the mean epoch time (the `epoch_time` the loop reports: training
and evaluation).

    python -m benchmarks.folds
"""

import statistics

import torch

from benchmarks.common import arguments, record
from trainables import fit, load_dataset

K = 5
CASES = {
    "digits": ({"name": "digits"}, {"lr": 3e-3, "model": {"name": "mlp", "widths": [128, 128]}}),
    "diabetes": (
        {"name": "diabetes"},
        {"lr": 3e-3, "loss": "mse", "model": {"name": "mlp", "widths": [128, 128]}},
    ),
}


def epoch_seconds(config: dict, data, epochs: int) -> float:
    """The mean epoch time of one run of `epochs` epochs (after the first, which warms up)."""
    times: list[float] = []
    fit({**config, "epochs": epochs}, data, lambda m, s: times.append(m["epoch_time"]))
    return statistics.mean(times[1:] or times)


def main() -> None:
    def options(parser):
        parser.add_argument("--rounds", type=int, default=5)
        parser.add_argument("--epochs", type=int, default=6)

    args = arguments(f"Cross-validation: an epoch of {K} folds vs {K} hold-out epochs.", options)
    rounds, epochs = (1, 2) if args.quick else (args.rounds, args.epochs)
    torch.set_num_threads(1)
    rows, worst = [], 0.0
    for name, (dataset, knobs) in CASES.items():
        holdout = load_dataset(dataset, seed=0)
        folds = load_dataset({**dataset, "cv_folds": K}, seed=0)
        config = {"dataset": dataset, "seed": 0, **knobs}
        one, many = [], []
        for _ in range(rounds):  # interleaved, so a drift in the machine hits both
            one.append(epoch_seconds(config, holdout, epochs))
            many.append(epoch_seconds({**config, "dataset": {**dataset, "cv_folds": K}}, folds,
                                      epochs))  # fmt: skip
        single, together = statistics.median(one), statistics.median(many)
        ratio = together / (K * single)
        worst = max(worst, ratio)
        rows.append([name, f"{single * 1000:.1f}", f"{together * 1000:.1f}", f"{ratio:.2f}x"])
    verdict = "met" if worst <= 1.10 else "NOT met"
    notes = (
        f"{rounds} interleaved rounds of {epochs} epochs each (the first epoch of a run not "
        f"counted), medians; one torch thread, CPU. A {K}-fold epoch trains and evaluates the "
        f"{K} fold models one after another on the same thread; the hold-out epoch trains on "
        f"80% of the data and the fold epoch's models on 80% each too. Target ({K}-fold epoch "
        f"<= {K} hold-out epochs, within 10%): {verdict} (worst {worst:.2f}x)."
    )
    headers = ["data", "hold-out epoch ms", f"{K}-fold epoch ms", f"{K}-fold / ({K} x hold-out)"]
    record("Cross-validation epoch cost", args, headers, rows, notes)


if __name__ == "__main__":
    main()
