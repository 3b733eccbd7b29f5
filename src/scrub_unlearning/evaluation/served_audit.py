"""Per-example audit of a served (unlearned) model against OUT shadows (docs/design.md §7, per-request audit).

The candidate is the deployed model after a deletion request was unlearned. For each requested example x, the OUT
shadows are those whose random training half never contained x. If the candidate forgot x, its logit margin phi(x)
(`ulira.logit_margin`) should look like a draw from the OUT shadows' margins of x; if it still remembers x, phi(x)
is higher. Each example gets z = (phi(x) - mu_OUT) / sd_OUT under a Gaussian fitted to its OUT margins
(`ulira.fit_side`, the same fit U-LiRA uses).

Calibration: the candidate trained on all the data and the shadows on half, so it scores even examples no model
ever saw higher than the shadows do (z > 0). `calibration` measures that on never-seen validation examples (median
and normal-scaled MAD of their z) and the p-value is sf((z - loc) / scale); an example is flagged when p < alpha.

Why a chance sample: the same test is run on an equally large sample of other never-seen validation examples. The
share flagged there is what chance gives for this candidate (not exactly alpha: the calibration is estimated, and
the Gaussian is fitted on few shadows), so the request's flagged share is judged against this empirical share.

Multiple testing: the per-example flags are uncorrected at alpha. They are only used as a share, compared with the
same share on the chance sample, and a single one-sided Fisher exact test carries the decision (`flag_gate`).
Benjamini-Hochberg at FDR alpha gives, separately, the count of examples individually declared remembered.

Assumptions:

- An example's OUT margins are Gaussian (LiRA's assumption for logit margins); the p-value is the Gaussian tail,
  not an empirical rank, so it can go below 1/K.
- With fewer than `GLOBAL_VARIANCE_BELOW` shadows the standard deviation is pooled over the examples scored in one
  call (ddof=0, floored at `MIN_STD`), i.e. every example is assumed to have the same OUT spread.
- The plug-in fit ignores the error of the fitted mean and the ddof=0 shrinkage, so with few OUT shadows per example
  the p-values are too small and the flagged share exceeds alpha even for a perfect candidate (about 7% at alpha
  0.05 with 8 OUT shadows). The chance sample absorbs this only when its examples have as many OUT shadows as the
  requested ones, so `request_audit.audit_statistics` gives every never-seen example the OUT set of one requested
  example (a seeded pairing), not all K.
"""

from __future__ import annotations

import math

import numpy as np
from scipy.stats import false_discovery_control, fisher_exact, median_abs_deviation, norm

from .ulira import GLOBAL_VARIANCE_BELOW, fit_side

MIN_CALIBRATION = 10
"""Fewest never-seen examples `calibration` accepts (a median and a MAD from fewer are too noisy)."""
MIN_SCALE = 1e-6


