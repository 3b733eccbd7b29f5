"""Small statistical tests the project's verdicts rest on (docs/methods.md, "Statistics"): the exact paired test
behind SCRUB's guard, and t-based intervals and paired t-tests over seeds. Pure functions over arrays (numpy and
scipy only: no torch, no Kedro, no MLflow), so the methods, the evaluation and the pipelines can all use them.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
from scipy import stats

CONFIDENCE = 0.95
"""Level of every interval the project reports."""


@dataclass(frozen=True)
class PairedRise:
    """A paired comparison of a reference's and a candidate's per-example correctness on the same examples.

    `rise`: the candidate's error minus the reference's, in points (percent of `n`); `worse`: examples the reference
    got right and the candidate wrong; `better`: the opposite; `p_value`: exact one-sided McNemar test of "the
    candidate errs more often" (binomial test of `worse` among the `worse + better` discordant examples at 1/2;
    1.0 when there is no discordant example)."""

    rise: float
    p_value: float
    worse: int
    better: int
    n: int


def paired_error_rise(reference_correct, candidate_correct) -> PairedRise:
    """Exact McNemar test of an error rise between two classifiers scored on the same examples.

    Under "no change", each discordant example is equally likely to go either way, so `worse` ~ Binomial(worse +
    better, 1/2); the one-sided p-value is P(X >= worse) (`scipy.stats.binomtest`, alternative "greater"). Examples
    both got right or both got wrong say nothing about the difference and do not enter the test.
    """
    reference = np.asarray(reference_correct, dtype=bool).ravel()
    candidate = np.asarray(candidate_correct, dtype=bool).ravel()
    if reference.shape != candidate.shape:
        raise ValueError(f"paired_error_rise needs equal-length vectors, got {reference.size} and {candidate.size}")
    n = int(reference.size)
    worse = int((reference & ~candidate).sum())
    better = int((~reference & candidate).sum())
    rise = 100.0 * (worse - better) / n if n else math.nan
    discordant = worse + better
    p_value = 1.0 if discordant == 0 else float(stats.binomtest(worse, discordant, 0.5, alternative="greater").pvalue)
    return PairedRise(rise=rise, p_value=p_value, worse=worse, better=better, n=n)


def guard_rejects(rise: float, p_value: float, max_drop: float | None, alpha: float | None) -> bool:
    """SCRUB's guard rule: reject an epoch when its error rise exceeds `max_drop` points AND the paired test says the
    rise is not chance (`p_value < alpha`). `max_drop` None: the guard is off (never rejects); `alpha` None: the
    fixed bound alone decides (the rule before the paired test)."""
    if max_drop is None:
        return False
    if not rise > float(max_drop):
        return False
    return alpha is None or p_value < float(alpha)


@dataclass(frozen=True)
class MeanInterval:
    """Mean of n values with its sample standard deviation (ddof 1), its t-based confidence interval and the
    two-sided one-sample t-test p-value against 0; std, interval and p are NaN with fewer than two values."""

    mean: float
    std: float
    low: float
    high: float
    p_value: float
    n: int


def mean_interval(values: Sequence[float] | np.ndarray, confidence: float = CONFIDENCE) -> MeanInterval:
    """Mean ± t_{n-1} · s / sqrt(n) over the finite values (NaN dropped), with the one-sample t-test against 0.

    For per-seed gaps to Retrain (method − Retrain on the same seed) this is the paired t-test: the interval
    excludes 0 exactly when p < 1 − `confidence`. Zero spread gives a zero-width interval and p 0 (or 1 when the mean
    is 0)."""
    x = np.asarray(values, dtype=np.float64).ravel()
    x = x[np.isfinite(x)]
    n = int(x.size)
    if n == 0:
        return MeanInterval(math.nan, math.nan, math.nan, math.nan, math.nan, 0)
    mean = float(x.mean())
    if n < 2:
        return MeanInterval(mean, math.nan, math.nan, math.nan, math.nan, n)
    std = float(x.std(ddof=1))
    if std == 0.0:
        return MeanInterval(mean, 0.0, mean, mean, 1.0 if mean == 0.0 else 0.0, n)
    test = stats.ttest_1samp(x, 0.0)
    low, high = test.confidence_interval(confidence)
    return MeanInterval(mean, std, float(low), float(high), float(test.pvalue), n)
