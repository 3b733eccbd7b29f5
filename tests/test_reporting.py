"""`scrub_unlearning.reporting`: figures (inspected through their Axes), the ranking, the two HTML reports, and the
notebook."""

from __future__ import annotations

import base64
import json
import math
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from matplotlib.collections import PathCollection
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from sklearn.metrics import roc_auc_score

from scrub_unlearning import reporting
from scrub_unlearning.methods import DISPLAY_NAMES
from scrub_unlearning.reporting import (
    CHARTED_METRICS,
    UTILITY_BUDGET,
    forget_vs_test_figure,
    load_ulira_scores,
    method_label,
    metric_bars_figure,
    request_report,
    roc_figure,
    run_report,
    write_report,
)
from scrub_unlearning.reporting.ranking import OVER_BUDGET, WITHIN_BUDGET, rank_methods

NAN = float("nan")
ROOT = Path(__file__).resolve().parents[1]
SCRIPT_FAILURE = "DivergenceError: <script>alert('x')</script> & NaN weights"


def _row(scenario, application, model, seed=1, status="ok", failure="", **metrics):
    return {"scenario": scenario, "application": application, "model": model, "seed": seed, "status": status,
            "failure": failure, "guard_fired": False, "guard_epoch": NAN, **metrics}


@pytest.fixture(scope="module")
def table() -> pd.DataFrame:
    rows = [
        _row("rb_class", "rb_class", "original", forget_error=0.0, test_error=2.0, forgotten_class_test_error=1.0),
        _row("rb_class", "rb_class", "retrain", forget_error=100.0, test_error=1.5, forgotten_class_test_error=100.0),
        _row("rb_class", "rb_class", "scrub", forget_error=95.0, test_error=12.3456,
             forgotten_class_test_error=90.0),
        _row("rb_class", "rb_class", "finetune", forget_error=5.0, test_error=1.8, forgotten_class_test_error=NAN),
        _row("rb_class", "rb_class", "neggrad", status="failed", failure=SCRIPT_FAILURE, forget_error=NAN,
             test_error=NAN, forgotten_class_test_error=NAN),
    ]
    for seed, shift in ((1, 0.0), (2, 2.0)):
        rows += [
            _row("up", "up", "original", seed, forget_error=0.0 + shift, test_error=2.0, mia_basic=60.0,
                 ulira_auc=0.7),
            _row("up", "up", "retrain", seed, forget_error=10.0 + shift, test_error=1.0 + shift, mia_basic=50.0,
                 ulira_auc=0.5),
            _row("up", "up", "scrub", seed, forget_error=40.0 + shift, test_error=3.0, mia_basic=55.0,
                 ulira_auc=0.55),
            _row("up", "up", "fisher", seed, forget_error=80.0, test_error=9.0 + shift, mia_basic=52.0,
                 ulira_auc=0.6),
        ]
    frame = pd.DataFrame(rows)
    frame.loc[(frame["scenario"] == "up") & (frame["model"] == "scrub") & (frame["seed"] == 2),
              ["guard_fired", "guard_epoch"]] = [True, 3.0]
    return frame


@pytest.fixture(scope="module")
def scores() -> dict[str, pd.DataFrame]:
    rng = np.random.default_rng(0)
    member = np.tile([True, False], 50)
    return {
        "retrain": pd.DataFrame({"shadow": 0, "example": range(100), "member": member,
                                 "score": rng.normal(size=100)}),
        "scrub": pd.DataFrame({"shadow": 0, "example": range(100), "member": member,
                               "score": rng.normal(size=100) + member * 1.0}),
        "original": pd.DataFrame({"shadow": 0, "example": range(100), "member": member,
                                  "score": np.where(np.arange(100) == 3, NAN, rng.normal(size=100) + member * 3.0)}),
    }


def _points(ax, prefix="point:") -> dict[str, np.ndarray]:
    return {c.get_gid()[len(prefix):]: c.get_offsets() for c in ax.collections
            if isinstance(c, PathCollection) and str(c.get_gid()).startswith(prefix)}


