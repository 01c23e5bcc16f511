"""A trial's run name, as a human reads it in a list of runs: `t007 lr=3e-3 wd=1e-4 p=0.13 bn`."""

from typing import Any

from study.core.config import label

NAME_ORDER = ("lr", "weight_decay", "dropout", "batch_norm", "l1", "optimizer")
SHORT = {"weight_decay": "wd", "dropout": "p", "momentum": "m", "batch_norm": "bn"}


def short(value: Any) -> str:
    """A number as a human writes it in a run name: 3e-3, 1e-4, 0.13."""
    if isinstance(value, bool) or not isinstance(value, float):
        return str(value)
    if value != 0 and abs(value) < 0.01:
        mantissa, exponent = f"{value:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    return f"{value:.2g}"


def run_name(number: int, sampled: dict[str, Any], limit: int = 6) -> str:
    """`t007 lr=3e-3 wd=1e-4 p=0.13 bn`: the trial number and up to `limit` sampled values,
    the regularization knobs first."""
    first = [k for k in NAME_ORDER if k in sampled]
    words = [label(number)]
    for name in (first + [k for k in sampled if k not in first])[:limit]:
        value = sampled[name]
        if name == "batch_norm":
            words.append("bn" if value else "no-bn")
        else:
            words.append(f"{SHORT.get(name, name)}={short(value)}")
    return " ".join(words)