def served_z_scores(candidate_phi: np.ndarray, shadow_phi: np.ndarray, out_mask: np.ndarray,
                    global_variance: bool | None = None) -> np.ndarray:
    """Per example, how far the candidate's margin lies above its OUT shadows' Gaussian: (phi - mu) / sd.

    candidate_phi (n,): the served model's margins; shadow_phi (K, n): the shadows' margins; out_mask (K, n): shadow k
    never trained on example i. The OUT Gaussian is `fit_side`'s, with the variance pooled over examples when
    K < `GLOBAL_VARIANCE_BELOW` unless `global_variance` says otherwise. NaN for an example with no OUT shadow.
    """
    candidate_phi = np.asarray(candidate_phi, dtype=np.float64)
    shadow_phi = np.asarray(shadow_phi, dtype=np.float64)
    out_mask = np.asarray(out_mask, dtype=bool)
    if candidate_phi.ndim != 1:
        raise ValueError(f"candidate_phi must be a 1-D (n,) array, got shape {candidate_phi.shape}")
    if shadow_phi.ndim != 2:
        raise ValueError(f"shadow_phi must be a 2-D (K, n) array, got shape {shadow_phi.shape}")
    if shadow_phi.shape[0] < 1:
        raise ValueError("shadow_phi needs at least one shadow (K >= 1)")
    if shadow_phi.shape[1] != candidate_phi.shape[0]:
        raise ValueError(f"shadow_phi has {shadow_phi.shape[1]} examples but candidate_phi has "
                         f"{candidate_phi.shape[0]}")
    if out_mask.shape != shadow_phi.shape:
        raise ValueError(f"out_mask must have shadow_phi's shape {shadow_phi.shape}, got {out_mask.shape}")
    if not np.isfinite(candidate_phi).all():
        raise ValueError("candidate_phi must be finite")
    if not np.isfinite(shadow_phi[out_mask]).all():
        raise ValueError("shadow_phi must be finite wherever out_mask is True")
    if global_variance is None:
        global_variance = shadow_phi.shape[0] < GLOBAL_VARIANCE_BELOW
    # Entries outside the mask are never used; zero them so NaN/inf there cannot raise warnings in the fit.
    mu_out, sd_out = fit_side(np.where(out_mask, shadow_phi, 0.0), out_mask, bool(global_variance))
    return (candidate_phi - mu_out) / sd_out


def calibration(z_never_seen: np.ndarray) -> tuple[float, float]:
    """Location and scale of the candidate's z-scores on examples no model ever trained on (median, and the median
    absolute deviation scaled to a normal's sd): what "not remembered" looks like for this candidate, whose
    margins on unseen examples are higher than half-data shadows' because it trained on twice the data."""
    z = np.asarray(z_never_seen, dtype=np.float64)
    z = z[np.isfinite(z)]
    if len(z) < MIN_CALIBRATION:
        raise ValueError(f"the calibration needs at least {MIN_CALIBRATION} never-seen examples, got {len(z)}")
    return float(np.median(z)), max(float(median_abs_deviation(z, scale="normal")), MIN_SCALE)


def served_p_values(candidate_phi: np.ndarray, shadow_phi: np.ndarray, out_mask: np.ndarray,
                    global_variance: bool | None = None,
                    calibrated: tuple[float, float] = (0.0, 1.0)) -> np.ndarray:
    """One-sided p-value per example that the candidate's margin is no higher than its OUT shadows put it:
    sf((z - loc) / scale), z = `served_z_scores`, (loc, scale) = `calibration` on never-seen examples (default
    (0, 1): the plain Gaussian tail). Small p = the candidate scores the example higher than models that never saw
    it (it may still remember it). NaN for an example with no OUT shadow."""
    loc, scale = calibrated
    if not (math.isfinite(loc) and math.isfinite(scale) and scale > 0):
        raise ValueError(f"calibrated must be a finite (loc, scale > 0), got {calibrated!r}")
    return norm.sf((served_z_scores(candidate_phi, shadow_phi, out_mask, global_variance) - loc) / scale)


def _validated_p(p: np.ndarray, name: str) -> np.ndarray:
    p = np.asarray(p, dtype=np.float64)
    if p.ndim != 1:
        raise ValueError(f"{name} must be a 1-D array of p-values, got shape {p.shape}")
    scored = p[~np.isnan(p)]
    if np.any((scored < 0.0) | (scored > 1.0)):
        raise ValueError(f"{name} must hold p-values in [0, 1] (or NaN)")
    return scored


def _side_summary(p: np.ndarray, alpha: float) -> dict:
    """n, flagged (p < alpha), share and BH rejections (adjusted p <= alpha) of the non-NaN p-values."""
    n = int(p.size)
    flagged = int(np.count_nonzero(p < alpha))
    flagged_bh = int(np.count_nonzero(false_discovery_control(p, method="bh") <= alpha)) if n else 0
    return {"n": n, "flagged": flagged, "share": flagged / n if n else math.nan, "flagged_bh": flagged_bh}


