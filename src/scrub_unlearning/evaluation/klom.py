"""KLoM, "KL divergence of margins" (Georgiev, Rinberg, Park, Garg, Ilyas, Madry and Neel, *Attribute-to-Delete:
Machine Unlearning via Datamodel Matching*, 2024, appendix E.1; the metric of the Easy Data Unlearning Bench).

For one example x, KLoM = KL(P_method ‖ P_retrain): P_method is the distribution of x's logit margin over models
trained on the full data and then unlearned by the method, P_retrain its distribution over models retrained
without the forget set. 0 = the method's outputs on x are distributed exactly as a retrained model's.

Here the models are U-LiRA's shadows (docs/design.md §5), no extra training: shadow k trained on base ∪ H_k, the
method unlearned F_k from it, and Retrain's shadow k was retrained on (base ∪ H_k) \\ F_k, so the two are comparable
shadow by shadow. Observations are grouped by what shadow k did with x, and each group gives its own per-example
distribution (never mixed): x ∈ F_k (forgotten), x ∈ H_k \\ F_k (trained on and kept), x ∉ H_k (never trained on).

Estimator (the paper bins margins over ~100 models per side; U-LiRA has K/2 per side, 8 by default): a Gaussian fit
per example and side, then the closed form KL(N(m1, s1²) ‖ N(m2, s2²)) = log(s2/s1) + (s1² + (m1 − m2)²) / (2 s2²)
− 1/2. Means are per example. Standard deviations are unbiased (ddof 1) and, with fewer than 64 shadows (U-LiRA's
rule, `ulira.GLOBAL_VARIANCE_BELOW`), pooled per side over the group's examples (deviations from each example's own
mean), as U-LiRA's Gaussians are: 8 observations give a per-example std too noisy for a ratio of variances (on
identical N(0, 1) sides, 8 vs 8 observations: per-example median 0.20, 95th percentile 1.25; pooled over 30
examples 0.06 and 0.50 — the scale of "no difference" at the default K = 16). Stds are
floored at `MIN_STD`. A shared-bin histogram estimator (as the paper's code does) is available as
`estimator="binned"`; with a handful of shadows it is dominated by empty bins. All are biased upwards with few
observations: two samples of the same distribution do not give 0, so KLoM compares methods with each other on the
same shadows, not with 0.
"""

from __future__ import annotations

import math

import numpy as np

from .ulira import GLOBAL_VARIANCE_BELOW

MIN_STD = 0.05
"""Floor on a fitted margin std (logit units): identical margins on every shadow (a saturated example) would
otherwise make the KL infinite. Typical margin spreads over shadows are ~1."""

MIN_OBSERVATIONS = 2
"""Observations a side needs for an unbiased std (fewer: that example's KLoM is NaN)."""

PERCENTILES = (50, 95)
"""Percentiles of per-example KLoM reported per group (`klom_<group>_p50`, `klom_<group>_p95`)."""


def gaussian_kl(mu_p, sd_p, mu_q, sd_q) -> np.ndarray:
    """KL(N(mu_p, sd_p²) ‖ N(mu_q, sd_q²)) in nats, elementwise (NaN parameters give NaN)."""
    mu_p, sd_p, mu_q, sd_q = (np.asarray(a, dtype=np.float64) for a in (mu_p, sd_p, mu_q, sd_q))
    return np.log(sd_q / sd_p) + (sd_p ** 2 + (mu_p - mu_q) ** 2) / (2.0 * sd_q ** 2) - 0.5


def _fit(phi: np.ndarray, mask: np.ndarray, min_std: float, pooled: bool) -> tuple[np.ndarray, np.ndarray]:
    """Per column: mean and std (ddof 1, floored) of phi over the rows where mask is True; NaN for a column with
    fewer than `MIN_OBSERVATIONS`. `pooled`: one std for every such column, sqrt(sum of squared deviations from each
    column's own mean / (observations − columns))."""
    count = mask.sum(axis=0)
    enough = count >= MIN_OBSERVATIONS
    mean = np.where(mask, phi, 0.0).sum(axis=0) / np.maximum(count, 1)
    squared = np.where(mask, (phi - mean) ** 2, 0.0).sum(axis=0)
    if pooled:
        dof = int((count[enough] - 1).sum())
        std = np.full(phi.shape[1], np.sqrt(squared[enough].sum() / dof) if dof > 0 else np.nan)
    else:
        std = np.sqrt(squared / np.maximum(count - 1, 1))
    std = np.maximum(std, min_std)
    return np.where(enough, mean, np.nan), np.where(enough, std, np.nan)


