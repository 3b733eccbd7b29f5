"""Served-model audit (docs/design.md §5): per-example p-values against OUT shadows, flagged shares, the gate."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest

from scrub_unlearning.evaluation.served_audit import flag_gate, flag_summary, served_p_values
from scrub_unlearning.evaluation.ulira import MIN_STD


def _out_mask(n_shadows: int, n_examples: int, n_out: int, rng: np.random.Generator) -> np.ndarray:
    """(K, n) mask with exactly n_out randomly chosen OUT shadows per example."""
    ranks = np.argsort(rng.random((n_shadows, n_examples)), axis=0)
    return ranks < n_out


def _sample(n_shadows: int, n_examples: int, n_out: int, shift: float,
            rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Shadow margins = per-example offset + N(0, 1); candidate = offset + N(shift, 1)."""
    offset = rng.normal(0.0, 2.0, size=n_examples)
    shadow_phi = offset + rng.normal(0.0, 1.0, size=(n_shadows, n_examples))
    candidate_phi = offset + rng.normal(shift, 1.0, size=n_examples)
    return candidate_phi, shadow_phi, _out_mask(n_shadows, n_examples, n_out, rng)


def _sf(z: float) -> float:
    """Standard normal upper tail, by hand: 0.5 erfc(z / sqrt 2)."""
    return 0.5 * math.erfc(z / math.sqrt(2.0))


# --- served_p_values ---


def test_p_value_hand_computed_per_example_and_pooled():
    # Example 0: OUT margins 0, 1, 2, 3; example 1: OUT margins all 10. Candidate 3.0 and 10.0.
    shadow_phi = np.array([[0.0, 10.0], [1.0, 10.0], [2.0, 10.0], [3.0, 10.0]])
    out_mask = np.ones_like(shadow_phi, dtype=bool)
    candidate = np.array([3.0, 10.0])
    # Example 0: mean 1.5, ddof=0 variance (2.25 + 0.25 + 0.25 + 2.25) / 4 = 1.25.
    per_example = served_p_values(candidate, shadow_phi, out_mask, global_variance=False)
    assert per_example[0] == pytest.approx(_sf(1.5 / math.sqrt(1.25)), rel=1e-12)
    assert per_example[1] == pytest.approx(0.5)  # at its mean (std floored at MIN_STD, not 0)
    # Pooled: (5.0 + 0.0) / 8 observations = 0.625; K = 4 < 64 pools by default.
    pooled = served_p_values(candidate, shadow_phi, out_mask)
    assert pooled[0] == pytest.approx(_sf(1.5 / math.sqrt(0.625)), rel=1e-12)
    assert pooled[1] == pytest.approx(0.5)
    np.testing.assert_array_equal(pooled, served_p_values(candidate, shadow_phi, out_mask, global_variance=True))


def test_p_value_uses_only_out_shadows_and_floors_the_std():
    # Only shadows 0 and 1 are OUT for the single example; the IN shadows' (huge, non-finite) margins are ignored.
    shadow_phi = np.array([[2.0], [2.0], [np.inf], [np.nan]])
    out_mask = np.array([[True], [True], [False], [False]])
    p = served_p_values(np.array([2.0 + 3 * MIN_STD]), shadow_phi, out_mask)
    assert p[0] == pytest.approx(_sf(3.0), rel=1e-6)


def test_example_without_out_shadow_gives_nan_and_is_left_out_of_n():
    rng = np.random.default_rng(0)
    candidate, shadow_phi, out_mask = _sample(8, 5, 4, 0.0, rng)
    out_mask[:, 2] = False
    p = served_p_values(candidate, shadow_phi, out_mask)
    assert np.isnan(p[2])
    assert np.isfinite(np.delete(p, 2)).all()
    summary = flag_summary(p, np.array([0.5, 0.01, np.nan]))
    assert summary["request"]["n"] == 4
    assert summary["chance"]["n"] == 2
    assert summary["chance"]["flagged"] == 1
    assert summary["chance"]["share"] == pytest.approx(0.5)


