"""U-LiRA statistics (docs/design.md §5): logit margins, Gaussian fits, likelihood ratios, leave-one-shadow-out
attack."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from matplotlib.figure import Figure
from sklearn.metrics import roc_auc_score

from scrub_unlearning.evaluation.ulira import (
    MIN_STD,
    _auc_with_multiplicity,
    _balanced_threshold,
    fit_gaussians,
    log_likelihood_ratio,
    logit_margin,
    ulira,
)
from scrub_unlearning.reporting import roc_figure


def _halves(n_shadows: int, n_examples: int, rng: np.random.Generator) -> np.ndarray:
    """member[k] = H_k, a random half of the pool (here F_k = H_k, so nonmember = not H_k)."""
    member = np.zeros((n_shadows, n_examples), dtype=bool)
    for k in range(n_shadows):
        member[k, rng.permutation(n_examples)[: n_examples // 2]] = True
    return member


def _synthetic(n_shadows: int, n_examples: int, shift: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """phi = per-example offset + N(0, 1) noise + shift for members."""
    rng = np.random.default_rng(seed)
    member = _halves(n_shadows, n_examples, rng)
    offset = rng.normal(0.0, 2.0, size=n_examples)
    phi = offset + rng.normal(0.0, 1.0, size=(n_shadows, n_examples)) + shift * member
    return phi, member


# --- logit margin ---


def test_logit_margin_hand_computed():
    logits = torch.tensor([[1.0, 2.0, 3.0], [0.0, 0.0, 0.0]])
    labels = torch.tensor([2, 0])
    phi = logit_margin(logits, labels)
    # row 0: 3 - log(e^1 + e^2) = 3 - log(2.718281828 + 7.389056099) = 3 - log(10.107337927) = 3 - 2.313261688
    # row 1: 0 - log(e^0 + e^0) = -log 2 = -0.693147181
    assert phi.dtype == np.float64
    np.testing.assert_allclose(phi, [3 - 2.313261687518223, -0.6931471805599453], rtol=1e-12)


def test_logit_margin_is_stable_for_saturated_logits():
    phi = logit_margin(torch.tensor([[1000.0, 0.0, -1000.0], [0.0, 1000.0, 0.0]]), torch.tensor([0, 0]))
    # 1000 - log(e^0 + e^-1000) = 1000 ; 0 - log(e^1000 + e^0) = -1000
    np.testing.assert_allclose(phi, [1000.0, -1000.0])


def test_logit_margin_rejects_bad_shapes():
    with pytest.raises(ValueError, match="classes"):
        logit_margin(torch.zeros(2, 1), torch.zeros(2, dtype=torch.long))
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        logit_margin(torch.zeros(2, 3), torch.zeros(3, dtype=torch.long))


# --- Gaussian fit and likelihood ratio, by hand ---

# 4 shadows x 2 examples.
PHI = np.array([[1.0, 4.0],
                [3.0, 0.0],
                [2.0, 6.0],
                [6.0, 2.0]])
IN = np.array([[True, True],
               [False, False],
               [True, True],
               [False, True]])
OUT = ~IN
# example 0: IN {1, 2}: mean 1.5, squared deviations 0.25 + 0.25 = 0.5, var 0.5 / 2 = 0.25, sd 0.5
#            OUT {3, 6}: mean 4.5, squared deviations 2.25 + 2.25 = 4.5, var 4.5 / 2 = 2.25, sd 1.5
# example 1: IN {4, 6, 2}: mean 4, squared deviations 0 + 4 + 4 = 8, var 8 / 3, sd 1.6329932
#            OUT {0}: mean 0, squared deviation 0, var 0 -> sd floored at MIN_STD
# pooled IN: (0.5 + 8) / (2 + 3 observations) = 1.7; pooled OUT: (4.5 + 0) / (2 + 1) = 1.5


def test_fit_gaussians_per_example_hand_computed():
    mu_in, sd_in, mu_out, sd_out = fit_gaussians(PHI, IN, OUT, global_variance=False)
    np.testing.assert_allclose(mu_in, [1.5, 4.0])
    np.testing.assert_allclose(sd_in, [0.5, math.sqrt(8 / 3)])
    np.testing.assert_allclose(mu_out, [4.5, 0.0])
    np.testing.assert_allclose(sd_out, [1.5, MIN_STD])


def test_fit_gaussians_global_variance_hand_computed():
    mu_in, sd_in, mu_out, sd_out = fit_gaussians(PHI, IN, OUT, global_variance=True)
    np.testing.assert_allclose(mu_in, [1.5, 4.0])
    np.testing.assert_allclose(mu_out, [4.5, 0.0])
    np.testing.assert_allclose(sd_in, [math.sqrt(1.7)] * 2)
    np.testing.assert_allclose(sd_out, [math.sqrt(1.5)] * 2)


def test_log_likelihood_ratio_hand_computed_both_variance_modes():
    target = np.array([2.5, 3.0])
    # global: log(sd_out / sd_in) - (x - mu_in)^2 / (2 var_in) + (x - mu_out)^2 / (2 var_out)
    # ex 0: 0.5 log(1.5 / 1.7) - (2.5 - 1.5)^2 / 3.4 + (2.5 - 4.5)^2 / 3.0 = -0.0625815 - 0.2941176 + 1.3333333
    # ex 1: 0.5 log(1.5 / 1.7) - (3 - 4)^2 / 3.4 + (3 - 0)^2 / 3.0 = -0.0625815 - 0.2941176 + 3
    expected_global = [0.5 * math.log(1.5 / 1.7) - 1 / 3.4 + 4 / 3, 0.5 * math.log(1.5 / 1.7) - 1 / 3.4 + 9 / 3]
    np.testing.assert_allclose(expected_global, [0.9766342, 2.6433009], rtol=1e-6)  # the arithmetic above
    llr = log_likelihood_ratio(target, *fit_gaussians(PHI, IN, OUT, global_variance=True))
    np.testing.assert_allclose(llr, expected_global, rtol=1e-12)
    # per example, ex 0: log(1.5 / 0.5) - 1^2 / (2 * 0.25) + 2^2 / (2 * 2.25) = 1.0986123 - 2 + 0.8888889
    # ex 1: log(1e-6 / sqrt(8/3)) - 1^2 / (2 * 8/3) + 3^2 / (2 * 1e-12): OUT saw a single value, x is far from it
    expected_local = [math.log(3.0) - 2.0 + 4 / 4.5,
                      math.log(MIN_STD / math.sqrt(8 / 3)) - 3 / 16 + 9 / (2 * MIN_STD**2)]
    llr = log_likelihood_ratio(target, *fit_gaussians(PHI, IN, OUT, global_variance=False))
    np.testing.assert_allclose(llr, expected_local, rtol=1e-12)
    assert llr[0] == pytest.approx(-0.0124988, abs=1e-6)


def test_fit_gaussians_floors_zero_spread_in_both_modes():
    phi = np.array([[2.0, 5.0], [2.0, 5.0], [1.0, 3.0]])  # IN values identical per example: zero spread
    in_mask = np.array([[True, True], [True, True], [False, False]])
    for pooled in (True, False):
        _, sd_in, _, sd_out = fit_gaussians(phi, in_mask, ~in_mask, global_variance=pooled)
        np.testing.assert_array_equal(sd_in, [MIN_STD, MIN_STD])
        np.testing.assert_array_equal(sd_out, [MIN_STD, MIN_STD])


def test_log_likelihood_ratio_sign_and_symmetry():
    # Equal variances: the ratio is positive nearer mu_in, zero half-way, negative nearer mu_out.
    llr = log_likelihood_ratio(np.array([3.0, 1.5, 0.0]), 3.0, 1.0, 0.0, 1.0)
    np.testing.assert_allclose(llr, [4.5, 0.0, -4.5])
    with pytest.raises(ValueError, match="sd_in"):
        log_likelihood_ratio(np.array([0.0]), 0.0, 0.0, 1.0, 1.0)


def test_fit_gaussians_missing_side_gives_nan_and_nan_score():
    phi = np.array([[1.0, 2.0], [3.0, 4.0]])
    in_mask = np.array([[True, False], [False, False]])  # example 1 has no IN observation
    out_mask = np.array([[False, True], [True, True]])
    for pooled in (True, False):
        mu_in, sd_in, mu_out, sd_out = fit_gaussians(phi, in_mask, out_mask, global_variance=pooled)
        assert np.isnan(mu_in[1]) and np.isnan(sd_in[1]) and not np.isnan(mu_in[0])
        scores = log_likelihood_ratio(np.array([0.0, 0.0]), mu_in, sd_in, mu_out, sd_out)
        assert np.isfinite(scores[0]) and np.isnan(scores[1])


# --- the attack ---


def test_same_distribution_is_chance():
    # Over data seeds 0-199 this setting gave AUC 0.497 +- 0.027 and a 95% interval containing 0.5 for 94.5% of
    # them (seed 0 was the lowest, 0.41); fitting on all shadows including the target gives ~0.64 instead.
    rng = np.random.default_rng(1)
    member = _halves(16, 60, rng)
    phi = rng.normal(0.0, 1.0, size=(16, 60))  # IN and OUT from the same N(0, 1)
    result = ulira(phi, member, ~member, seed=0, n_bootstrap=300)
    assert 0.4 < result.auc < 0.6
    assert result.ci_low <= 0.5 <= result.ci_high
    assert result.ci_low < result.auc < result.ci_high
    assert 0.4 < result.acc < 0.6


def test_separated_distributions_are_detected():
    phi, member = _synthetic(16, 60, shift=3.0, seed=1)  # IN ~ N(3, 1), OUT ~ N(0, 1) around each example's offset
    result = ulira(phi, member, ~member, seed=0, n_bootstrap=300)
    assert result.auc > 0.9
    assert result.ci_low > 0.5
    assert result.acc > 0.8
    assert 0.0 <= result.ci_low <= result.auc <= result.ci_high <= 1.0
    metrics = result.as_metrics()
    assert set(metrics) == {"ulira_auc", "ulira_auc_ci_low", "ulira_auc_ci_high", "ulira_acc",
                            "ulira_auc_ci_examples_low", "ulira_auc_ci_examples_high"}
    assert all(isinstance(v, float) for v in metrics.values())
    assert metrics["ulira_auc"] == result.auc and metrics["ulira_acc"] == result.acc


def test_per_example_offsets_need_per_example_means():
    # A global threshold on raw phi is near chance when offsets dwarf the shift; the per-example fit is not.
    phi, member = _synthetic(16, 60, shift=1.5, seed=2)
    raw = roc_auc_score(member.ravel(), phi.ravel())
    assert ulira(phi, member, ~member, seed=0, n_bootstrap=50).auc > raw + 0.1


def test_scores_table_and_auc_over_it():
    phi, member = _synthetic(8, 20, shift=1.0, seed=3)
    nonmember = ~member
    spare = np.flatnonzero(nonmember[0] & (nonmember.sum(axis=0) >= 2))[:3]
    assert spare.size == 3
    nonmember[0, spare] = False  # some pool examples neither member nor non-member of shadow 0
    result = ulira(phi, member, nonmember, seed=0, n_bootstrap=50)
    table = result.scores
    assert list(table.columns) == ["shadow", "example", "member", "score"]
    assert len(table) == int((member | nonmember).sum())
    assert table["member"].dtype == bool
    np.testing.assert_array_equal(table["member"], member[table["shadow"], table["example"]])
    scored = table.dropna(subset=["score"])
    assert len(scored) > 0.9 * len(table)
    assert result.auc == pytest.approx(roc_auc_score(scored["member"], scored["score"]))
    fpr, tpr = result.roc
    assert fpr[0] == 0.0 and tpr[-1] == 1.0 and np.all(np.diff(fpr) >= 0)


def test_leave_one_shadow_out_excludes_the_target():
    # 4 shadows x 2 examples; the target shadow 0 has an extreme member value (100) that would move the IN mean.
    phi = np.array([[100.0, 7.0],
                    [2.0, 5.0],
                    [4.0, 2.0],
                    [1.0, 3.0]])
    member = np.array([[True, False],
                       [True, True],
                       [False, True],
                       [False, False]])
    result = ulira(phi, member, ~member, seed=0, n_bootstrap=20)  # K = 4 < 64: pooled variance
    # Target 0, fit on shadows 1-3 only:
    # ex 0: IN {2} mean 2, sq. dev. 0; OUT {4, 1} mean 2.5, sq. dev. 2.25 + 2.25 = 4.5
    # ex 1: IN {5, 2} mean 3.5, sq. dev. 4.5; OUT {3} mean 3, sq. dev. 0
    # pooled var IN (0 + 4.5) / 3 = 1.5, OUT (4.5 + 0) / 3 = 1.5 -> llr = ((x - mu_out)^2 - (x - mu_in)^2) / 3
    # ex 0 (member), x = 100: ((100 - 2.5)^2 - (100 - 2)^2) / 3 = (9506.25 - 9604) / 3 = -32.5833
    # ex 1 (non-member), x = 7: ((7 - 3)^2 - (7 - 3.5)^2) / 3 = (16 - 12.25) / 3 = 1.25
    table = result.scores.set_index(["shadow", "example"])["score"]
    assert table[(0, 0)] == pytest.approx(-97.75 / 3, rel=1e-12)
    assert table[(0, 1)] == pytest.approx(1.25, rel=1e-12)
    # Had shadow 0 been in the fit, IN of ex 0 would have mean 51 and the score would be positive.
    mu_in, sd_in, mu_out, sd_out = fit_gaussians(phi, member, ~member, global_variance=True)
    assert log_likelihood_ratio(100.0, mu_in[0], sd_in[0], mu_out[0], sd_out[0]) > 0


def test_example_only_in_the_target_is_nan_and_excluded():
    phi, member = _synthetic(6, 12, shift=2.0, seed=4)
    member[:, 0] = False
    member[2, 0] = True  # example 0's only IN observation is in shadow 2
    result = ulira(phi, member, ~member, seed=0, n_bootstrap=20)
    table = result.scores
    unscorable = table["score"].isna()
    # A pair is unscorable when its example has no IN or no OUT among the other shadows: (2, 0) by construction.
    expected = set()
    for k, i in zip(*np.nonzero(np.ones_like(member)), strict=True):
        others = np.arange(6) != k
        if not member[others, i].any() or not (~member)[others, i].any():
            expected.add((int(k), int(i)))
    assert (2, 0) in expected
    assert set(zip(table.loc[unscorable, "shadow"], table.loc[unscorable, "example"], strict=True)) == expected
    valid = table[~unscorable]
    assert result.auc == pytest.approx(roc_auc_score(valid["member"], valid["score"]))


def test_global_variance_defaults_to_k_below_64():
    phi, member = _synthetic(16, 10, shift=1.0, seed=5)
    assert ulira(phi, member, ~member, 0, 10).auc == ulira(phi, member, ~member, 0, 10, global_variance=True).auc
    assert ulira(phi, member, ~member, 0, 10).auc != ulira(phi, member, ~member, 0, 10, global_variance=False).auc
    phi, member = _synthetic(64, 10, shift=1.0, seed=5)
    assert ulira(phi, member, ~member, 0, 10).auc == ulira(phi, member, ~member, 0, 10, global_variance=False).auc
    assert ulira(phi, member, ~member, 0, 10).auc != ulira(phi, member, ~member, 0, 10, global_variance=True).auc


def test_deterministic_for_a_seed():
    phi, member = _synthetic(8, 30, shift=1.0, seed=6)
    a = ulira(phi, member, ~member, seed=3, n_bootstrap=100)
    b = ulira(phi, member, ~member, seed=3, n_bootstrap=100)
    c = ulira(phi, member, ~member, seed=4, n_bootstrap=100)
    assert a.as_metrics() == b.as_metrics()
    assert a.scores.equals(b.scores)
    assert c.auc == a.auc and c.acc == a.acc
    assert (c.ci_low, c.ci_high) != (a.ci_low, a.ci_high)


def _forget_subsets(n_shadows: int, n_examples: int, seed: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """H_k a random half of the pool, F_k a random half of H_k: member = F_k, nonmember = not H_k (unequal counts)."""
    rng = np.random.default_rng(seed)
    member = np.zeros((n_shadows, n_examples), dtype=bool)
    while not member.any(axis=0).all():  # redraw until every example has an IN shadow
        member = np.zeros((n_shadows, n_examples), dtype=bool)
        nonmember = np.ones((n_shadows, n_examples), dtype=bool)
        for k in range(n_shadows):
            h = rng.permutation(n_examples)[: n_examples // 2]
            nonmember[k, h] = False
            member[k, h[: len(h) // 2]] = True
    phi = rng.normal(0.0, 1.0, size=(n_shadows, n_examples)) + 0.7 * member
    return phi, member, nonmember


def test_acc_uses_a_threshold_fitted_on_the_other_shadows():
    phi, member, nonmember = _forget_subsets(12, 40, seed=10)
    result = ulira(phi, member, nonmember, seed=0, n_bootstrap=10)
    used = member | nonmember
    predicted, truth = [], []
    for k in range(12):
        others = np.arange(12) != k
        fit = fit_gaussians(phi, member & others[:, None], nonmember & others[:, None], global_variance=True)
        scores = log_likelihood_ratio(phi, *fit)
        train = used & others[:, None] & ~np.isnan(scores)
        threshold = _balanced_threshold(scores[train], member[train])
        target = used[k] & ~np.isnan(scores[k])
        predicted.append(scores[k][target] >= threshold)
        truth.append(member[k][target])
    predicted, truth = np.concatenate(predicted), np.concatenate(truth)
    assert truth.sum() != (~truth).sum()  # unequal classes: balanced and plain accuracy differ
    balanced = 0.5 * (predicted[truth].mean() + (~predicted[~truth]).mean())
    assert result.acc == pytest.approx(balanced, rel=1e-12)
    assert result.acc != pytest.approx((predicted == truth).mean(), rel=1e-9)


def test_examples_only_bootstrap_resamples_examples():
    phi, member, nonmember = _forget_subsets(12, 30, seed=11)
    result = ulira(phi, member, nonmember, seed=5, n_bootstrap=40)
    scored = result.scores.dropna(subset=["score"])
    examples = np.unique(scored["example"])
    rng = np.random.default_rng(5)
    aucs = []
    for _ in range(40):  # duplicate every pair of every drawn example, as many times as it was drawn
        drawn = rng.choice(examples, size=examples.size, replace=True)
        pairs = pd.concat([scored[scored["example"] == i] for i in drawn])
        aucs.append(roc_auc_score(pairs["member"], pairs["score"]))
    np.testing.assert_allclose([result.ci_examples_low, result.ci_examples_high], np.percentile(aucs, [2.5, 97.5]),
                               rtol=1e-12)


def test_two_level_bootstrap_resamples_shadows_and_examples():
    phi, member, nonmember = _forget_subsets(12, 30, seed=11)
    result = ulira(phi, member, nonmember, seed=5, n_bootstrap=40)
    scored = result.scores.dropna(subset=["score"])
    shadows, examples = np.unique(scored["shadow"]), np.unique(scored["example"])
    rng = np.random.default_rng([5, 2])
    aucs = []
    for _ in range(40):  # every pair duplicated (times its shadow was drawn) x (times its example was drawn)
        drawn_shadows = rng.choice(shadows, size=shadows.size, replace=True)
        drawn_examples = rng.choice(examples, size=examples.size, replace=True)
        times = (np.bincount(drawn_shadows, minlength=12)[scored["shadow"]]
                 * np.bincount(drawn_examples, minlength=30)[scored["example"]])
        pairs = scored.loc[scored.index.repeat(times)]
        aucs.append(roc_auc_score(pairs["member"], pairs["score"]))
    np.testing.assert_allclose([result.ci_low, result.ci_high], np.percentile(aucs, [2.5, 97.5]), rtol=1e-12)


def test_bootstrap_weights_equal_duplicated_pairs():
    rng = np.random.default_rng(7)
    example = np.repeat(np.arange(10), 3)
    is_member = rng.random(30) < 0.5
    scores = np.round(rng.normal(size=30), 1)  # with ties
    counts = np.bincount(rng.integers(0, 10, 10), minlength=10)
    duplicated = np.repeat(np.arange(30), counts[example])
    expected = roc_auc_score(is_member[duplicated], scores[duplicated])
    assert _auc_with_multiplicity(is_member, scores, example, counts) == pytest.approx(expected, rel=1e-12)


def test_threshold_maximises_balanced_not_plain_accuracy():
    # 1 member at 5, non-members at 0 1 2 3 6 7 8. "score >= 5": TPR 1, TNR 4/7 -> balanced 0.786 (plain 5/8);
    # "never a member": balanced 0.5 but plain accuracy 7/8.
    scores = np.array([5.0, 0, 1, 2, 3, 6, 7, 8])
    is_member = np.array([True] + [False] * 7)
    assert _balanced_threshold(scores, is_member) == 5.0


@pytest.mark.parametrize(
    ("phi", "member", "nonmember", "match"),
    [
        (np.zeros((4, 3)), np.zeros((4, 2), bool), np.zeros((4, 3), bool), "equal shapes"),
        (np.zeros(4), np.zeros(4, bool), np.zeros(4, bool), r"\(K, n\)"),
        (np.zeros((2, 2)), np.array([[True, False], [False, True]]), np.array([[False, True], [True, False]]),
         "K >= 3"),
        (np.zeros((3, 2)), np.array([[True, True], [False, False], [True, False]]),
         np.array([[True, False], [True, True], [False, True]]), "both True"),
        (np.zeros((3, 2)), np.array([[True, False], [False, False], [False, False]]),
         np.array([[False, True], [True, True], [True, True]]), "no member"),
        (np.zeros((3, 2)), np.array([[True, True], [False, False], [False, True]]),
         np.array([[False, False], [True, False], [True, False]]), "no nonmember"),
        (np.array([[np.nan, 0.0], [0.0, 0.0], [0.0, 0.0]]), np.array([[True, False], [False, True], [True, False]]),
         np.array([[False, True], [True, False], [False, True]]), "finite"),
    ],
)
def test_input_validation(phi, member, nonmember, match):
    with pytest.raises(ValueError, match=match):
        ulira(phi, member, nonmember, seed=0, n_bootstrap=10)


def test_roc_figure_draws_ulira_results_from_their_scores():
    """The project's one ROC plotter (`reporting.roc_figure`) takes `UliraResult.scores`: its curve is the result's
    ROC and its legend the result's AUC."""
    phi, member = _synthetic(8, 20, shift=2.0, seed=8)
    results = {"scrub": ulira(phi, member, ~member, 0, 20),
               "retrain": ulira(np.random.default_rng(9).normal(size=phi.shape), member, ~member, 0, 20)}
    fig = roc_figure({name: result.scores for name, result in results.items()}, title="U-LiRA")
    assert isinstance(fig, Figure)
    (ax,) = fig.axes
    lines = {line.get_gid(): line for line in ax.lines}
    assert set(lines) == {"roc:scrub", "roc:retrain", "chance"}
    labels = [t.get_text() for t in ax.get_legend().get_texts()]
    assert f"SCRUB  (AUC {results['scrub'].auc:.3f})" in labels
    assert f"Retrain  (AUC {results['retrain'].auc:.3f})" in labels
    assert ax.get_xscale() == "linear" and ax.get_title() == "U-LiRA"
    np.testing.assert_allclose(lines["roc:scrub"].get_xdata(), results["scrub"].fpr)
    np.testing.assert_allclose(lines["roc:scrub"].get_ydata(), results["scrub"].tpr)