def _bars(ax) -> dict[str, float]:
    return {p.get_gid()[len("bar:"):]: p.get_height() for p in ax.patches
            if isinstance(p, Rectangle) and str(p.get_gid()).startswith("bar:")}


def _retrain_line(ax) -> float:
    lines = [line for line in ax.lines if line.get_gid() == "retrain_ref"]
    assert len(lines) == 1
    ys = np.asarray(lines[0].get_ydata(), dtype=float)
    assert np.allclose(ys, ys[0])
    return float(ys[0])


def test_forget_vs_test_has_one_labelled_point_per_successful_method(table):
    fig = forget_vs_test_figure(table, "rb_class")
    assert isinstance(fig, Figure)
    ax = fig.axes[0]
    points = _points(ax)
    assert set(points) == {"original", "retrain", "scrub", "finetune"}  # neggrad failed: no point
    assert all(offsets.shape == (1, 2) for offsets in points.values())
    assert np.allclose(points["scrub"][0], [95.0, 12.3456])
    assert ax.get_xlabel().startswith("forget error") and ax.get_ylabel().startswith("test error")
    sizes = {c.get_gid(): c.get_sizes()[0] for c in ax.collections if isinstance(c, PathCollection)}
    assert sizes["point:retrain"] > sizes["point:scrub"]  # Retrain highlighted
    texts = " ".join(t.get_text() for t in ax.texts)
    for name in ("Original", "Retrain", "SCRUB", "Finetune"):
        assert name in texts
    assert "failed (not shown): NegGrad" in texts


def test_forget_vs_test_averages_seeds_with_error_bars(table):
    fig = forget_vs_test_figure(table, "up")
    points = _points(fig.axes[0])
    assert set(points) == {"original", "retrain", "scrub", "fisher"}
    assert np.allclose(points["retrain"][0], [11.0, 2.0])  # mean over seeds 1 and 2
    assert np.allclose(points["fisher"][0], [80.0, 10.0])
    assert any(type(c).__name__ == "LineCollection" for c in fig.axes[0].collections)  # std error bars
    assert "2 seeds" in fig.axes[0].get_title()


def test_forget_vs_test_zooms_on_a_crowded_cluster():
    models = ["original", "retrain", "scrub", "scrub_r", "finetune", "neggrad_plus"]
    xs = [0.0, 3.3, 0.0, 0.5, 1.0, 90.0]
    ys = [1.4, 0.8, 0.9, 1.1, 1.2, 15.0]
    crowded = pd.DataFrame([_row("s", "rb_selective", m, forget_error=x, test_error=y)
                            for m, x, y in zip(models, xs, ys, strict=True)])
    fig = forget_vs_test_figure(crowded, "s")
    assert len(fig.axes) == 2
    assert len(_points(fig.axes[0])) == len(models)
    assert set(_points(fig.axes[1], "zoom:")) == set(models) - {"neggrad_plus"}


def test_metric_bars_have_a_bar_per_method_and_retrain_reference(table):
    metrics = ["forget_error", "test_error", "forgotten_class_test_error"]
    fig = metric_bars_figure(table, "rb_class", metrics)
    assert len(fig.axes) == 3
    for ax, metric in zip(fig.axes, metrics, strict=True):
        assert ax.get_title() == metric
        retrain = table[(table["scenario"] == "rb_class") & (table["model"] == "retrain")][metric].iloc[0]
        assert _retrain_line(ax) == pytest.approx(retrain)
        bars = _bars(ax)
        assert "neggrad" not in bars
        assert [t.get_text() for t in ax.texts].count("failed") == 1
        assert len(ax.get_xticklabels()) == 5
    assert set(_bars(fig.axes[0])) == {"original", "retrain", "scrub", "finetune"}
    assert set(_bars(fig.axes[2])) == {"original", "retrain", "scrub"}  # finetune has no value there
    assert "n/a" in [t.get_text() for t in fig.axes[2].texts]
    assert _bars(fig.axes[1])["scrub"] == pytest.approx(12.3456)