def _binned_kl(p: np.ndarray, q: np.ndarray, bins: int, eps: float) -> float:
    """KL(p ‖ q) of two samples through histograms on shared bins spanning both, each bin + eps, renormalised."""
    low, high = float(min(p.min(), q.min())), float(max(p.max(), q.max()))
    if high <= low:
        return 0.0
    edges = np.linspace(low, high, bins + 1)
    hp = np.histogram(p, edges)[0] + eps
    hq = np.histogram(q, edges)[0] + eps
    hp, hq = hp / hp.sum(), hq / hq.sum()
    return float(np.sum(hp * np.log(hp / hq)))


def klom_per_example(phi_method: np.ndarray, phi_reference: np.ndarray, mask: np.ndarray, *,
                     estimator: str = "gaussian", global_variance: bool | None = None, min_std: float = MIN_STD,
                     bins: int = 20, eps: float = 1e-5) -> np.ndarray:
    """KL(method ‖ reference) per example (column) of two (K, n) margin matrices, over the shadows (rows) where
    `mask` is True and both margins are finite. NaN where a side has fewer than `MIN_OBSERVATIONS`.

    `estimator`: "gaussian" (fit per example and side, closed-form KL; see the module docstring) or "binned"
    (shared-bin histograms with `bins` bins and `eps` added to every bin). `global_variance` (Gaussian only): pool
    each side's std over the examples; None = pooled when K < `GLOBAL_VARIANCE_BELOW`, as U-LiRA does."""
    phi_method = np.asarray(phi_method, dtype=np.float64)
    phi_reference = np.asarray(phi_reference, dtype=np.float64)
    mask = np.asarray(mask, dtype=bool)
    if phi_method.ndim != 2 or phi_method.shape != phi_reference.shape or mask.shape != phi_method.shape:
        raise ValueError(f"klom needs equal (K, n) arrays, got {phi_method.shape}, {phi_reference.shape} and "
                         f"{mask.shape}")
    use = mask & np.isfinite(phi_method) & np.isfinite(phi_reference)
    if estimator == "gaussian":
        pooled = phi_method.shape[0] < GLOBAL_VARIANCE_BELOW if global_variance is None else bool(global_variance)
        mu_m, sd_m = _fit(np.where(use, phi_method, 0.0), use, min_std, pooled)
        mu_r, sd_r = _fit(np.where(use, phi_reference, 0.0), use, min_std, pooled)
        return gaussian_kl(mu_m, sd_m, mu_r, sd_r)
    if estimator == "binned":
        out = np.full(phi_method.shape[1], np.nan)
        for i in range(phi_method.shape[1]):
            rows = use[:, i]
            if rows.sum() >= MIN_OBSERVATIONS:
                out[i] = _binned_kl(phi_method[rows, i], phi_reference[rows, i], bins, eps)
        return out
    raise ValueError(f"klom estimator must be 'gaussian' or 'binned', got {estimator!r}")


def klom_metrics(phi_method: np.ndarray, phi_reference: np.ndarray, forgotten: np.ndarray,
                 never_forgotten: list[np.ndarray] | tuple[np.ndarray, ...], *, estimator: str = "gaussian",
                 percentiles: tuple[int, ...] = PERCENTILES) -> dict[str, float]:
    """`klom_forget_p<q>` over the per-example KLoM of the shadows where `forgotten` (x ∈ F_k), and
    `klom_retain_p<q>` over the per-example KLoM of each group in `never_forgotten` (e.g. x ∈ H_k \\ F_k and
    x ∉ H_k: every (example, group) with enough observations is one value; groups are never pooled into one
    distribution). Percentiles of the finite values; NaN when there is none."""
    out: dict[str, float] = {}
    groups = {"forget": [forgotten], "retain": list(never_forgotten)}
    for name, masks in groups.items():
        values = np.concatenate([klom_per_example(phi_method, phi_reference, m, estimator=estimator)
                                 for m in masks]) if masks else np.array([])
        values = values[np.isfinite(values)]
        for q in percentiles:
            out[f"klom_{name}_p{q}"] = float(np.percentile(values, q)) if values.size else math.nan
    return out