@pytest.mark.parametrize(("candidate", "shadow_phi", "out_mask", "message"), [
    (np.zeros((2, 3)), np.zeros((4, 3)), np.ones((4, 3), bool), "candidate_phi must be a 1-D"),
    (np.zeros(3), np.zeros(3), np.ones(3, bool), "shadow_phi must be a 2-D"),
    (np.zeros(3), np.zeros((0, 3)), np.ones((0, 3), bool), "at least one shadow"),
    (np.zeros(3), np.zeros((4, 2)), np.ones((4, 2), bool), "2 examples but candidate_phi has 3"),
    (np.zeros(3), np.zeros((4, 3)), np.ones((4, 2), bool), "out_mask must have shadow_phi's shape"),
    (np.array([0.0, np.nan, 0.0]), np.zeros((4, 3)), np.ones((4, 3), bool), "candidate_phi must be finite"),
    (np.zeros(3), np.full((4, 3), np.nan), np.ones((4, 3), bool), "finite wherever out_mask"),
])
def test_served_p_values_rejects_bad_input(candidate, shadow_phi, out_mask, message):
    with pytest.raises(ValueError, match=message):
        served_p_values(candidate, shadow_phi, out_mask)


# --- flag_summary ---


def test_summary_counts_keys_and_json():
    summary = flag_summary(np.array([0.001, 0.04, 0.045, 0.9, np.nan]), np.array([0.2, 0.03, 0.7, 0.8]))
    assert set(summary) == {"alpha", "request", "chance", "excess", "fisher_p", "correction"}
    assert set(summary["request"]) == set(summary["chance"]) == {"n", "flagged", "share", "flagged_bh"}
    # Uncorrected: 3 of 4 below 0.05. BH thresholds 0.0125, 0.025, 0.0375, 0.05: only 0.001 passes.
    assert summary["request"] == {"n": 4, "flagged": 3, "share": 0.75, "flagged_bh": 1}
    assert summary["chance"] == {"n": 4, "flagged": 1, "share": 0.25, "flagged_bh": 0}
    assert summary["excess"] == pytest.approx(0.5)
    # One-sided Fisher on [[3, 1], [1, 3]]: P(X >= 3) for the hypergeometric (8 total, 4 flagged, 4 drawn)
    # = (C(4,3) C(4,1) + C(4,4) C(4,0)) / C(8,4) = (16 + 1) / 70.
    assert summary["fisher_p"] == pytest.approx(17 / 70)
    assert "uncorrected" in summary["correction"] and "Benjamini-Hochberg" in summary["correction"]
    assert isinstance(summary["request"]["n"], int) and isinstance(summary["fisher_p"], float)
    json.dumps(summary)


def test_bh_rejects_at_adjusted_p_equal_to_alpha():
    # Sorted p_(i) * m / i = 0.5, 0.5, 0.5 exactly (dyadic): BH rejects all three at FDR 0.5 (adjusted <= alpha).
    summary = flag_summary(np.array([0.125, 0.25, 0.375, 0.9]), np.array([0.9]), alpha=0.5)
    assert summary["request"]["flagged"] == 3
    assert summary["request"]["flagged_bh"] == 3


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5])
def test_summary_rejects_alpha_out_of_range(alpha):
    with pytest.raises(ValueError, match="alpha must lie in"):
        flag_summary(np.array([0.5]), np.array([0.5]), alpha=alpha)


def test_summary_rejects_bad_p_values():
    with pytest.raises(ValueError, match="p_request must hold p-values"):
        flag_summary(np.array([1.5]), np.array([0.5]))
    with pytest.raises(ValueError, match="p_chance must be a 1-D"):
        flag_summary(np.array([0.5]), np.array([[0.5]]))


# --- behaviour on synthetic margins ---


def test_known_shift_is_flagged_and_fails_the_gate():
    rng = np.random.default_rng(1)
    candidate, shadow_phi, out_mask = _sample(16, 200, 8, 3.0, rng)
    chance_candidate, chance_phi, _ = _sample(16, 200, 16, 0.0, rng)
    p_request = served_p_values(candidate, shadow_phi, out_mask)
    p_chance = served_p_values(chance_candidate, chance_phi, np.ones_like(chance_phi, dtype=bool))
    summary = flag_summary(p_request, p_chance)
    assert summary["request"]["share"] > 0.7
    assert summary["request"]["flagged_bh"] > 0
    assert summary["fisher_p"] < 0.001
    gate = flag_gate(summary, max_excess=0.1)
    assert gate["passed"] is False
    assert gate["applicable"] is True
    assert gate["value"] == pytest.approx(summary["excess"]) and gate["limit"] == 0.1


