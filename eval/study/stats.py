"""The statistics of a study's paired comparisons: mean and sample std, t intervals, the one-sided
paired t-test its decision rule reads, and the power of that test at a given noise."""

from __future__ import annotations

import math
from dataclasses import dataclass


def mean_std(values: list[float]) -> tuple[float | None, float | None]:
    """Mean and sample standard deviation (n - 1); std is None below two values."""
    if not values:
        return None, None
    mean = sum(values) / len(values)
    if len(values) < 2:
        return mean, None
    return mean, math.sqrt(sum((v - mean) ** 2 for v in values) / (len(values) - 1))


def t_interval(values: list[float], level: float = 0.95) -> tuple[float, float] | None:
    """Student-t confidence interval for the mean of paired deltas (None below two values). With 3
    seeds t(0.975, 2) = 4.30: the interval is wide, which is the honest size of a 3-seed claim."""
    mean, std = mean_std(values)
    if std is None:
        return None
    from scipy.stats import t

    half = float(t.ppf(0.5 + level / 2, len(values) - 1)) * std / math.sqrt(len(values))
    return mean - half, mean + half


def pooled_delta_std(delta_sets: list[dict[int, float]]) -> float | None:
    """The training noise of a paired difference: the std of per-seed deltas around each arm's own
    mean, pooled over arms ((n - 1)-weighted variances); None below two seeds."""
    num = den = 0.0
    for deltas in delta_sets:
        _, std = mean_std(list(deltas.values()))
        if std is not None:
            num += (len(deltas) - 1) * std**2
            den += len(deltas) - 1
    return math.sqrt(num / den) if den else None


def paired_power(effect: float, std: float, n: int, alpha: float = 0.05) -> float:
    """Chance that a one-sided paired t-test at level alpha on n seeds finds a true mean
    difference `effect` > 0 when paired differences scatter with `std` (noncentral t)."""
    from scipy.stats import nct, t

    if n < 2:
        return 0.0
    df, shift = n - 1, effect / (std / math.sqrt(n))
    return float(1 - nct.cdf(float(t.ppf(1 - alpha, df)), df, shift))


def seeds_for_power(effect: float, std: float, power: float = 0.8, alpha: float = 0.05, most: int = 1000) -> int | None:
    """The fewest seeds (>= 2) that give `power` for `effect`; None beyond `most`."""
    return next((n for n in range(2, most + 1) if paired_power(effect, std, n, alpha) >= power), None)


@dataclass
class PairedTest:
    """One-sided paired t-test of H0: mean delta <= 0 against 'the arm helps'."""

    n: int
    mean: float
    lower: float | None  # one-sided (1 - alpha) lower confidence bound of the mean delta
    ci: tuple[float, float] | None  # two-sided 95% interval of the mean delta, always shown beside the verdict
    p: float | None  # one-sided p-value

    @property
    def helps(self) -> bool:
        return self.lower is not None and self.lower > 0


def paired_test(deltas: list[float], alpha: float = 0.05) -> PairedTest | None:
    if not deltas:
        return None
    mean, std = mean_std(deltas)
    if std is None:
        return PairedTest(len(deltas), mean, None, None, None)
    from scipy.stats import t

    df, se = len(deltas) - 1, std / math.sqrt(len(deltas))
    half = float(t.ppf(1 - alpha, df)) * se
    p = float(t.sf(mean / se, df)) if se > 0 else (0.0 if mean > 0 else 1.0)
    return PairedTest(len(deltas), mean, mean - half, t_interval(deltas, 0.95), p)


def count_positive(deltas: dict[int, float]) -> int:
    return sum(d > 0 for d in deltas.values())


def paired_deltas(arm: dict[int, float], control: dict[int, float]) -> dict[int, float]:
    """Per seed, arm minus control, on the seeds both have (same seed = same data order)."""
    return {s: arm[s] - control[s] for s in sorted(arm) if s in control}
