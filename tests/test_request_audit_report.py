"""The deletion-request page's audit section (shadow models: method-level U-LiRA and the served-model test), the
version chain and the retry line, rendered from a request summary by `reporting.request_report`."""

from __future__ import annotations

import re

import numpy as np
from matplotlib.figure import Figure

from scrub_unlearning.reporting import request_report
from scrub_unlearning.reporting.figures import p_value_figure, roc_points_figure

NAN = float("nan")
RETRY = ("kedro run --pipelines=deletion_request --params &#34;deletion_request.path=&lt;the request CSV&gt;,"
         "deletion_request.method=&lt;method&gt;&#34;")


def _audit(**changes) -> dict:
    rng = np.random.default_rng(0)
    audit = {
        "num_shadows": 16, "registration_version": "1", "registration_seconds": 812.4, "earlier_requests": 1,
        "held_per_shadow": [11, 9, 12, 14, 10, 13, 12, 11, 9, 13, 12, 10, 14, 11, 12, 13], "seconds": 95.2,
        "method": "scrub_r",
        "ulira": {"auc": 0.54, "ci_low": 0.47, "ci_high": 0.61, "acc": 0.52,
                  "fpr": [0.0, 0.1, 0.3, 0.6, 1.0], "tpr": [0.0, 0.14, 0.35, 0.62, 1.0]},
        "served": {
            "alpha": 0.05,
            "request": {"n": 25, "flagged": 3, "share": 0.12, "flagged_bh": 0},
            "chance": {"n": 25, "flagged": 2, "share": 0.08, "flagged_bh": 0},
            "excess": 0.04, "fisher_p": 0.5,
            "correction": "Benjamini-Hochberg at 5% over the 25 requested examples.",
            "p_request": sorted(rng.uniform(size=25).tolist()), "p_chance": sorted(rng.uniform(size=25).tolist()),
        },
    }
    audit.update(changes)
    return audit


def _summary(**changes) -> dict:
    summary = {
        "request_id": "req-2", "skipped": False, "count": 25, "method": "scrub_r", "version_before": "2",
        "version_after": "3", "promoted": False, "seconds": 40.0, "ledger_time": "2025-01-02T03:04:05Z",
        "gates": {"enabled": True, "passed": False, "checks": {
            "test_error_increase": {"value": 0.4, "limit": 1.0, "passed": True},
            "ulira_auc": {"value": 0.54, "limit": 0.6, "passed": True},
            "flagged_share_excess": {"value": 0.04, "limit": 0.02, "passed": False, "fisher_p": 0.5,
                                     "note": "3 of 25 requested vs 2 of 25 never-seen flagged"}}},
        "before": {"forget_error": 0.0, "test_error": 10.0},
        "after": {"forget_error": 8.0, "test_error": 10.4},
        "audit": _audit(),
        "chain": [{"version": "1", "role": "original", "request_id": None},
                  {"version": "2", "role": "unlearned", "request_id": "req-1"}],
    }
    summary.update(changes)
    return summary


def _all_pass(summary: dict) -> dict:
    checks = {name: {**check, "passed": True} for name, check in summary["gates"]["checks"].items()}
    return {**summary, "promoted": True, "gates": {"enabled": True, "passed": True, "checks": checks}}


def _section(html: str, name: str) -> str:
    match = re.search(rf'<section id="{name}">(.*?)</section>', html, re.S)
    assert match, name
    return match.group(1)


def test_a_full_audit_renders_its_section():
    html = request_report(_summary())
    audit = _section(html, "audit")
    assert "16 <b>shadow models</b>" in audit and "version 1 was registered" in audit
    assert "812 s (about 14 min)" in audit and "95.2 s" in audit and "16 unlearning runs" in audit
    assert "the one earlier request" in audit and "SCRUB+R" in audit
    assert "between 9 and 14 of the 25 per shadow" in audit
    assert "AUC 0.540 (95% interval 0.470–0.610)" in audit and "0.5 means" in audit
    assert audit.count("<img") == 2 and 'alt="U-LiRA ROC of the unlearning method"' in audit
    assert "data:image/png;base64," in audit and not re.search(r"https?://", html)
    cells = re.findall(r'<td class="num">([^<]*)</td>', audit)
    assert cells == ["25", "3", "12.0%", "0", "25", "2", "8.0%", "0"]
    assert "+4.0 percentage points" in audit and "p = 0.500" in audit and "Benjamini-Hochberg at 5%" in audit
    assert "α = 0.05" in audit


def test_the_audit_metrics_stay_out_of_the_before_after_table():
    after = {"forget_error": 8.0, "test_error": 10.4, "ulira_auc": 0.54, "ulira_auc_ci_low": 0.47,
             "ulira_auc_ci_high": 0.61, "ulira_acc": 0.52, "audit_flagged_share": 0.12, "audit_fisher_p": 0.5}
    html = request_report(_summary(after=after))
    metrics = _section(html, "metrics")
    assert "audit_" not in html and "U-LiRA" not in metrics and "Error on the test set" in metrics
    assert "AUC 0.540" in _section(html, "audit")