def test_metric_bars_average_seeds(table):
    fig = metric_bars_figure(table, "up", ["forget_error", "mia_basic", "ulira_auc"])
    assert [len(_bars(ax)) for ax in fig.axes] == [4, 4, 4]
    assert _retrain_line(fig.axes[0]) == pytest.approx(11.0)
    assert _retrain_line(fig.axes[2]) == pytest.approx(0.5)
    with pytest.raises(KeyError, match="nowhere"):
        metric_bars_figure(table, "nowhere", ["forget_error"])


def test_roc_figure_has_a_line_per_method_with_auc_and_the_diagonal(scores):
    fig = roc_figure(scores)
    assert len(fig.axes) == 1
    ax = fig.axes[0]
    lines = {line.get_gid(): line for line in ax.lines}
    assert set(lines) == {"roc:original", "roc:retrain", "roc:scrub", "chance"}
    assert list(lines["chance"].get_xdata()) == [0, 1] and list(lines["chance"].get_ydata()) == [0, 1]
    legend = [t.get_text() for t in ax.get_legend().get_texts()]
    assert len(legend) == 4
    frame = scores["original"].dropna(subset=["score"])
    auc = roc_auc_score(frame["member"], frame["score"])
    assert f"Original  (AUC {auc:.3f})" in legend
    assert all("AUC" in text for text in legend)


def test_roc_figure_skips_methods_without_both_classes():
    fig = roc_figure({"scrub": pd.DataFrame({"member": [True, True], "score": [0.1, 0.2]})})
    assert [line.get_gid() for line in fig.axes[0].lines] == ["chance"]
    assert any("no scores: SCRUB" in t.get_text() for t in fig.axes[0].texts)


def test_roc_figure_of_no_scores_is_an_empty_titled_axes():
    """A failed attack has no scores: the figure still exists, with its title and a note."""
    fig = roc_figure({}, title="U-LiRA: scrub failed")
    (ax,) = fig.axes
    assert ax.get_title() == "U-LiRA: scrub failed"
    assert [line.get_gid() for line in ax.lines] == ["chance"]
    assert any(t.get_text() == "no U-LiRA scores" for t in ax.texts)


def test_display_names_and_order_come_from_the_registry():
    assert all(method_label(name) == display for name, display in DISPLAY_NAMES.items())
    assert method_label("my_fake_model") == "my_fake_model"  # unknown names fall back to themselves
    frame = pd.DataFrame([_row("s", "rb_selective", m, forget_error=float(i), test_error=1.0)
                          for i, m in enumerate(["my_fake_model", *reversed(list(DISPLAY_NAMES))])])
    fig = metric_bars_figure(frame, "s", ["forget_error"])
    ticks = [t.get_text() for t in fig.axes[0].get_xticklabels()]
    assert ticks == [*DISPLAY_NAMES.values(), "my_fake_model"]  # registry order, unknown models last


def test_charted_metrics_are_a_display_choice():
    """Reporting charts its own choice per application, not evaluation's list of columns."""
    from scrub_unlearning.evaluation.metrics import APPLICATION_METRICS

    assert set(CHARTED_METRICS) == set(APPLICATION_METRICS)
    assert "ulira_auc" in CHARTED_METRICS["up"] and "ulira_auc" not in APPLICATION_METRICS["up"]
    assert not hasattr(reporting, "APPLICATION_METRICS") and not hasattr(reporting, "html_report")


def _rc_table() -> pd.DataFrame:
    return pd.DataFrame([
        _row("rc", "rc", "original", forget_error=100.0, test_error=10.0, ic_error_test=20.0),
        _row("rc", "rc", "retrain", forget_error=90.0, test_error=10.5, ic_error_test=1.0),
        _row("rc", "rc", "neggrad_plus", forget_error=95.0, test_error=18.0, ic_error_test=0.5),  # +8 points
        _row("rc", "rc", "scrub", forget_error=80.0, test_error=11.0, ic_error_test=3.0),
        _row("rc", "rc", "finetune", forget_error=60.0, test_error=12.0, ic_error_test=6.0),
    ])


