"""Evidence over seeds: a mean with its t confidence interval, the differences of two configs
paired by training seed, and what an interval says in words. Plain Python and scipy's t
quantile; no Ray, MLflow or torch.

    >>> change = paired_interval({0: 0.95, 1: 0.96, 2: 0.94}, {0: 0.98, 1: 0.98, 2: 0.97})
    >>> round(change.mean, 4), verdict(change, mode="max", removed=True)
    (-0.0267, 'helps')
"""

import math
from dataclasses import dataclass

from study.core import finite

CONFIDENCE = 0.95


@dataclass(frozen=True)
class Interval:
    """A mean over `n` values, their sample standard deviation and the two-sided confidence
    interval [low, high] (NaN bounds below two values)."""

    mean: float
    low: float
    high: float
    std: float
    n: int

    def holds(self, value: float) -> bool:
        """Whether `value` lies in the interval (bounds included)."""
        return self.low <= value <= self.high


def t_quantile(n: int, confidence: float = CONFIDENCE) -> float:
    """The t distribution's two-sided quantile for a mean of `n` values (n - 1 degrees of
    freedom): 2.776 for five values at 95%."""
    from scipy.stats import t

    return float(t.ppf(0.5 + confidence / 2, n - 1))


def t_interval(values: list[float], confidence: float = CONFIDENCE) -> Interval:
    """The mean of the finite `values` and its t confidence interval."""
    kept = [v for v in values if finite(v)]
    n = len(kept)
    if n == 0:
        return Interval(math.nan, math.nan, math.nan, math.nan, 0)
    mean = sum(kept) / n
    if n < 2:
        return Interval(mean, math.nan, math.nan, math.nan, 1)
    std = math.sqrt(sum((v - mean) ** 2 for v in kept) / (n - 1))
    half = t_quantile(n, confidence) * std / math.sqrt(n)
    return Interval(mean, mean - half, mean + half, std, n)


def differences(variant: dict[int, float], base: dict[int, float]) -> list[float]:
    """variant - base for each seed both have a finite value for, in seed order."""
    seeds = sorted(s for s in variant.keys() & base.keys() if finite(variant[s] - base[s]))
    return [variant[s] - base[s] for s in seeds]


def paired_interval(
    variant: dict[int, float], base: dict[int, float], confidence: float = CONFIDENCE
) -> Interval:
    """The mean change from `base` to `variant` (values by training seed), paired by seed,
    with its t confidence interval."""
    return t_interval(differences(variant, base), confidence)


def verdict(change: Interval, mode: str, removed: bool = True) -> str:
    """What `change` (variant - config, in the study's metric, better higher when `mode` is
    max) says of the regularizer the variant removed (`removed`) or added: it helps, it
    hurts, or no effect is detectable at this number of seeds."""
    if change.n < 2:
        return f"not enough seeds with a value ({change.n})"
    # Its effect: the metric with the regularizer minus without, higher = better.
    sign = (1 if mode == "max" else -1) * (-1 if removed else 1)
    low, high = sorted((sign * change.low, sign * change.high))
    if low > 0:
        return "helps"
    if high < 0:
        return "hurts"
    return f"no effect detectable at {change.n} seeds"


def versus(change: Interval, mode: str, baseline: str) -> str:
    """What `change` (a trial minus the `baseline` trial, paired by seed) says: better than the
    baseline, worse, or no difference detectable at this number of seeds."""
    said = verdict(change, mode, removed=False)
    words = {"helps": f"better than {baseline}", "hurts": f"worse than {baseline}"}
    return words.get(said, said.replace("no effect", "no difference"))


def ranked_means(means: dict[str, Interval], mode: str) -> list[str]:
    """The names of `means`, best mean first (NaN last)."""
    sign = -1 if mode == "max" else 1
    return sorted(means, key=lambda k: (not finite(means[k].mean), sign * means[k].mean))
