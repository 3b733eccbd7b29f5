"""The statistics behind the verdicts (docs/methods.md, "Statistics"): the guard's paired test, t-intervals and
paired t-tests over seeds (and the seed summary built on them), KLoM on Gaussians with a known KL, the two-level and
paired AUC intervals, and how an attack is compared with Retrain's and with the method it rewinds."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from scipy import stats
from sklearn.metrics import roc_auc_score

from scrub_unlearning.evaluation.attack import KLOM_METRICS, attack_row_metrics, compare_attacks
from scrub_unlearning.evaluation.klom import gaussian_kl, klom_metrics, klom_per_example
from scrub_unlearning.evaluation.statistics import guard_rejects, mean_interval, paired_error_rise
from scrub_unlearning.evaluation.ulira import paired_auc_difference, two_level_weights, ulira, weighted_aucs
from scrub_unlearning.pipelines.summary.nodes import summarise_seeds

# ------------------------------------------------------------------ the guard's paired test


def _pairs(n: int, worse: int, better: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness of the Original and the student on n examples: `worse` the Original got right and the student
    wrong, `better` the opposite, the rest right for both."""
    original = np.ones(n, dtype=bool)
    student = np.ones(n, dtype=bool)
    student[:worse] = False
    original[worse:worse + better] = False
    return original, student


def test_paired_rise_p_value_by_hand():
    # 8 worse, 3 better: P(X >= 8 | X ~ Bin(11, 1/2)) = (C(11,8) + C(11,9) + C(11,10) + C(11,11)) / 2^11
    #                                                 = (165 + 55 + 11 + 1) / 2048 = 232 / 2048
    result = paired_error_rise(*_pairs(40, worse=8, better=3))
    assert (result.worse, result.better, result.n) == (8, 3, 40)
    assert result.rise == pytest.approx(100.0 * 5 / 40)
    assert result.p_value == pytest.approx(232 / 2048, rel=1e-12)
    assert paired_error_rise(*_pairs(10, 0, 0)).p_value == 1.0  # no discordant example: no evidence


def test_a_5_point_rise_on_100_examples_can_be_noise_or_real():
    # Both rise 5 points on 100 kept-class validation examples, over a 4-point bound.
    noise = paired_error_rise(*_pairs(100, worse=20, better=15))   # many discordant examples, mostly cancelling
    real = paired_error_rise(*_pairs(100, worse=5, better=0))      # five new errors, nothing fixed
    assert noise.rise == pytest.approx(5.0) and real.rise == pytest.approx(5.0)
    assert noise.p_value == pytest.approx(stats.binom.sf(19, 35, 0.5)) and noise.p_value > 0.2
    assert real.p_value == pytest.approx(1 / 32)
    assert not guard_rejects(noise.rise, noise.p_value, max_drop=4.0, alpha=0.05)
    assert guard_rejects(real.rise, real.p_value, max_drop=4.0, alpha=0.05)


def test_guard_rule_needs_both_the_bound_and_the_test():
    assert not guard_rejects(3.0, 1e-9, max_drop=5.0, alpha=0.05)     # significant but within the bound
    assert not guard_rejects(6.0, 0.2, max_drop=5.0, alpha=0.05)      # over the bound but chance
    assert guard_rejects(6.0, 0.2, max_drop=5.0, alpha=None)          # alpha null: the bound alone
    assert not guard_rejects(90.0, 1e-9, max_drop=None, alpha=0.05)   # max_utility_drop null: guard off
    with pytest.raises(ValueError, match="equal-length"):
        paired_error_rise(np.ones(3, bool), np.ones(4, bool))


# ------------------------------------------------------------------ intervals and tests over seeds