def test_rc_ranking_puts_an_over_budget_method_after_the_in_budget_ones():
    ranking = rank_methods(_rc_table(), "rc")
    table = ranking.table
    assert list(table["method"]) == ["SCRUB", "Finetune", "Original", "NegGrad+"]
    assert list(table["rank"]) == [1, 2, 3, 4]
    assert list(table["budget"]) == [WITHIN_BUDGET] * 3 + [OVER_BUDGET]
    assert table["test_error_vs_original"].iloc[-1] == pytest.approx(8.0)
    assert "Retrain" not in set(table["method"])
    assert f"more than {UTILITY_BUDGET:g} points above the Original's" in ranking.rule


def test_up_ranking_respects_the_budget_and_rb_keeps_its_rule():
    frame = pd.DataFrame([
        _row("up", "up", "original", forget_error=0.0, test_error=2.0, mia_basic=70.0, ulira_auc=0.8),
        _row("up", "up", "retrain", forget_error=10.0, test_error=2.5, mia_basic=50.0, ulira_auc=0.5),
        _row("up", "up", "bad_teacher", forget_error=10.0, test_error=9.0, mia_basic=50.0, ulira_auc=0.5),
        _row("up", "up", "scrub", forget_error=20.0, test_error=3.0, mia_basic=55.0, ulira_auc=0.6),
    ])
    assert list(rank_methods(frame, "up").table["method"]) == ["SCRUB", "Original", "Bad-Teacher"]
    rb = pd.DataFrame([
        _row("rb", "rb_class", "original", forget_error=0.0, test_error=2.0),
        _row("rb", "rb_class", "scrub", forget_error=95.0, test_error=12.0),
        _row("rb", "rb_class", "finetune", forget_error=5.0, test_error=1.8),
    ])
    assert list(rank_methods(rb, "rb_class").table["method"]) == ["Finetune", "Original", "SCRUB"]
    no_original = rank_methods(rb[rb["model"] != "original"], "rb_class")
    assert no_original.table.empty and "utility budget cannot be applied" in no_original.note


def test_run_report_is_self_contained_and_escaped(table, scores):
    html = run_report(table, "Run <1> & co", scores_by_scenario={"up": scores})
    images = re.findall(r'<img src="([^"]*)"', html)
    assert len(images) == 2 + 2 + 1  # per scenario: Figure 1 view and bars; the ROC for up
    assert html.count("<img") == len(images)
    for source in images:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in html.lower()  # autoescaping: the failure reason's <script> comes out as text
    assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; NaN weights" in html
    assert "Run &lt;1&gt; &amp; co" in html
    assert not re.search(r"https?://", html)
    assert not re.search(r"<link|@import|url\(", html)
    assert "n/a" in html and ">nan<" not in html.lower()
    assert "12.35" in html and "12.3456" not in html  # floats to 2 decimals
    assert "Failed rows" in html and "Guard firings" in html and "Which is better" in html
    summary = html[html.index('id="summary"'):html.index('id="scenario-0"')]
    assert "NegGrad" in summary and "DivergenceError" in summary  # the failed row and its reason
    assert re.search(r"<td[^>]*>up</td><td[^>]*>SCRUB</td><td[^>]*>2</td><td[^>]*>3</td>", summary)  # guard
    assert "utility budget" in html
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


def test_run_report_shows_guard_firings_only_with_a_guard_column(table):
    html = run_report(table.drop(columns=["guard_fired", "guard_epoch"]), "no guard")
    assert "Guard firings" not in html and "Failed rows" in html
    with pytest.raises(KeyError, match="scenario"):
        run_report(table.drop(columns=["scenario"]), "broken")


