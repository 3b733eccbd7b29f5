"""U-LiRA statistics (docs/design.md §5): per-example Gaussian likelihood-ratio membership attack on unlearned shadows.

U-LiRA (Hayes et al. 2024, "Inexact unlearning needs more careful evaluations to avoid a false sense of privacy")
applies LiRA (Carlini et al. 2022, "Membership inference attacks from first principles") to unlearning: for every
pool example, the logit margins of shadows that trained on it and then unlearned it (IN) are compared with those of
shadows that never trained on it (OUT). A perfect unlearning method makes the two indistinguishable (AUC 0.5).

This module only does the statistics on a (K shadows × n examples) matrix of logit margins; training the shadows
lives elsewhere. Conventions:

- Means are arithmetic means; standard deviations use ddof=0 (the maximum-likelihood estimate, as `np.std` in the
  LiRA reference code), so they are defined for a single observation, and are floored at `MIN_STD`.
- The global (pooled) standard deviation of one side is sqrt(sum of squared deviations of every observation from
  its own example's mean / number of observations).
- A parameter is NaN where its side has no observation for that example; such examples get a NaN score, are kept
  (with NaN) in `UliraResult.scores` and are left out of the AUC, its bootstrap interval, the thresholds and `acc`.
- AUC and `acc` are fractions in [0, 1], not percentages. `acc` is balanced accuracy, (TPR + TNR) / 2.
- Intervals are percentile bootstraps of the AUC with the leave-one-shadow-out scores held fixed (no refit per
  resample). `ci_low`/`ci_high` resample shadows AND examples (a two-way "pigeonhole" bootstrap, Owen 2007: a pair's
  weight is its shadow's count times its example's count), so the interval carries the shadow-to-shadow variance as
  well as the example-to-example one; it is mildly conservative. `ci_examples_low`/`_high` resample examples only
  (the narrower interval reported before). `paired_auc_difference` applies the same resampled weights to two
  methods scored on the same shadows, so their shared shadow and example noise cancels in the difference.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch
from sklearn.metrics import roc_auc_score, roc_curve

MIN_STD = 1e-6
"""Floor on fitted standard deviations, so identical observations cannot give a zero variance (division by 0)."""

GLOBAL_VARIANCE_BELOW = 64
"""`ulira` pools the variance over examples when it has fewer shadows than this (docs/design.md §5)."""


def logit_margin(logits: torch.Tensor, labels: torch.Tensor) -> np.ndarray:
    """phi = logit_y - logsumexp(other logits) per row, in float64 on the CPU.

    This is log(p_y / (1 - p_y)) of the softmax, LiRA's approximately Gaussian statistic; logsumexp keeps it finite
    for saturated logits where computing it from probabilities would give inf.
    """
    if logits.dim() != 2 or labels.dim() != 1 or logits.shape[0] != labels.shape[0]:
        raise ValueError(f"logit_margin needs logits (N, C) and labels (N,), got {tuple(logits.shape)} and "
                         f"{tuple(labels.shape)}")
    if logits.shape[1] < 2:
        raise ValueError(f"logit_margin needs at least 2 classes, got {logits.shape[1]}")
    z = logits.detach().to(device="cpu", dtype=torch.float64)
    y = labels.detach().to(device="cpu", dtype=torch.long).reshape(-1, 1)
    if y.numel() and (int(y.min()) < 0 or int(y.max()) >= z.shape[1]):
        raise ValueError(f"labels must lie in [0, {z.shape[1] - 1}]")
    correct = z.gather(1, y).squeeze(1)
    others = z.scatter(1, y, float("-inf"))
    return (correct - torch.logsumexp(others, dim=1)).numpy()


def fit_side(phi: np.ndarray, mask: np.ndarray, global_variance: bool) -> tuple[np.ndarray, np.ndarray]:
    """One Gaussian per example over the shadows where mask is True: (mean, std), each shaped (n,).

    phi and mask are (S, n). std uses ddof=0 (defined for one observation); with `global_variance` it is one value
    pooled over all examples (squared deviations from each example's own mean / all observations), which is steadier
    with few shadows. std is floored at `MIN_STD`. Both are NaN for an example with no shadow in mask. Shared by
    `fit_gaussians` (IN and OUT sides) and the served-model audit (OUT side only), so both fit margins the same way.
    """
    count = mask.sum(axis=0)
    seen = count > 0
    total = np.where(mask, phi, 0.0).sum(axis=0)
    mean = np.full(phi.shape[1], np.nan)
    mean[seen] = total[seen] / count[seen]
    squared = np.where(mask, (phi - np.where(seen, mean, 0.0)) ** 2, 0.0).sum(axis=0)
    if global_variance:
        n_obs = int(count.sum())
        std = np.full(phi.shape[1], np.sqrt(squared.sum() / n_obs) if n_obs else np.nan)
    else:
        std = np.full(phi.shape[1], np.nan)
        std[seen] = np.sqrt(squared[seen] / count[seen])
    std[seen] = np.maximum(std[seen], MIN_STD)
    std[~seen] = np.nan
    return mean, std


def fit_gaussians(phi: np.ndarray, in_mask: np.ndarray, out_mask: np.ndarray,
                  global_variance: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Fit one Gaussian per example to its IN margins and one to its OUT margins; returns (mu_in, sd_in, mu_out,
    sd_out), each shaped (n,).

    phi, in_mask, out_mask are (S, n): S shadows, n examples. With `global_variance` each side's std is one value
    pooled over all examples (deviations from each example's own mean), which is far more stable than a per-example
    std when there are few shadows. ddof=0 and a floor of `MIN_STD` (see the module docstring). Where an example has
    no observation on a side, that side's mean and std are NaN.
    """
    phi = np.asarray(phi, dtype=np.float64)
    in_mask = np.asarray(in_mask, dtype=bool)
    out_mask = np.asarray(out_mask, dtype=bool)
    if phi.ndim != 2 or in_mask.shape != phi.shape or out_mask.shape != phi.shape:
        raise ValueError(f"phi, in_mask and out_mask must be equal (S, n) arrays, got {phi.shape}, {in_mask.shape} "
                         f"and {out_mask.shape}")
    mu_in, sd_in = fit_side(phi, in_mask, global_variance)
    mu_out, sd_out = fit_side(phi, out_mask, global_variance)
    return mu_in, sd_in, mu_out, sd_out


def log_likelihood_ratio(phi_target: np.ndarray, mu_in, sd_in, mu_out, sd_out) -> np.ndarray:
    """log N(phi; mu_in, sd_in) - log N(phi; mu_out, sd_out), broadcast elementwise; higher = more likely a member.

    NaN parameters give NaN scores. Standard deviations must be positive.
    """
    phi_target = np.asarray(phi_target, dtype=np.float64)
    mu_in, sd_in, mu_out, sd_out = (np.asarray(a, dtype=np.float64) for a in (mu_in, sd_in, mu_out, sd_out))
    for name, sd in (("sd_in", sd_in), ("sd_out", sd_out)):
        if np.any(sd[~np.isnan(sd)] <= 0):
            raise ValueError(f"{name} must be positive")
    # The -0.5 log(2 pi) terms cancel.
    return (np.log(sd_out) - np.log(sd_in) - 0.5 * ((phi_target - mu_in) / sd_in) ** 2
            + 0.5 * ((phi_target - mu_out) / sd_out) ** 2)


@dataclass(frozen=True, eq=False)
class UliraResult:
    """Outcome of `ulira`. `auc`, `ci_low`, `ci_high` and `acc` (balanced accuracy) are fractions in [0, 1];
    `ci_low`/`ci_high` resample shadows and examples, `ci_examples_low`/`_high` examples only (module docstring).

    `scores` has one row per (shadow, example) pair that was a member or a non-member of that shadow: columns
    shadow, example, member (bool), score (leave-one-shadow-out log-likelihood ratio; NaN where unscorable).
    `fpr`, `tpr` are the ROC curve over all scored pairs.
    """

    auc: float
    ci_low: float
    ci_high: float
    acc: float
    scores: pd.DataFrame = field(repr=False)
    fpr: np.ndarray = field(repr=False)
    tpr: np.ndarray = field(repr=False)
    ci_examples_low: float = float("nan")
    ci_examples_high: float = float("nan")

    @property
    def roc(self) -> tuple[np.ndarray, np.ndarray]:
        """(fpr, tpr)."""
        return self.fpr, self.tpr

    def as_metrics(self) -> dict[str, float]:
        """The MLflow / table metrics (docs/design.md §5 names); AUC and acc in [0, 1]."""
        return {"ulira_auc": float(self.auc), "ulira_auc_ci_low": float(self.ci_low),
                "ulira_auc_ci_high": float(self.ci_high), "ulira_acc": float(self.acc),
                "ulira_auc_ci_examples_low": float(self.ci_examples_low),
                "ulira_auc_ci_examples_high": float(self.ci_examples_high)}


def _validate(phi: np.ndarray, member: np.ndarray, nonmember: np.ndarray) -> None:
    if phi.ndim != 2:
        raise ValueError(f"phi must be a (K, n) array, got shape {phi.shape}")
    if member.shape != phi.shape or nonmember.shape != phi.shape:
        raise ValueError(f"phi, member and nonmember must have equal shapes, got {phi.shape}, {member.shape} and "
                         f"{nonmember.shape}")
    if phi.shape[0] < 3:
        raise ValueError(f"U-LiRA needs K >= 3 shadows (one target, >= 2 to fit), got K = {phi.shape[0]}")
    if phi.shape[1] < 1:
        raise ValueError("U-LiRA needs at least one pool example")
    both = member & nonmember
    if both.any():
        k, i = np.argwhere(both)[0]
        raise ValueError(f"member and nonmember are both True for {int(both.sum())} entries, e.g. shadow {k}, "
                         f"example {i}")
    for name, mask in (("member (IN)", member), ("nonmember (OUT)", nonmember)):
        missing = np.flatnonzero(~mask.any(axis=0))
        if missing.size:
            raise ValueError(f"{missing.size} examples have no {name} shadow, e.g. example {missing[0]}")
    used = member | nonmember
    if not np.isfinite(phi[used]).all():
        raise ValueError("phi must be finite wherever member or nonmember is True")


def _balanced_threshold(scores: np.ndarray, is_member: np.ndarray) -> float:
    """Threshold t maximising balanced accuracy of "member iff score >= t" on these pairs (first maximum, i.e. the
    highest such t). Falls back to 0 (equal likelihoods) when one class is absent."""
    if is_member.all() or not is_member.any():
        return 0.0
    fpr, tpr, thresholds = roc_curve(is_member, scores, drop_intermediate=False)
    return float(thresholds[np.argmax(tpr + (1.0 - fpr))])


def _balanced_accuracy(predicted: np.ndarray, is_member: np.ndarray) -> float:
    return 0.5 * (float(predicted[is_member].mean()) + float((~predicted[~is_member]).mean()))


def _auc_with_multiplicity(is_member: np.ndarray, scores: np.ndarray, example: np.ndarray,
                           counts: np.ndarray) -> float:
    """AUC over all pairs, each pair repeated counts[its example] times (as integer sample weights; the same as
    duplicating the pairs). NaN when the weighted pairs lack one class."""
    weight = counts[example]
    keep = weight > 0
    y = is_member[keep]
    if y.all() or not y.any():
        return float("nan")
    return float(roc_auc_score(y, scores[keep], sample_weight=weight[keep]))


def weighted_aucs(is_member: np.ndarray, scores: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """ROC AUC of the pairs (is_member, scores) under each row of `weights` (B, N) as sample weights: P(a member
    scores above a non-member) + ½ P(tie), weighted. The same value as sklearn's `roc_auc_score(..., sample_weight=
    row)`, for B rows at once (a bootstrap needs thousands). NaN for a row without weight on both classes."""
    is_member = np.asarray(is_member, dtype=bool)
    scores = np.asarray(scores, dtype=np.float64)
    weights = np.atleast_2d(np.asarray(weights, dtype=np.float64))
    order = np.argsort(scores, kind="mergesort")
    ordered = scores[order]
    starts = np.flatnonzero(np.r_[True, ordered[1:] != ordered[:-1]])  # groups of tied scores
    w = weights[:, order]
    member = is_member[order]
    w_in = np.add.reduceat(w * member, starts, axis=1)
    w_out = np.add.reduceat(w * ~member, starts, axis=1)
    below = np.cumsum(w_out, axis=1) - w_out  # non-member weight strictly below each tie group
    numerator = (w_in * (below + 0.5 * w_out)).sum(axis=1)
    denominator = w_in.sum(axis=1) * w_out.sum(axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(denominator > 0, numerator / np.where(denominator > 0, denominator, 1.0), np.nan)


def _percentile_interval(values: np.ndarray) -> tuple[float, float]:
    if np.isnan(values).all():
        return float("nan"), float("nan")
    low, high = np.nanpercentile(values, [2.5, 97.5])
    return float(low), float(high)


def _example_weights(example: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """(B, N) pair weights of the examples-only bootstrap: each pair counts as often as its example was drawn."""
    rng = np.random.default_rng(int(seed))
    scored = np.unique(example)
    size = int(example.max()) + 1 if example.size else 0
    rows = np.empty((n_bootstrap, example.size))
    for b in range(n_bootstrap):
        rows[b] = np.bincount(rng.choice(scored, size=scored.size, replace=True), minlength=size)[example]
    return rows


def two_level_weights(shadow: np.ndarray, example: np.ndarray, n_bootstrap: int, seed: int) -> np.ndarray:
    """(B, N) pair weights of the two-level bootstrap: draw the shadows with replacement and, independently, the
    examples with replacement; a (shadow, example) pair counts (times its shadow was drawn) × (times its example was
    drawn). Seeded by (seed, 2), so it never repeats the examples-only draws."""
    rng = np.random.default_rng([int(seed), 2])
    shadows, examples = np.unique(shadow), np.unique(example)
    n_shadow = int(shadow.max()) + 1 if shadow.size else 0
    n_example = int(example.max()) + 1 if example.size else 0
    rows = np.empty((n_bootstrap, shadow.size))
    for b in range(n_bootstrap):
        shadow_count = np.bincount(rng.choice(shadows, size=shadows.size, replace=True), minlength=n_shadow)
        example_count = np.bincount(rng.choice(examples, size=examples.size, replace=True), minlength=n_example)
        rows[b] = shadow_count[shadow] * example_count[example]
    return rows


def _bootstrap_aucs(is_member: np.ndarray, scores: np.ndarray, weights: np.ndarray, chunk: int = 250) -> np.ndarray:
    return np.concatenate([weighted_aucs(is_member, scores, weights[i:i + chunk])
                           for i in range(0, len(weights), chunk)]) if len(weights) else np.array([])


def paired_auc_difference(scores_a: pd.DataFrame, scores_b: pd.DataFrame, seed: int,
                          n_bootstrap: int = 1000) -> tuple[float, float, float]:
    """AUC(a) − AUC(b) of two methods attacked on the same shadows, with its 95% two-level bootstrap interval.

    `scores_a`, `scores_b`: score tables (`UliraResult.scores` or a saved `<model>_ulira_scores.csv`: shadow,
    example, member, score). Only the (shadow, example) pairs both scored enter; every resample draws shadows and
    examples once and weighs both methods' pairs alike (a paired bootstrap). Returns (difference, low, high); NaN
    when the pairs lack a member or a non-member."""
    keys = ["shadow", "example"]
    a = scores_a[[*keys, "member", "score"]].dropna(subset=["score"])
    b = scores_b[[*keys, "member", "score"]].dropna(subset=["score"])
    both = a.merge(b, on=keys, suffixes=("_a", "_b"))
    member_a = both["member_a"].map(_as_bool).to_numpy(dtype=bool)
    if not np.array_equal(member_a, both["member_b"].map(_as_bool).to_numpy(dtype=bool)):
        raise ValueError("paired_auc_difference: the two score tables disagree on membership (not the same shadows)")
    if member_a.all() or not member_a.any():
        return float("nan"), float("nan"), float("nan")
    shadow = both["shadow"].to_numpy(dtype=np.int64)
    example = both["example"].to_numpy(dtype=np.int64)
    s_a, s_b = both["score_a"].to_numpy(dtype=float), both["score_b"].to_numpy(dtype=float)
    difference = float(roc_auc_score(member_a, s_a) - roc_auc_score(member_a, s_b))
    weights = two_level_weights(shadow, example, int(n_bootstrap), seed)
    boot = _bootstrap_aucs(member_a, s_a, weights) - _bootstrap_aucs(member_a, s_b, weights)
    low, high = _percentile_interval(boot)
    return difference, low, high


def _as_bool(value) -> bool:
    """A membership flag as stored in memory (bool) or read back from CSV ("True", 1, ...)."""
    return str(value).strip().lower() in ("true", "1", "1.0")


def ulira(phi: np.ndarray, member: np.ndarray, nonmember: np.ndarray, seed: int, n_bootstrap: int = 1000,
          global_variance: bool | None = None) -> UliraResult:
    """Leave-one-shadow-out U-LiRA on a (K, n) matrix of logit margins of unlearned shadows.

    member[k, i]: example i was in shadow k's forget set (trained on, then unlearned); nonmember[k, i]: shadow k never
    trained on i. Each shadow k in turn is the target: Gaussians fitted on the other K-1 shadows (IN = their member
    entries, OUT = their nonmember entries; pooled variance by default when K < 64) score k's member and non-member
    entries by log-likelihood ratio.

    - `auc`: ROC AUC over all scored pairs.
    - `ci_low`, `ci_high`: 2.5 / 97.5 percentiles of the AUC over `n_bootstrap` two-level resamples: shadows and
      examples (those with at least one scored pair) drawn with replacement, each pair weighted by its shadow's
      times its example's multiplicity (`two_level_weights`); seeded.
    - `ci_examples_low`, `ci_examples_high`: the same over resamples of the examples only, each example's pairs
      counted with its multiplicity; seeded.
    - `acc`: for target k, the threshold maximising balanced accuracy on the other shadows' pairs, scored by the same
      fit (fitted without k), is applied to k's pairs; `acc` is the balanced accuracy of these predictions pooled
      over all targets (member and non-member counts may differ).
    Pairs with a NaN score (example with no IN or no OUT among the other shadows) are excluded from all of these.
    """
    phi = np.asarray(phi, dtype=np.float64)
    member = np.asarray(member, dtype=bool)
    nonmember = np.asarray(nonmember, dtype=bool)
    _validate(phi, member, nonmember)
    if n_bootstrap < 1:
        raise ValueError(f"n_bootstrap must be >= 1, got {n_bootstrap}")
    n_shadows = phi.shape[0]
    if global_variance is None:
        global_variance = n_shadows < GLOBAL_VARIANCE_BELOW
    used = member | nonmember
    phi = np.where(used, phi, 0.0)  # entries outside both masks are never read; keep them from producing warnings

    loo_scores = np.full(phi.shape, np.nan)
    predicted = np.zeros(phi.shape, dtype=bool)
    for k in range(n_shadows):
        others = np.ones(n_shadows, dtype=bool)
        others[k] = False
        params = fit_gaussians(phi, member & others[:, None], nonmember & others[:, None], global_variance)
        scores_k = log_likelihood_ratio(phi, *params)  # row k: the target; other rows: in-sample, for the threshold
        loo_scores[k] = scores_k[k]
        train = used & others[:, None] & ~np.isnan(scores_k)
        threshold = _balanced_threshold(scores_k[train], member[train])
        predicted[k] = scores_k[k] >= threshold

    shadow_idx, example_idx = np.nonzero(used)
    table = pd.DataFrame({"shadow": shadow_idx.astype(np.int64), "example": example_idx.astype(np.int64),
                          "member": member[shadow_idx, example_idx],
                          "score": loo_scores[shadow_idx, example_idx]})

    valid = ~np.isnan(table["score"].to_numpy())
    y = table["member"].to_numpy()[valid]
    s = table["score"].to_numpy()[valid]
    ex = table["example"].to_numpy()[valid]
    if y.all() or not y.any():
        raise ValueError("no scorable member or no scorable non-member pair: every example needs IN and OUT "
                         "observations in shadows other than the target")
    auc = float(roc_auc_score(y, s))
    fpr, tpr, _ = roc_curve(y, s)
    acc = _balanced_accuracy(predicted[shadow_idx[valid], example_idx[valid]], y)

    sh = table["shadow"].to_numpy()[valid]
    ci_examples = _percentile_interval(_bootstrap_aucs(y, s, _example_weights(ex, n_bootstrap, seed)))
    ci_low, ci_high = _percentile_interval(_bootstrap_aucs(y, s, two_level_weights(sh, ex, n_bootstrap, seed)))
    return UliraResult(auc=auc, ci_low=ci_low, ci_high=ci_high, acc=acc, scores=table, fpr=fpr, tpr=tpr,
                       ci_examples_low=ci_examples[0], ci_examples_high=ci_examples[1])