def test_mean_interval_is_the_t_interval_and_the_paired_t_test():
    result = mean_interval([10.0, 20.0, 30.0, float("nan")])  # NaN (a failed seed) is dropped
    half = stats.t.ppf(0.975, 2) * 10.0 / math.sqrt(3)          # t_{0.975, 2} = 4.3027
    assert (result.n, result.mean, result.std) == (3, 20.0, pytest.approx(10.0))
    assert (result.low, result.high) == (pytest.approx(20.0 - half), pytest.approx(20.0 + half))
    assert result.p_value == pytest.approx(2 * stats.t.sf(20.0 / (10.0 / math.sqrt(3)), 2))
    assert result.p_value > 0.05 and result.low < 0 < result.high    # interval contains 0 <=> p >= 0.05
    clear = mean_interval([4.0, 5.0, 6.0])
    assert clear.p_value < 0.05 and clear.low > 0
    one = mean_interval([7.0])
    assert one.mean == 7.0 and math.isnan(one.std) and math.isnan(one.low) and math.isnan(one.p_value)


def _row(model, seed, forget, test, gap=True):
    row = {"scenario": "up", "application": "up", "model": model, "seed": seed, "status": "ok", "failure": "",
           "forget_error": forget, "test_error": test}
    if gap:
        row.update(forget_error_gap=forget - 5.0, test_error_gap=test - 2.0)
    return row


def test_seed_summary_has_intervals_and_says_which_gaps_differ_from_retrain():
    table = pd.DataFrame([_row("retrain", s, 5.0, 2.0, gap=False) for s in (1, 2, 3)]
                         + [_row("scrub", s, f, t) for s, f, t in ((1, 15.0, 2.5), (2, 16.0, 1.0), (3, 17.0, 3.0))])
    table.loc[table["model"] == "retrain", ["forget_error_gap", "test_error_gap"]] = float("nan")
    summary = summarise_seeds(table).set_index("model")
    scrub = summary.loc["scrub"]
    expected = mean_interval([10.0, 11.0, 12.0])
    assert scrub["forget_error_gap_mean"] == pytest.approx(11.0)
    assert (scrub["forget_error_gap_mean_ci_low"], scrub["forget_error_gap_mean_ci_high"]) == (
        pytest.approx(expected.low), pytest.approx(expected.high))
    assert scrub["forget_error_mean_ci_low"] < 16.0 < scrub["forget_error_mean_ci_high"]
    assert scrub["forget_error_gap_p"] == pytest.approx(expected.p_value) and scrub["forget_error_gap_differs"]
    assert scrub["test_error_gap_differs"] in (False,)  # gaps 0.5, -1, 1: not distinguishable from 0
    assert scrub["differs_from_retrain"] == "forget_error"
    assert pd.isna(summary.loc["retrain", "differs_from_retrain"])  # no gaps to test


# ------------------------------------------------------------------ KLoM


def test_gaussian_kl_closed_form():
    assert gaussian_kl(0.0, 1.0, 0.0, 1.0) == 0.0
    # KL(N(1, 2^2) || N(0, 1)) = log(1/2) + (4 + 1) / 2 - 1/2
    assert gaussian_kl(1.0, 2.0, 0.0, 1.0) == pytest.approx(math.log(0.5) + 2.0)


def test_klom_recovers_a_known_kl_from_synthetic_gaussian_margins():
    rng = np.random.default_rng(0)
    shadows, examples = 4000, 4
    means_m, sds_m = np.array([1.0, 0.0, -2.0, 0.5]), np.array([2.0, 1.0, 0.5, 1.0])
    means_r, sds_r = np.array([0.0, 0.0, -1.0, 0.5]), np.array([1.0, 1.0, 1.5, 1.0])
    phi_m = rng.normal(means_m, sds_m, size=(shadows, examples))
    phi_r = rng.normal(means_r, sds_r, size=(shadows, examples))
    mask = np.ones((shadows, examples), dtype=bool)
    truth = gaussian_kl(means_m, sds_m, means_r, sds_r)
    np.testing.assert_allclose(klom_per_example(phi_m, phi_r, mask), truth, atol=0.05)
    binned = klom_per_example(phi_m, phi_r, mask, estimator="binned", bins=40)
    # the histogram estimate agrees with many shadows where the reference covers the method's tails; where it does
    # not (example 0: sd 2 against 1), its empty bins overstate the KL
    np.testing.assert_allclose(binned[1:], truth[1:], atol=0.05)
    assert binned[0] > truth[0]
    assert klom_per_example(phi_m, phi_m, mask, estimator="binned")[0] == 0.0