def _request_summary(**changes) -> dict:
    summary = {
        "request_id": "r-42", "skipped": False, "count": 25, "method": "scrub", "version_before": "3",
        "version_after": "4", "promoted": False, "seconds": 12.34, "ledger_time": "2025-01-02T03:04:05Z",
        "gates": {"enabled": True, "passed": False, "checks": {
            "test_error_increase": {"value": 2.5, "limit": 1.0, "passed": False},
            "ulira_auc": {"value": 0.52, "limit": 0.6, "passed": True},
            "mia_basic_in_band": {"value": 51.0, "limit": [45.0, 55.0], "passed": True}}},
        "before": {"forget_error": 0.0, "held_out_error_same_classes": 20.0, "retain_error": 0.5,
                   "test_error": 10.0, "mia_basic": 70.0},
        "after": {"forget_error": 18.0, "held_out_error_same_classes": 21.0, "retain_error": 0.7,
                  "test_error": 12.5, "mia_basic": 51.0, "ulira_auc": 0.52, "ulira_auc_ci_low": 0.48,
                  "ulira_auc_ci_high": 0.56, "ulira_acc": 0.51},
    }
    summary.update(changes)
    return summary


def test_request_report_has_its_own_wording(tmp_path):
    html = request_report(_request_summary())
    text = html.lower()
    for word in ("retrain", "seed", "guard", "which is better", "rank"):
        assert word not in text, word
    assert "Deletion request r-42" in html
    assert "25 training examples" in html and "SCRUB" in html  # what and how, never ids
    assert "Version 3 → version 4" in html and "not promoted" in html
    assert "Rise in test error (points)" in html and "FAIL" in html and "between 45.00 and 55.00" in html
    assert "Error on the forgotten examples" in html and "+18.00" in html
    assert "AUC 0.520 (95% interval 0.480–0.560)" in html
    assert "<img" not in html and not re.search(r"https?://", html)
    path = write_report(html, tmp_path / "nested" / "report.html")
    assert path == tmp_path / "nested" / "report.html"
    assert path.read_text(encoding="utf-8") == html


def test_request_report_escapes_and_handles_gates_off_and_no_ulira():
    summary = _request_summary(request_id="<script>alert(1)</script>", promoted=True,
                               gates={"enabled": False, "passed": True, "checks": {}})
    summary["after"] = {k: v for k, v in summary["after"].items() if not k.startswith("ulira")}
    html = request_report(summary)
    assert "<script" not in html.lower() and "&lt;script&gt;alert(1)&lt;/script&gt;" in html
    assert "quality gates are off" in html and "U-LiRA" not in html
    assert "The new model version serves." in html


def test_a_skipped_request_gets_a_short_page():
    earlier = {"schema": 1, "request_id": "r-42", "id_hashes": ["deadbeef"], "set_hash": "cafe", "count": 25,
               "version_before": "3", "version_after": "4", "promoted": True, "method": "scrub",
               "time": "2025-01-02T03:04:05Z"}
    html = request_report({"request_id": "r-42", "skipped": True,
                           "reason": "already processed at 2025-01-02T03:04:05Z", **earlier})
    assert "Nothing was done" in html and "already processed at 2025-01-02T03:04:05Z" in html
    assert "version 3 was replaced by version 4" in html and "promoted" in html
    assert "deadbeef" not in html and "cafe" not in html  # no id hashes
    assert "Before and after" not in html and "Quality gates" not in html
    for word in ("retrain", "seed", "guard"):
        assert word not in html.lower()


def test_load_ulira_scores_reads_a_seed_folder(tmp_path, scores):
    for model, frame in scores.items():
        frame.to_csv(tmp_path / f"{model}_ulira_scores.csv", index=False)
    (tmp_path / "fisher_ulira_scores.csv").write_text("shadow,example,member,score,id\n")
    loaded = load_ulira_scores(tmp_path)
    assert list(loaded) == ["original", "retrain", "scrub"]  # display order; the empty file left out
    assert loaded["scrub"]["member"].dtype == bool
    assert math.isnan(loaded["original"]["score"].iloc[3])


