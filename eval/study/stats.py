"""The statistics of a study's paired comparisons: mean and sample std, t intervals, the one-sided
paired t-test its decision rule reads, the equivalence test (TOST) beside it, the power of that
test at a given noise (with the noise's own uncertainty), and a screen's family-wise false pass."""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np


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


def _spread(deltas: list[float]) -> tuple[float, int, float | None]:
    """(mean, degrees of freedom, standard error of the mean); the error is None below two values
    or when they do not vary (a t statistic of infinity: no test)."""
    mean, std = mean_std(deltas)
    if std is None or std == 0:
        return mean, len(deltas) - 1, None
    return mean, len(deltas) - 1, std / math.sqrt(len(deltas))


def paired_test(deltas: list[float], alpha: float = 0.05) -> PairedTest | None:
    """None without deltas; no bound and no p below two seeds, or when the deltas do not vary at
    all (a t statistic of infinity: identical deltas on every seed mean the runs are not the
    independent draws the test assumes, e.g. two arms that are the same run, so no verdict)."""
    if not deltas:
        return None
    mean, df, se = _spread(deltas)
    if se is None:
        return PairedTest(len(deltas), mean, None, None, None)
    from scipy.stats import t

    half = float(t.ppf(1 - alpha, df)) * se
    return PairedTest(len(deltas), mean, mean - half, t_interval(deltas, 0.95), float(t.sf(mean / se, df)))


@dataclass
class EquivalenceTest:
    """TOST (two one-sided paired t-tests) of H0: |mean delta| >= margin against 'no practical
    difference': equivalent only if both one-sided tests reject at alpha, i.e. the (1 - 2 alpha)
    two-sided interval of the mean delta lies inside (-margin, +margin)."""

    n: int
    mean: float
    margin: float
    ci: tuple[float, float] | None  # the (1 - 2 alpha) interval the rule reads (90% at alpha 0.05)
    p: float | None  # the larger of the two one-sided p-values

    @property
    def equivalent(self) -> bool:
        return self.ci is not None and -self.margin < self.ci[0] and self.ci[1] < self.margin


def equivalence_test(deltas: list[float], margin: float, alpha: float = 0.05) -> EquivalenceTest | None:
    """None without deltas; no interval and no p below two seeds or with deltas that do not vary."""
    if not deltas:
        return None
    mean, df, se = _spread(deltas)
    if se is None:
        return EquivalenceTest(len(deltas), mean, margin, None, None)
    from scipy.stats import t

    p_above_lower = float(t.sf((mean + margin) / se, df))  # H0: mean <= -margin
    p_below_upper = float(t.cdf((mean - margin) / se, df))  # H0: mean >= +margin
    return EquivalenceTest(len(deltas), mean, margin, t_interval(deltas, 1 - 2 * alpha),
                           max(p_above_lower, p_below_upper))


def std_interval(std: float, df: int, level: float = 0.95) -> tuple[float, float] | None:
    """Chi-square confidence interval of a standard deviation estimated with `df` degrees of freedom
    (n - 1 for one sample; the sum of n_i - 1 when pooled): the power a study quotes is estimated
    from its own noise and is no surer than this."""
    if df < 1:
        return None
    from scipy.stats import chi2

    return (std * math.sqrt(df / float(chi2.ppf(0.5 + level / 2, df))),
            std * math.sqrt(df / float(chi2.ppf(0.5 - level / 2, df))))


def family_false_pass(groups: list[int], seeds: int, std: float, bar: float) -> float:
    """Chance that at least one null arm (true delta 0) has a mean paired delta over `seeds` seeds
    at or above `bar`, when paired deltas scatter with `std`. `groups`: how many screened arms
    share each control. Arms of one control share its runs, so their deltas correlate: with arm
    and control runs scattering alike and independently, the correlation is 0.5; arms of
    different controls are independent."""
    from scipy.stats import multivariate_normal, norm

    sd = std / math.sqrt(seeds)
    none_pass = 1.0
    for arms in groups:
        if arms == 1:
            none_pass *= float(norm.cdf(bar / sd))
        elif arms > 1:
            cov = sd**2 * (0.5 * np.eye(arms) + 0.5)
            none_pass *= float(multivariate_normal(mean=[0.0] * arms, cov=cov).cdf([bar] * arms))
    return 1 - none_pass



def count_positive(deltas: dict[int, float]) -> int:
    return sum(d > 0 for d in deltas.values())


def paired_deltas(arm: dict[int, float], control: dict[int, float]) -> dict[int, float]:
    """Per seed, arm minus control, on the seeds both have (same seed = same data order)."""
    return {s: arm[s] - control[s] for s in sorted(arm) if s in control}
