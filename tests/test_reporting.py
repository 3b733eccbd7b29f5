"""`scrub_unlearning.reporting`: figures (inspected through their Axes), the HTML page, and the notebook."""

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
from scrub_unlearning.reporting import (
    forget_vs_test_figure,
    html_report,
    load_ulira_scores,
    metric_bars_figure,
    roc_figure,
    write_report,
)

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


def test_html_report_is_self_contained_and_escaped(table, scores):
    html = html_report(table, "Run <1> & co", scores_by_scenario={"up": scores},
                       extra_sections=[("Quality <gates>", "<p id='gates'>gate results</p>")])
    images = re.findall(r'<img src="([^"]*)"', html)
    assert len(images) == 2 + 2 + 1  # per scenario: Figure 1 view and bars; the ROC for up
    assert html.count("<img") == len(images)
    for source in images:
        assert source.startswith("data:image/png;base64,")
        assert base64.b64decode(source.split(",", 1)[1])[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<script" not in html.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt; &amp; NaN weights" in html
    assert "Run &lt;1&gt; &amp; co" in html
    assert not re.search(r"https?://", html)
    assert not re.search(r"<link|@import|url\(", html)
    assert "n/a" in html and ">nan<" not in html.lower()
    assert "12.35" in html and "12.3456" not in html  # floats to 2 decimals
    assert "<h2>Quality &lt;gates&gt;</h2><p id='gates'>gate results</p>" in html
    assert "Failed rows" in html and "Guard firings" in html
    summary = html[html.index('id="summary"'):html.index('id="scenario-0"')]
    assert "NegGrad" in summary and "DivergenceError" in summary  # the failed row and its reason
    assert re.search(r"<td[^>]*>up</td><td[^>]*>SCRUB</td><td[^>]*>2</td><td[^>]*>3</td>", summary)  # guard
    assert html.startswith("<!DOCTYPE html>") and html.rstrip().endswith("</html>")


def test_html_report_without_scores_or_retrain(tmp_path):
    """The deletion-request shape: no Retrain/Original, free model names, no guard or U-LiRA columns."""
    frame = pd.DataFrame([
        {"scenario": "request r1", "application": "up", "model": "v2 (after)", "seed": 1, "status": "ok",
         "failure": "", "forget_error": 20.0, "retain_error": 0.5, "test_error": 2.0, "mia_basic": 51.0},
        {"scenario": "request r1", "application": "up", "model": "v1 (before)", "seed": 1, "status": "ok",
         "failure": "", "forget_error": 0.0, "retain_error": 0.4, "test_error": 1.9, "mia_basic": NAN},
    ])
    html = html_report(frame, "Deletion request r1", extra_sections=[("Quality gates", "<table></table>")])
    assert html.count("<img") == 2
    assert "v2 (after)" in html and "n/a" in html
    path = write_report(html, tmp_path / "nested" / "report.html")
    assert path == tmp_path / "nested" / "report.html"
    assert path.read_text(encoding="utf-8") == html


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
    for name in ("forget_vs_test_figure", "metric_bars_figure", "roc_figure", "html_report"):
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