def test_notebook_is_valid_json_and_its_code_compiles():
    notebook = json.loads((ROOT / "notebooks" / "latest_runs.ipynb").read_text(encoding="utf-8"))
    assert notebook["nbformat"] == 4
    code = ["".join(cell["source"]) for cell in notebook["cells"] if cell["cell_type"] == "code"]
    assert code
    for index, source in enumerate(code):
        compile(source, f"cell {index}", "exec")
    everything = "\n".join(code)
    assert "mlflow.db" in everything and '"scrub_unlearning"' in everything
    assert "reports/run_table.csv" in everything
    for name in ("forget_vs_test_figure", "metric_bars_figure", "roc_figure", "run_report", "CHARTED_METRICS"):
        assert name in everything and hasattr(reporting, name)


def test_a_method_failing_on_some_seeds_is_averaged_over_the_others_and_starred():
    frame = pd.DataFrame([
        _row("s", "rb_selective", "retrain", 1, forget_error=5.0, test_error=1.0),
        _row("s", "rb_selective", "retrain", 2, forget_error=7.0, test_error=1.0),
        _row("s", "rb_selective", "scrub", 1, forget_error=30.0, test_error=2.0),
        _row("s", "rb_selective", "scrub", 2, status="failed", failure="boom", forget_error=NAN, test_error=NAN),
    ])
    ax = forget_vs_test_figure(frame, "s").axes[0]
    assert np.allclose(_points(ax)["scrub"][0], [30.0, 2.0])
    texts = [t.get_text() for t in ax.texts]
    assert "SCRUB*" in texts and any("some seeds failed" in t for t in texts)
    bars = metric_bars_figure(frame, "s", ["forget_error"]).axes[0]
    assert _bars(bars) == {"retrain": pytest.approx(6.0), "scrub": pytest.approx(30.0)}
    assert _retrain_line(bars) == pytest.approx(6.0)


def test_seed_summary_of_the_report_has_the_t_interval_of_each_mean(table):
    from scrub_unlearning.evaluation.statistics import mean_interval
    from scrub_unlearning.reporting.tables import summarise

    up = table[table["scenario"] == "up"]
    summary = summarise(up, ["forget_error", "ulira_auc"]).set_index("model")
    expected = mean_interval([10.0, 12.0])  # Retrain's forget error over the two seeds
    retrain = summary.loc["retrain"]
    assert (retrain["forget_error_mean"], retrain["forget_error_std"]) == (11.0, pytest.approx(math.sqrt(2)))
    assert (retrain["forget_error_mean_ci_low"], retrain["forget_error_mean_ci_high"]) == (
        pytest.approx(expected.low), pytest.approx(expected.high))
    rb = summarise(table[table["scenario"] == "rb_class"], ["forget_error"]).set_index("model")
    assert math.isnan(rb.loc["scrub", "forget_error_mean_ci_low"])  # one seed: no interval


def test_run_report_shows_klom_and_both_interclass_definitions_first():
    rows = pd.DataFrame([
        _row("rc", "rc", "retrain", ic_error_test=1.0, ic_all_error_test=2.0, ic_all_count_test=4.0, zzz=1.0),
        _row("up", "up", "scrub", ulira_auc=0.6, klom_forget_p95=1.25, zzz=1.0),
    ])
    html = run_report(rows, "t")
    headers = [re.findall(r"<th>(.*?)</th>", head.replace("<wbr>", ""))
               for head in re.findall(r"<thead>.*?</thead>", html)]
    rc, up = headers[-2], headers[-1]  # the two scenarios' tables, after the run summary's
    assert rc.index("ic_error_test") < rc.index("ic_all_error_test") < rc.index("zzz")
    assert up.index("ulira_auc") < up.index("klom_forget_p95") < up.index("zzz")
    assert '<td class="num">4</td>' in html  # the count shows as an integer