def flag_summary(p_request: np.ndarray, p_chance: np.ndarray, alpha: float = 0.05) -> dict:
    """Flagged counts and shares of the requested and the chance examples, their excess and a Fisher test.

    Keys: alpha; request and chance, each {n, flagged, share, flagged_bh}; excess (request share - chance share);
    fisher_p (one-sided Fisher exact test that the request's flagged share is the larger; NaN when a side has no
    scorable example); correction (the multiple-testing statement). NaN p-values are left out. Plain Python numbers,
    so the dict can be written as JSON (NaN as JSON's NaN extension).
    """
    if not 0.0 < alpha < 1.0:
        raise ValueError(f"alpha must lie in (0, 1), got {alpha}")
    alpha = float(alpha)
    request = _side_summary(_validated_p(p_request, "p_request"), alpha)
    chance = _side_summary(_validated_p(p_chance, "p_chance"), alpha)
    if request["n"] and chance["n"]:
        table = [[request["flagged"], request["n"] - request["flagged"]],
                 [chance["flagged"], chance["n"] - chance["flagged"]]]
        fisher_p = float(fisher_exact(table, alternative="greater").pvalue)
    else:
        fisher_p = math.nan
    correction = (f"Per-example flags are uncorrected at alpha = {alpha:g} and are only compared as a share with the "
                  "same share on the chance sample, a single one-sided Fisher exact test carrying the decision; "
                  f"Benjamini-Hochberg at FDR {alpha:g} gives the count of examples individually declared remembered.")
    return {"alpha": alpha, "request": request, "chance": chance,
            "excess": float(request["share"] - chance["share"]), "fisher_p": fisher_p, "correction": correction}


def flag_gate(summary: dict, max_excess: float, test_alpha: float = 0.05) -> dict:
    """Gate on the request's flagged share relative to chance (a `flag_summary` dict).

    Fails only when the excess over the chance share is larger than `max_excess` AND the Fisher test rejects chance
    (fisher_p < test_alpha): a large but noisy excess, or a significant but negligible one, passes. Not applicable
    (passes) when no requested example could be scored; fails when requested examples were scored but no chance
    example was, since the share then cannot be calibrated. Returns {value, limit, passed, fisher_p, applicable, note}.
    """
    if not math.isfinite(max_excess):
        raise ValueError(f"max_excess must be finite, got {max_excess}")
    if not 0.0 < test_alpha < 1.0:
        raise ValueError(f"test_alpha must lie in (0, 1), got {test_alpha}")
    excess = float(summary["excess"])
    fisher_p = float(summary["fisher_p"])
    result = {"value": excess, "limit": float(max_excess), "fisher_p": fisher_p}
    if summary["request"]["n"] == 0:
        return {**result, "passed": True, "applicable": False,
                "note": "No requested example has an OUT shadow to compare with, so there is nothing to audit."}
    if summary["chance"]["n"] == 0:
        return {**result, "passed": False, "applicable": True,
                "note": "No chance example could be scored, so the request's flagged share cannot be calibrated."}
    too_large = excess > max_excess
    significant = fisher_p < test_alpha
    passed = not (too_large and significant)
    if passed and not too_large:
        note = f"The flagged share exceeds chance by {excess:.3f}, within the allowed {max_excess:.3f}."
    elif passed:
        note = (f"The flagged share exceeds chance by {excess:.3f} > {max_excess:.3f}, but the Fisher test does not "
                f"rule out chance (p = {fisher_p:.3g} >= {test_alpha:g}).")
    else:
        note = (f"The flagged share exceeds chance by {excess:.3f} > {max_excess:.3f} and the Fisher test rules out "
                f"chance (p = {fisher_p:.3g} < {test_alpha:g}): the candidate still remembers requested examples.")
    return {**result, "passed": passed, "applicable": True, "note": note}