def test_klom_pools_the_std_over_examples_below_64_shadows():
    # 16 shadows (U-LiRA's default): per example a different mean, method N(mu + 1, 2^2), Retrain N(mu, 1). The
    # pooled stds are then ~exact, and each example's estimated shift has variance 4/16 + 1/16, so the mean KLoM over
    # examples is the true KL + (5/16) / (2 * 1^2).
    rng = np.random.default_rng(3)
    mu = rng.normal(0.0, 3.0, size=3000)
    phi_m = rng.normal(mu + 1.0, 2.0, size=(16, 3000))
    phi_r = rng.normal(mu, 1.0, size=(16, 3000))
    mask = np.ones((16, 3000), dtype=bool)
    pooled = klom_per_example(phi_m, phi_r, mask)
    assert pooled.mean() == pytest.approx(gaussian_kl(1.0, 2.0, 0.0, 1.0) + 5 / 32, rel=0.03)
    np.testing.assert_allclose(pooled, klom_per_example(phi_m, phi_r, mask, global_variance=True))
    assert not np.allclose(pooled, klom_per_example(phi_m, phi_r, mask, global_variance=False))


def test_klom_uses_only_masked_finite_observations_and_never_pools_groups():
    rng = np.random.default_rng(1)
    phi_r = rng.normal(0.0, 1.0, size=(400, 3))
    phi_m = phi_r.copy()
    forgot = np.zeros((400, 3), dtype=bool)
    forgot[::2] = True
    phi_m[forgot] += 3.0                    # the method is off only where it forgot
    phi_m[1, 0] = np.nan                    # a failed observation is skipped
    kept, never = forgot.copy(), ~forgot
    kept[:] = False
    metrics = klom_metrics(phi_m, phi_r, forgot, [kept, never])
    assert set(metrics) == set(KLOM_METRICS)
    assert metrics["klom_forget_p50"] == pytest.approx(4.5, rel=0.05)   # KL of a 3-sd shift = 3^2 / 2
    assert metrics["klom_retain_p95"] == pytest.approx(0.0, abs=1e-9)    # identical where it never forgot
    few = np.zeros((400, 3), dtype=bool)
    few[0] = True                           # one observation per example: no std, NaN
    assert np.isnan(klom_per_example(phi_m, phi_r, few)).all()
    assert math.isnan(klom_metrics(phi_m, phi_r, few, [])["klom_retain_p50"])
    with pytest.raises(ValueError, match="estimator"):
        klom_per_example(phi_m, phi_r, forgot, estimator="kde")


# ------------------------------------------------------------------ AUC intervals


def test_weighted_aucs_match_sklearn_with_ties_and_weights():
    rng = np.random.default_rng(2)
    member = rng.random(200) < 0.4
    scores = np.round(rng.normal(size=200) + member, 1)
    weights = rng.integers(0, 4, size=(6, 200)).astype(float)
    expected = [roc_auc_score(member, scores, sample_weight=w) for w in weights]
    np.testing.assert_allclose(weighted_aucs(member, scores, weights), expected, rtol=1e-12)
    assert math.isnan(weighted_aucs(member, scores, (~member)[None] * 1.0)[0])  # only non-members weighted


def test_two_level_weights_are_shadow_count_times_example_count():
    shadow = np.array([0, 0, 1, 1, 2, 2])
    example = np.array([0, 1, 0, 1, 0, 1])
    weights = two_level_weights(shadow, example, 50, seed=3)
    assert weights.shape == (50, 6)
    totals = weights.sum(axis=1)
    assert np.all(totals == 3 * 2)  # 3 shadows drawn x 2 examples drawn, every pair present once
    assert not np.array_equal(two_level_weights(shadow, example, 50, seed=4), weights)