def test_no_shift_with_many_shadows_flags_about_alpha_and_passes():
    rng = np.random.default_rng(2)
    n = 2000
    candidate, shadow_phi, out_mask = _sample(128, n, 64, 0.0, rng)
    chance_candidate, chance_phi, chance_mask = _sample(128, n, 64, 0.0, rng)
    summary = flag_summary(served_p_values(candidate, shadow_phi, out_mask),
                           served_p_values(chance_candidate, chance_phi, chance_mask))
    standard_error = math.sqrt(0.05 * 0.95 / n)
    assert abs(summary["request"]["share"] - 0.05) < 3 * standard_error
    assert summary["fisher_p"] > 0.01  # not significantly above chance (a 0.05 cut would fail 1 seed in 20)
    assert flag_gate(summary, max_excess=0.02)["passed"] is True


def test_no_shift_with_few_shadows_matches_a_chance_sample_with_as_many_out_shadows():
    # With 8 OUT shadows the plug-in fit flags ~7% at alpha 0.05 (module docstring); a chance sample with 8 OUT
    # shadows per example shows the same share, so the request is not significantly above it.
    rng = np.random.default_rng(3)
    n = 2000
    candidate, shadow_phi, out_mask = _sample(16, n, 8, 0.0, rng)
    chance_candidate, chance_phi, chance_mask = _sample(16, n, 8, 0.0, rng)
    summary = flag_summary(served_p_values(candidate, shadow_phi, out_mask),
                           served_p_values(chance_candidate, chance_phi, chance_mask))
    share = summary["chance"]["share"]
    assert abs(summary["excess"]) < 3 * math.sqrt(2 * share * (1 - share) / n)
    assert summary["fisher_p"] > 0.01  # not significantly above chance (a 0.05 cut would fail 1 seed in 20)
    assert flag_gate(summary, max_excess=0.02)["passed"] is True


def test_fewer_out_shadows_than_the_chance_sample_inflate_the_request_share():
    # The assumption the docstring warns about: 8 OUT shadows per request vs all 16 for chance, no real shift.
    rng = np.random.default_rng(4)
    n = 20000
    candidate, shadow_phi, out_mask = _sample(16, n, 8, 0.0, rng)
    chance_candidate, chance_phi, _ = _sample(16, n, 16, 0.0, rng)
    summary = flag_summary(served_p_values(candidate, shadow_phi, out_mask),
                           served_p_values(chance_candidate, chance_phi, np.ones_like(chance_phi, dtype=bool)))
    assert summary["request"]["share"] > summary["chance"]["share"] > 0.05
    assert summary["fisher_p"] < 0.05


# --- flag_gate ---


def _summary(excess: float, fisher_p: float, n_request: int = 100, n_chance: int = 100) -> dict:
    side = {"flagged": 0, "share": 0.0, "flagged_bh": 0}
    return {"alpha": 0.05, "request": {**side, "n": n_request}, "chance": {**side, "n": n_chance},
            "excess": excess, "fisher_p": fisher_p, "correction": ""}


@pytest.mark.parametrize(("excess", "fisher_p", "passed"), [
    (0.2, 0.001, False),  # large and significant
    (0.2, 0.3, True),     # large but could be chance
    (0.05, 0.001, True),  # significant but within the allowed excess
    (-0.1, 0.99, True),
])
def test_gate_fails_only_when_large_and_significant(excess, fisher_p, passed):
    gate = flag_gate(_summary(excess, fisher_p), max_excess=0.1)
    assert gate["passed"] is passed
    assert gate["fisher_p"] == fisher_p
    assert gate["note"]


def test_gate_not_applicable_without_scorable_request():
    summary = flag_summary(np.array([np.nan, np.nan]), np.array([0.01, 0.5]))
    assert summary["request"]["n"] == 0
    assert math.isnan(summary["request"]["share"]) and math.isnan(summary["fisher_p"])
    gate = flag_gate(summary, max_excess=0.1)
    assert gate["passed"] is True
    assert gate["applicable"] is False
    assert "nothing to audit" in gate["note"]
    assert flag_gate(flag_summary(np.array([]), np.array([0.5])), max_excess=0.1)["applicable"] is False


def test_gate_fails_without_chance_sample():
    gate = flag_gate(flag_summary(np.array([0.01, 0.5]), np.array([np.nan])), max_excess=0.1)
    assert gate["passed"] is False
    assert "cannot be calibrated" in gate["note"]


def test_gate_rejects_bad_arguments():
    with pytest.raises(ValueError, match="test_alpha"):
        flag_gate(_summary(0.0, 1.0), max_excess=0.1, test_alpha=1.0)
    with pytest.raises(ValueError, match="max_excess"):
        flag_gate(_summary(0.0, 1.0), max_excess=float("nan"))