def test_the_chain_lists_the_versions_in_order_then_the_candidate():
    html = request_report(_summary())
    chain = re.search(r'<p class="chain">(.*?)</p>', html, re.S).group(1)
    versions = re.findall(r"version (\d+)", chain)
    assert versions == ["1", "2", "3"]
    assert "(original model)" in chain and "request req-1" in chain and "not promoted" in chain
    assert "promoted" in request_report(_all_pass(_summary())).split('<p class="chain">')[1].split("</p>")[0]


def test_new_gates_have_labels_and_a_failed_gate_offers_a_retry():
    html = request_report(_summary())
    gates = _section(html, "gates")
    assert "Membership attack on the unlearning method (U-LiRA AUC)" in gates
    assert "Requested examples flagged beyond chance" in gates and "Fisher&#39;s exact test p = 0.500" in gates
    assert "3 of 25 requested vs 2 of 25 never-seen flagged" in gates and "FAIL" in gates
    assert "registered but not promoted" in gates and RETRY in gates
    passed = request_report(_all_pass(_summary()))
    assert "kedro run" not in passed and "registered but not promoted" not in passed and "FAIL" not in passed


def test_a_gate_that_does_not_apply_is_neither_passed_nor_failed():
    summary = _summary()
    summary["gates"]["checks"]["flagged_share_excess"] = {"value": None, "limit": 0.02, "passed": True,
                                                           "fisher_p": None, "applicable": False,
                                                           "note": "too few requested examples"}
    summary["gates"]["passed"] = True
    html = request_report({**summary, "promoted": True})
    gates = _section(html, "gates")
    assert "not applicable" in gates and "too few requested examples" in gates and "FAIL" not in gates
    assert "kedro run" not in html


def test_without_an_audit_the_page_is_as_before():
    without = {k: v for k, v in _summary().items() if k not in ("audit", "chain")}
    for summary in (without, {**without, "audit": None}):
        html = request_report(summary)
        assert 'id="audit"' not in html and "shadow" not in html and "<img" not in html
        assert 'class="chain"' not in html and "Version 2 → version 3" in html


def test_nan_and_none_render_as_na():
    served = {"alpha": None, "request": {"n": None, "flagged": NAN, "share": NAN, "flagged_bh": None},
              "chance": {}, "excess": NAN, "fisher_p": None, "correction": None, "p_request": [NAN, None],
              "p_chance": None}
    audit = _audit(num_shadows=None, registration_seconds=None, earlier_requests=None, seconds=NAN,
                   held_per_shadow=None, served=served,
                   ulira={"auc": NAN, "ci_low": None, "ci_high": NAN, "acc": None, "fpr": [], "tpr": []})
    summary = _summary(audit=audit)
    summary["gates"]["checks"]["flagged_share_excess"].update(value=NAN, fisher_p=NAN)
    html = request_report(summary)
    audit_html = _section(html, "audit")
    assert "AUC n/a (95% interval n/a–n/a)" in audit_html and "took n/a" in audit_html
    assert "was not recorded" in audit_html and "n/a <b>shadow models</b>" in audit_html
    assert "+nan" not in html.lower() and ">nan<" not in html.lower() and "None" not in audit_html
    assert re.findall(r'<td class="na">([^<]*)</td>', audit_html) == ["n/a"] * 8
    assert "n/a percentage points" not in audit_html and "Excess over chance:</b> n/a" in audit_html
    assert audit_html.count("<img") == 1  # no ROC without points; the p-value figure still renders


def test_ulira_not_applicable_shows_the_note():
    html = request_report(_summary(audit=_audit(ulira=None, ulira_note="every shadow held the whole request")))
    audit = _section(html, "audit")
    assert "Not applicable: every shadow held the whole request" in audit and audit.count("<img") == 1


def test_a_skipped_request_still_renders():
    html = request_report({"request_id": "req-2", "skipped": True, "reason": "already processed", "count": 25,
                           "version_before": "2", "version_after": "3", "promoted": True, "method": "scrub_r",
                           "audit": _audit(), "chain": _summary()["chain"]})
    assert "Nothing was done" in html and 'id="audit"' not in html and "kedro run" not in html


def test_no_ids_or_pixels_reach_the_page():
    summary = _summary()
    html = request_report(summary)
    text = re.sub(r'src="data:image/png;base64,[^"]*"', "", html)
    assert "base64" not in text and "hash" not in text.lower()
    for word in ("retrain", "seed", "guard", "rank"):
        assert word not in text.lower(), word


def test_the_figures_handle_points_and_p_values():
    fig = roc_points_figure([0.0, 0.5, NAN, 1.0], [0.0, 0.6, 0.2, 1.0], "curve")
    assert isinstance(fig, Figure)
    line = next(line for line in fig.axes[0].lines if line.get_gid() == "roc:points")
    assert list(line.get_xdata()) == [0.0, 0.5, 1.0]
    assert not [t for t in fig.axes[0].texts if t.get_gid() == "no_scores"]
    empty = roc_points_figure([0.0], [0.0, 1.0], "curve")
    assert [t for t in empty.axes[0].texts if t.get_gid() == "no_scores"]
    fig = p_value_figure([0.01, 0.2, 0.9], [0.3, 0.6], 0.05)
    assert len(fig.axes) == 2 and all(any(line.get_gid() == "alpha" for line in ax.lines) for ax in fig.axes)
    assert len(p_value_figure(None, [NAN], None).axes) == 1