def _paired_shadows(n_shadows: int, n_examples: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    member = np.zeros((n_shadows, n_examples), dtype=bool)
    for k in range(0, n_shadows, 2):
        order = rng.permutation(n_examples)
        member[k, order[: n_examples // 2]] = True
        member[k + 1, order[n_examples // 2:]] = True
    return member, rng


def test_two_level_interval_carries_shadow_to_shadow_variance():
    # Each shadow leaks by its own amount (shadow-level noise); resampling examples alone misses that variance.
    member, rng = _paired_shadows(16, 60, seed=5)
    leak = rng.normal(0.4, 0.8, size=(16, 1))
    phi = rng.normal(0.0, 1.0, size=member.shape) + leak * member
    result = ulira(phi, member, ~member, seed=0, n_bootstrap=400)
    assert result.ci_low <= result.auc <= result.ci_high
    assert result.ci_examples_low <= result.auc <= result.ci_examples_high
    assert result.ci_high - result.ci_low > 1.2 * (result.ci_examples_high - result.ci_examples_low)


def test_paired_difference_of_two_methods_on_the_same_shadows():
    member, rng = _paired_shadows(16, 60, seed=6)
    base = rng.normal(0.0, 1.0, size=member.shape)
    weak = ulira(base + 0.3 * member, member, ~member, seed=0, n_bootstrap=50)
    strong = ulira(base + 1.0 * member, member, ~member, seed=0, n_bootstrap=50)
    difference, low, high = paired_auc_difference(strong.scores, weak.scores, seed=0, n_bootstrap=400)
    assert difference == pytest.approx(strong.auc - weak.auc)
    assert 0 < low < difference < high     # the shared noise cancels: a clear difference
    same = paired_auc_difference(weak.scores, weak.scores, seed=0, n_bootstrap=50)
    assert same == (0.0, 0.0, 0.0)
    flipped = weak.scores.assign(member=~weak.scores["member"])
    with pytest.raises(ValueError, match="not the same shadows"):
        paired_auc_difference(weak.scores, flipped, seed=0)


def _attack_frame(result, phi: np.ndarray) -> pd.DataFrame:
    """An attack's score table as `ulira_attack` writes it (with each pair's margin), read back from CSV."""
    table = result.scores.assign(margin=phi[result.scores["shadow"], result.scores["example"]])
    return table.astype({"member": str})  # CSV gives "True"/"False" back as text or bools; both must work


def test_compare_attacks_gives_klom_the_gap_interval_and_the_rewinder_difference():
    member, rng = _paired_shadows(12, 40, seed=7)
    retrain_phi = rng.normal(0.0, 1.0, size=member.shape)
    method_phi = retrain_phi + 1.5 * member          # leaves a trace on what it forgot
    rewound_phi = retrain_phi + 3.0 * member
    frames = {name: _attack_frame(ulira(phi, member, ~member, seed=0, n_bootstrap=20), phi)
              for name, phi in (("retrain", retrain_phi), ("scrub_r", method_phi), ("scrub", rewound_phi))}
    out = compare_attacks(frames["scrub_r"], frames["retrain"], seed=0, bootstrap=200,
                          rewound_scores=frames["scrub"], name="scrub_r", rewound_name="scrub")
    assert out["klom_forget_p50"] > 0.5 and out["klom_retain_p95"] == pytest.approx(0.0, abs=1e-9)
    assert 0 < out["ulira_auc_gap_ci_low"] < out["ulira_auc_gap_ci_high"]  # AUC − Retrain's, clearly above 0
    assert out["ulira_auc_diff_scrub_r_vs_scrub_ci_high"] < 0   # SCRUB+R here leaks less than SCRUB
    row = attack_row_metrics({"ulira_auc": 0.6, "ulira_failure": "x", **out})
    assert row["ulira_auc"] == 0.6 and math.isnan(row["ulira_acc"]) and "ulira_failure" not in row
    assert row["ulira_auc_diff_scrub_r_vs_scrub"] == out["ulira_auc_diff_scrub_r_vs_scrub"]
    missing = compare_attacks(frames["scrub"], pd.DataFrame(), seed=0, name="original")
    assert set(missing) == {*KLOM_METRICS, "ulira_auc_gap_ci_low", "ulira_auc_gap_ci_high"}
    assert all(math.isnan(v) for v in missing.values())
