"""Run reports: the paper's views of a run-wide table as matplotlib figures and one self-contained HTML page.

The input is the run-wide table (one row per scenario, model and seed; DESIGN §5 columns). Views:

- `forget_vs_test_figure`: the SCRUB paper's Figure 1 view, forget error (x) against test error (y), one point per
  method (mean over the seeds that succeeded, error bars = std), Retrain highlighted, Original marked.
- `metric_bars_figure`: one bar chart per metric, Retrain's value as a horizontal reference line, failed methods
  shown as a gap marked "failed".
- `roc_figure`: U-LiRA ROC curves from the per-example scores (`<model>_ulira_scores.csv`: member, score).
- `html_report`: all of the above per scenario, with a run summary and the tables, as one HTML page that renders
  offline (figures embedded as base64 PNG, CSS inline, no external resources). `write_report` saves it.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot global state). This module never imports Kedro
or MLflow.
"""

from __future__ import annotations

import base64
import html as _html
import io
import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from matplotlib.path import Path as MplPath
from matplotlib.transforms import Bbox
from sklearn.metrics import roc_auc_score, roc_curve

__all__ = ["APPLICATION_METRICS", "DEFAULT_METRICS", "METHOD_LABELS", "METHOD_ORDER", "forget_vs_test_figure",
           "html_report", "load_ulira_scores", "method_label", "metric_bars_figure", "roc_figure", "write_report"]

METHOD_ORDER = ("original", "retrain", "scrub", "scrub_r", "finetune", "neggrad", "neggrad_plus", "cf_k", "eu_k",
                "fisher", "bad_teacher")
"""Display order of the methods; other model names follow in the order they first appear in the table."""

METHOD_LABELS = {"original": "Original", "retrain": "Retrain", "scrub": "SCRUB", "scrub_r": "SCRUB+R",
                 "finetune": "Finetune", "neggrad": "NegGrad", "neggrad_plus": "NegGrad+", "cf_k": "CF-k",
                 "eu_k": "EU-k", "fisher": "Fisher", "bad_teacher": "Bad-Teacher"}

APPLICATION_METRICS = {
    "rb_class": ("forget_error", "test_error", "forgotten_class_test_error"),
    "rb_selective": ("forget_error", "test_error"),
    "rc": ("ic_error_test", "forget_error", "test_error"),
    "up": ("forget_error", "mia_basic", "ulira_auc"),
}
"""The metrics charted per application (DESIGN §5); a metric the table lacks (or holds only NaN for) is left out."""

DEFAULT_METRICS = ("forget_error", "test_error")

RB_TEST_ERROR_BUDGET = 5.0
"""RB's criterion (DESIGN §5): higher forget error at no more than this many points of test-error loss."""

WHICH_IS_BETTER = {
    "rb_class": "higher forget error at a test-error loss of at most 5 points",
    "rb_selective": "higher forget error at a test-error loss of at most 5 points",
    "rc": "lower ic_error_test (interclass confusion on the test set)",
    "up": "smaller |gap| to Retrain on forget error, MIA and U-LiRA",
}

METRIC_LABELS = {
    "forget_error": "forget error (%)", "retain_error": "retain error (%)", "test_error": "test error (%)",
    "val_error": "validation error (%)", "forgotten_class_test_error": "forgotten-class test error (%)",
    "ic_error_test": "interclass confusion, test (%)", "ic_error_retain": "interclass confusion, retain (%)",
    "ic_count_test": "interclass confusion, test (count)", "ic_count_retain": "interclass confusion, retain (count)",
    "mia_basic": "basic MIA accuracy (%)", "ulira_auc": "U-LiRA AUC", "ulira_acc": "U-LiRA balanced accuracy",
    "tow": "ToW", "seconds": "seconds", "scale_up": "scale-up vs Retrain",
}

# columns shown first in the HTML tables, in this order; the rest follow in the table's order, `failure` last
_LEADING_COLUMNS = ("model", "seed", "status", "forget_error", "retain_error", "test_error", "val_error",
                    "forgotten_class_test_error", "ic_error_test", "ic_error_retain", "ic_count_test",
                    "ic_count_retain", "mia_basic", "mia_basic_split_std", "ulira_auc", "ulira_auc_ci_low",
                    "ulira_auc_ci_high", "ulira_acc")
_INTEGER_COLUMNS = {"seed", "guard_epoch", "ic_count_test", "ic_count_retain", "ic_count_test_gap",
                    "ic_count_retain_gap", "seeds", "failed_seeds"}
_REDUNDANT_IN_SECTION = {"scenario", "application"}

_RETRAIN_COLOR = "#111111"
_ORIGINAL_COLOR = "#8c8c8c"
_FAILED_COLOR = "#b00020"
_PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
            "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d")


# --- table helpers -----------------------------------------------------------------------------------------------

def method_label(model: str) -> str:
    """The display name of a model ("scrub_r" → "SCRUB+R"); unknown names are shown as they are."""
    return METHOD_LABELS.get(str(model), str(model))


def _ordered_models(models: Iterable) -> list[str]:
    seen = list(dict.fromkeys(str(m) for m in models))
    known = [m for m in METHOD_ORDER if m in seen]
    return known + [m for m in seen if m not in METHOD_ORDER]


def _method_colors(models: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method (the same in every figure of a report): Retrain black, Original grey."""
    colors, others = {}, [m for m in METHOD_ORDER if m not in ("original", "retrain")]
    extra = [m for m in models if m not in METHOD_ORDER]
    for i, model in enumerate(others + extra):
        colors[model] = _PALETTE[i % len(_PALETTE)]
    colors["retrain"], colors["original"] = _RETRAIN_COLOR, _ORIGINAL_COLOR
    return colors


def _ok_mask(frame: pd.DataFrame) -> pd.Series:
    if "status" not in frame.columns:
        return pd.Series(True, index=frame.index)
    return frame["status"].astype(str).str.lower().eq("ok")


def _scenario_rows(table: pd.DataFrame, scenario: str) -> pd.DataFrame:
    if "scenario" not in table.columns:
        raise KeyError("the table has no 'scenario' column")
    rows = table[table["scenario"].astype(str) == str(scenario)]
    if rows.empty:
        known = ", ".join(map(str, pd.unique(table["scenario"])))
        raise KeyError(f"scenario {scenario!r} is not in the table (scenarios: {known})")
    return rows


def _application(rows: pd.DataFrame, scenario: str) -> str:
    if "application" in rows.columns and rows["application"].notna().any():
        return str(rows["application"].dropna().iloc[0])
    return str(scenario)


def _has_values(table: pd.DataFrame, column: str) -> bool:
    return column in table.columns and pd.to_numeric(table[column], errors="coerce").notna().any()


def _summarise(rows: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Per model (display order): mean and std over its successful seeds of each metric, the number of seeds, of
    failed seeds, and whether every seed failed. std is NaN with one seed."""
    records = []
    ok = _ok_mask(rows)
    for model in _ordered_models(rows["model"]):
        mine = rows["model"].astype(str) == model
        good = rows[mine & ok]
        record = {"model": model, "seeds": int(mine.sum()), "failed_seeds": int((mine & ~ok).sum())}
        record["failed"] = record["failed_seeds"] == record["seeds"]
        for metric in metrics:
            values = (pd.to_numeric(good[metric], errors="coerce").dropna() if metric in good.columns
                      else pd.Series(dtype=float))
            record[f"{metric}_mean"] = float(values.mean()) if len(values) else math.nan
            record[f"{metric}_std"] = float(values.std(ddof=1)) if len(values) > 1 else math.nan
        records.append(record)
    return pd.DataFrame.from_records(records)


def _seed_note(rows: pd.DataFrame) -> str:
    seeds = pd.unique(rows["seed"]) if "seed" in rows.columns else []
    return f"mean ± std over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"


def _finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


# --- figures -----------------------------------------------------------------------------------------------------

def _overlap(a: Bbox, b: Bbox) -> float:
    width = min(a.x1, b.x1) - max(a.x0, b.x0)
    height = min(a.y1, b.y1) - max(a.y0, b.y0)
    return width * height if width > 0 and height > 0 else 0.0


# label positions tried around a marker, nearest ring first: directions (degrees) and distances (points)
_LABEL_ANGLES = (20, 160, -20, -160, 50, 130, -50, -130, 90, -90, 0, 180)
_LABEL_RADII = (6, 14, 24, 36, 50, 66, 84)
_LEADER_FROM = 10  # points: labels further away get a thin line to their marker


def _segment_hits(p0: tuple[float, float], p1: tuple[float, float], box: Bbox) -> bool:
    return bool(MplPath([p0, p1]).intersects_bbox(box, filled=True))


def _nearest_on_box(point: tuple[float, float], box: Bbox) -> tuple[float, float]:
    return (min(max(point[0], box.x0), box.x1), min(max(point[1], box.y0), box.y1))


def _place_labels(fig: Figure, ax, labels: list[tuple[float, float, str, dict, str]]) -> None:
    """Annotate each (x, y, text, text properties, line colour) near its marker.

    Candidate positions lie on rings around the marker (nearest first); a candidate is free when its text overlaps
    no earlier label and no marker, stays inside the axes, and its leader line crosses no other marker or label.
    The first free candidate wins, else the least bad one. Labels beyond the first rings get a thin leader line in
    the method's colour, so a label set apart from a crowded cluster still points at its own marker.
    """
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    canvas.draw()  # runs the layout engine, so the axes sit where they will be drawn
    renderer = canvas.get_renderer()
    inside = ax.get_window_extent(renderer)
    to_px = fig.dpi / 72.0
    points = [tuple(ax.transData.transform((x, y))) for x, y, *_ in labels]
    markers = [Bbox.from_extents(px - 6, py - 6, px + 6, py + 6) for px, py in points]
    placed: list[Bbox] = []
    lines: list[tuple[tuple[float, float], tuple[float, float]]] = []
    for index, ((x, y, text, props, color), point) in enumerate(zip(labels, points, strict=True)):
        probe = ax.text(0, 0, text, fontsize=8, **props)
        extent = probe.get_window_extent(renderer)
        width, height = extent.width + 3, extent.height + 3
        probe.remove()
        best, best_cost = None, math.inf
        for radius in _LABEL_RADII:
            for angle in _LABEL_ANGLES:
                cos, sin = math.cos(math.radians(angle)), math.sin(math.radians(angle))
                ha = "left" if cos > 0.2 else "right" if cos < -0.2 else "center"
                va = "bottom" if sin > 0.2 else "top" if sin < -0.2 else "center"
                ax_px = point[0] + radius * cos * to_px
                ay_px = point[1] + radius * sin * to_px
                x0 = ax_px if ha == "left" else ax_px - width if ha == "right" else ax_px - width / 2
                y0 = ay_px if va == "bottom" else ay_px - height if va == "top" else ay_px - height / 2
                box = Bbox.from_bounds(x0, y0, width, height)
                cost = sum(_overlap(box, other) for other in placed)
                cost += sum(_overlap(box, m) for m in markers)
                cost += 4 * (width * height - _overlap(box, inside))
                if radius >= _LEADER_FROM:
                    segment = (point, _nearest_on_box(point, box))
                    cost += 150 * sum(_segment_hits(*segment, m) for j, m in enumerate(markers) if j != index)
                    cost += 150 * sum(_segment_hits(*segment, other) for other in placed)
                cost += 150 * sum(_segment_hits(a, b, box) for a, b in lines)
                cost = round(cost, 3)  # float noise in the areas must not hide a free spot
                if cost < best_cost:
                    best, best_cost = (radius, angle, ha, va, box), cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        radius, angle, ha, va, box = best
        offset = (radius * math.cos(math.radians(angle)), radius * math.sin(math.radians(angle)))
        arrow = ({"arrowstyle": "-", "color": color, "linewidth": 0.8, "shrinkA": 1, "shrinkB": 5, "alpha": 0.9}
                 if radius >= _LEADER_FROM else None)
        note = ax.annotate(text, (x, y), xytext=offset, textcoords="offset points", ha=ha, va=va, fontsize=8,
                           zorder=6, annotation_clip=False, arrowprops=arrow,
                           bbox={"boxstyle": "round,pad=0.1", "facecolor": "white", "edgecolor": "none", "alpha": 0.7},
                           **props)
        note.set_in_layout(False)
        placed.append(box)
        if arrow:
            lines.append((point, _nearest_on_box(point, box)))


_CLUSTER_PX = 30.0  # estimated pixels: points closer than this (chained) form a crowded cluster
_CLUSTER_MIN = 3  # label groups a cluster needs to get its own zoom panel


def _crowded_cluster(keys: list[tuple[float, float]], xlim: tuple[float, float], ylim: tuple[float, float],
                     size_px: tuple[float, float] = (640.0, 430.0)) -> list[tuple[float, float]]:
    """The largest group of points chained closer than `_CLUSTER_PX` on an axes of about `size_px`, if it has at
    least `_CLUSTER_MIN` distinct points (else [])."""
    scale_x = size_px[0] / (xlim[1] - xlim[0])
    scale_y = size_px[1] / (ylim[1] - ylim[0])
    parent = list(range(len(keys)))

    def root(i: int) -> int:
        while parent[i] != i:
            parent[i] = parent[parent[i]]
            i = parent[i]
        return i

    for i, (xi, yi) in enumerate(keys):
        for j in range(i):
            xj, yj = keys[j]
            if math.hypot((xi - xj) * scale_x, (yi - yj) * scale_y) < _CLUSTER_PX:
                parent[root(i)] = root(j)
    clusters: dict[int, list[tuple[float, float]]] = {}
    for i, key in enumerate(keys):
        clusters.setdefault(root(i), []).append(key)
    biggest = max(clusters.values(), key=len, default=[])
    return biggest if len(biggest) >= _CLUSTER_MIN else []


def _draw_points(ax, shown: pd.DataFrame, colors: dict[str, str], gid: str) -> None:
    for record in shown.to_dict("records"):
        model, x, y = record["model"], record["forget_error_mean"], record["test_error_mean"]
        style = {"retrain": dict(marker="*", s=320, edgecolors="white", linewidths=0.8, zorder=5),
                 "original": dict(marker="X", s=110, edgecolors="white", linewidths=0.6, zorder=4)}.get(
            model, dict(marker="o", s=55, edgecolors="white", linewidths=0.6, zorder=3, alpha=0.9))
        ax.scatter([x], [y], color=colors.get(model, "#444444"), label=method_label(model), gid=f"{gid}:{model}",
                   **style)
        xerr, yerr = record["forget_error_std"], record["test_error_std"]
        if _finite(xerr) or _finite(yerr):
            ax.errorbar([x], [y], xerr=[xerr] if _finite(xerr) else None, yerr=[yerr] if _finite(yerr) else None,
                        fmt="none", ecolor=colors.get(model, "#444444"), elinewidth=1.0, capsize=3, alpha=0.7,
                        zorder=2)


def _reference_lines(ax, retrain: tuple[float, float] | None, budget: float | None) -> list:
    if retrain is not None:
        ax.axvline(retrain[0], color=_RETRAIN_COLOR, linestyle=":", linewidth=0.9, alpha=0.6, zorder=1)
        ax.axhline(retrain[1], color=_RETRAIN_COLOR, linestyle=":", linewidth=0.9, alpha=0.6, zorder=1)
    if budget is None:
        return []
    return [ax.axhline(budget, color=_FAILED_COLOR, linestyle="--", linewidth=1.0, alpha=0.7, zorder=1,
                       label=f"Original's test error + {RB_TEST_ERROR_BUDGET:g} points (RB budget)")]


def forget_vs_test_figure(table: pd.DataFrame, scenario: str) -> Figure:
    """The SCRUB paper's Figure 1 view of one scenario: forget error (%, x) against test error (%, y).

    One point per method that succeeded on at least one seed (mean over its successful seeds, error bars = std over
    seeds when several), each labelled; methods on the same point share one label. Retrain is the large black star
    (with dotted lines through it: the target), Original the grey cross. For RB scenarios a dashed line marks the
    Original's test error + 5 points (DESIGN §5's budget). In the main axes (`fig.axes[0]`) each point is a
    one-point `PathCollection` with gid "point:<model>". When several points crowd together, a second axes zooms on
    them (its points have gid "zoom:<model>" and carry the labels of that cluster; a dashed box marks the zoomed
    area in the main axes).
    """
    rows = _scenario_rows(table, scenario)
    application = _application(rows, scenario)
    summary = _summarise(rows, ("forget_error", "test_error"))
    colors = _method_colors(list(summary["model"]))
    shown = summary[summary["forget_error_mean"].notna() & summary["test_error_mean"].notna()]
    groups: dict[tuple[float, float], list[tuple[str, str]]] = {}
    for record in shown.to_dict("records"):
        name = method_label(record["model"]) + ("*" if record["failed_seeds"] else "")
        key = (round(record["forget_error_mean"], 2), round(record["test_error_mean"], 2))
        groups.setdefault(key, []).append((record["model"], name))
    retrain_rows = shown[shown["model"] == "retrain"]
    retrain = ((float(retrain_rows["forget_error_mean"].iloc[0]), float(retrain_rows["test_error_mean"].iloc[0]))
               if len(retrain_rows) else None)
    original = shown[shown["model"] == "original"]
    budget = (float(original["test_error_mean"].iloc[0]) + RB_TEST_ERROR_BUDGET
              if application.startswith("rb") and len(original) else None)
    reach = [y + (s if _finite(s) else 0.0)
             for y, s in zip(shown["test_error_mean"], shown["test_error_std"], strict=True)]
    top = max(reach + ([budget] if budget is not None else []) + [1.0])
    xlim, ylim = (-5.0, 105.0), (0.0, top * 1.12 + 0.5)
    crowded = _crowded_cluster(list(groups), xlim, ylim)

    if crowded:
        fig = Figure(figsize=(12.5, 5.6), layout="constrained")
        ax, zoom = fig.subplots(1, 2, width_ratios=[1.45, 1])
    else:
        fig = Figure(figsize=(7.5, 5.6), layout="constrained")
        ax, zoom = fig.add_subplot(), None
    _draw_points(ax, shown, colors, "point")
    handles = _reference_lines(ax, retrain, budget)
    ax.set_xlim(*xlim)
    ax.set_ylim(*ylim)
    for axes in (ax, zoom):
        if axes is not None:
            axes.set_xlabel("forget error (%)  →  more forgotten")
            axes.set_ylabel("test error (%)  →  worse utility")
            axes.grid(True, linewidth=0.5, alpha=0.4)
    ax.set_title(f"{scenario}: forget vs test error ({_seed_note(rows)})", fontsize=11)
    if zoom is not None:
        xs, ys = [k[0] for k in crowded], [k[1] for k in crowded]
        pad_x = max(0.12 * (max(xs) - min(xs)), 1.5)
        pad_y = max(0.15 * (max(ys) - min(ys)), 0.2)
        zx = (min(xs) - pad_x, max(xs) + pad_x)
        zy = (max(min(ys) - pad_y, 0.0 if min(ys) >= 0 else min(ys) - pad_y), max(ys) + pad_y)
        members = {model for key in crowded for model, _ in groups[key]}
        _draw_points(zoom, shown[shown["model"].isin(members)], colors, "zoom")
        _reference_lines(zoom, retrain, budget)
        zoom.set_xlim(*zx)
        zoom.set_ylim(*zy)
        zoom.set_title("zoom on the dashed box", fontsize=10)
        ax.add_patch(Rectangle((zx[0], zy[0]), zx[1] - zx[0], zy[1] - zy[0], fill=False, linestyle="--",
                               linewidth=0.9, edgecolor="#555555", zorder=2))
    if shown.empty:
        ax.text(0.5, 0.5, "no successful method", transform=ax.transAxes, ha="center", va="center",
                color=_FAILED_COLOR)
    failed = summary[summary["failed"]]["model"].map(method_label).tolist()
    notes = []
    if failed:
        notes.append("failed (not shown): " + ", ".join(failed))
    if (~summary["failed"] & (summary["failed_seeds"] > 0)).any():
        notes.append("* some seeds failed: mean over the others")
    if notes:
        ax.text(0.01, 0.99, "\n".join(notes), transform=ax.transAxes, ha="left", va="top", fontsize=8,
                color=_FAILED_COLOR)
    if handles:
        fig.legend(handles=handles, loc="outside lower center", fontsize=8, frameon=False)

    def label(key: tuple[float, float]) -> tuple[float, float, str, dict, str]:
        members = groups[key]
        special = [model for model, _ in members if model in ("retrain", "original")]
        color = colors.get(special[0] if special else members[0][0], "#444444")
        return (key[0], key[1], ", ".join(name for _, name in members),
                {"fontweight": "bold" if special else "normal"}, color)

    def bold_first(labels: list) -> list:  # Retrain's and Original's labels get the nearest free spots
        return sorted(labels, key=lambda item: item[3]["fontweight"] != "bold")

    _place_labels(fig, ax, bold_first([label(key) for key in groups if key not in crowded]))
    if zoom is not None:
        _place_labels(fig, zoom, bold_first([label(key) for key in crowded]))
    return fig


def metric_bars_figure(table: pd.DataFrame, scenario: str, metrics: Sequence[str]) -> Figure:
    """One bar chart per metric (side by side): a bar per method (mean over its successful seeds, error bar = std),
    Retrain's value as a dashed horizontal line (gid "retrain_ref"), methods that failed on every seed left as a
    gap marked "failed" ("n/a" where the method ran but has no value). Bars carry gid "bar:<model>"."""
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metric_bars_figure needs at least one metric")
    rows = _scenario_rows(table, scenario)
    summary = _summarise(rows, metrics)
    models = list(summary["model"])
    colors = _method_colors(models)
    fig = Figure(figsize=(max(4.8, 4.4 * len(metrics)), 4.4), layout="constrained")
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    positions = np.arange(len(models))
    for ax, metric in zip(axes, metrics, strict=True):
        means = summary[f"{metric}_mean"].to_numpy(dtype=float)
        stds = summary[f"{metric}_std"].to_numpy(dtype=float)
        have = np.isfinite(means)
        if have.any():
            err = np.where(np.isfinite(stds[have]), stds[have], 0.0)
            bars = ax.bar(positions[have], means[have], yerr=err if np.isfinite(stds[have]).any() else None,
                          color=[colors.get(m, "#444444") for m in np.asarray(models)[have]], width=0.7,
                          capsize=2, error_kw={"elinewidth": 0.8}, zorder=2)
            for bar, model in zip(bars, np.asarray(models)[have], strict=True):
                bar.set_gid(f"bar:{model}")
            ax.bar_label(bars, fmt="%.2f" if metric.startswith("ulira") else "%.1f", fontsize=7, padding=2,
                         rotation=90, bbox={"facecolor": "white", "edgecolor": "none", "pad": 0.6, "alpha": 0.8})
        top = float(np.nanmax(means + np.nan_to_num(stds))) if have.any() else 1.0
        ax.set_ylim(0, max(top, 1e-9) * 1.28 if top > 0 else 1.0)
        for position, failed, value in zip(positions, summary["failed"], means, strict=True):
            if not np.isfinite(value):
                ax.text(position, ax.get_ylim()[1] * 0.02, "failed" if failed else "n/a", rotation=90, ha="center",
                        va="bottom", fontsize=8, color=_FAILED_COLOR if failed else _ORIGINAL_COLOR, zorder=3)
        retrain = summary.index[summary["model"] == "retrain"]
        if len(retrain) and np.isfinite(means[retrain[0]]):
            value = float(means[retrain[0]])
            ax.axhline(value, color=_RETRAIN_COLOR, linestyle="--", linewidth=1.1, zorder=3, gid="retrain_ref",
                       label=f"Retrain ({value:.2f})")
            ax.legend(loc="upper left", fontsize=7, frameon=False)
        ax.set_xticks(positions, [method_label(m) for m in models], rotation=45, ha="right",
                      rotation_mode="anchor", fontsize=8)
        ax.set_xlim(-0.6, len(models) - 0.4)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_title(metric, fontsize=10)
        ax.grid(True, axis="y", linewidth=0.5, alpha=0.4, zorder=0)
        if not have.any():
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color=_ORIGINAL_COLOR)
    fig.suptitle(f"{scenario}: {', '.join(metrics)} ({_seed_note(rows)})", fontsize=11)
    return fig


def roc_figure(scores: Mapping[str, pd.DataFrame], title: str | None = None) -> Figure:
    """U-LiRA ROC curves, one line per method (sklearn's `roc_curve` on its `member` / `score` rows, NaN scores
    dropped; legend: AUC), plus the chance diagonal, on one axes. Methods without both members and non-members are
    left out (and named in a note)."""
    fig = Figure(figsize=(7.8, 5.2), layout="constrained")
    ax = fig.add_subplot()
    colors = _method_colors(list(scores))
    skipped = []
    for model in _ordered_models(scores):
        frame = scores[model]
        if frame is None or not {"member", "score"} <= set(frame.columns):
            skipped.append(method_label(model))
            continue
        score = pd.to_numeric(frame["score"], errors="coerce").to_numpy(dtype=float)
        member = frame["member"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0")).to_numpy(dtype=bool)
        keep = np.isfinite(score)
        if not (member[keep].any() and (~member[keep]).any()):
            skipped.append(method_label(model))
            continue
        fpr, tpr, _ = roc_curve(member[keep], score[keep])
        auc = roc_auc_score(member[keep], score[keep])
        special = model in ("retrain", "original")
        ax.plot(fpr, tpr, color=colors.get(model, "#444444"), linewidth=2.2 if model == "retrain" else 1.4,
                linestyle="-" if model != "original" else "-.", zorder=3 if special else 2,
                label=f"{method_label(model)}  (AUC {auc:.3f})", gid=f"roc:{model}")
    ax.plot([0, 1], [0, 1], linestyle="--", color="#999999", linewidth=1.0, label="chance (AUC 0.5)", gid="chance")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.grid(True, linewidth=0.5, alpha=0.4)
    ax.set_title(title or "U-LiRA ROC (leave-one-shadow-out scores)", fontsize=11)
    ax.legend(loc="upper left", bbox_to_anchor=(1.03, 1.0), fontsize=8,
              frameon=False, borderaxespad=0)
    if skipped:
        ax.text(0.98, 0.02, "no scores: " + ", ".join(skipped), transform=ax.transAxes, ha="right", va="bottom",
                fontsize=8, color=_ORIGINAL_COLOR)
    return fig


def load_ulira_scores(directory: str | Path) -> dict[str, pd.DataFrame]:
    """The per-example U-LiRA scores of one scenario and seed: {model: frame} from `<model>_ulira_scores.csv` in
    `directory` (e.g. data/07_model_output/up/seed_1), models in display order; empty files are left out."""
    found = {}
    for path in sorted(Path(directory).glob("*_ulira_scores.csv")):
        try:
            frame = pd.read_csv(path)
        except pd.errors.EmptyDataError:
            continue
        if len(frame):
            found[path.name[: -len("_ulira_scores.csv")]] = frame
    return {model: found[model] for model in _ordered_models(found)}


# --- HTML --------------------------------------------------------------------------------------------------------

def _figure_img(fig: Figure, alt: str, dpi: int = 110) -> str:
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=dpi, metadata={"Software": None}, facecolor="white")
    data = base64.b64encode(buffer.getvalue()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{_html.escape(alt)}">'


def _format_cell(value, column: str) -> tuple[str, str]:
    """(escaped text, css class) of one table cell: floats to 2 decimals, NaN/None as "n/a" (blank for a missing
    failure reason)."""
    if column == "failure" and (value is None or (isinstance(value, float) and math.isnan(value))):
        return "", "text wrap"
    if value is None or (isinstance(value, float) and math.isnan(value)) or value is pd.NA or value is pd.NaT:
        return "n/a", "na"
    if isinstance(value, (bool, np.bool_)):
        return ("yes" if value else "no"), "text"
    if isinstance(value, (int, np.integer)):
        return _html.escape(str(int(value))), "num"
    if isinstance(value, (float, np.floating)):
        if math.isinf(value):
            return ("∞" if value > 0 else "−∞"), "num"
        if column in _INTEGER_COLUMNS and float(value).is_integer():
            return str(int(value)), "num"
        return f"{value:.2f}", "num"
    text = str(value)
    if column == "failure":
        return _html.escape(text), "text wrap"
    return _html.escape(text), "text"


def _html_table(frame: pd.DataFrame, row_classes: Sequence[str] | None = None) -> str:
    # headers may break after an underscore (<wbr>), so long metric names do not widen their columns
    head = "".join(f"<th>{_html.escape(str(c)).replace('_', '_<wbr>')}</th>" for c in frame.columns)
    body = []
    for i, record in enumerate(frame.itertuples(index=False, name=None)):
        cells = []
        for column, value in zip(frame.columns, record, strict=True):
            text, css = _format_cell(value, str(column))
            cells.append(f'<td class="{css}">{text}</td>')
        css = f' class="{row_classes[i]}"' if row_classes and row_classes[i] else ""
        body.append(f"<tr{css}>{''.join(cells)}</tr>")
    return (f'<div class="table-wrap"><table><thead><tr>{head}</tr></thead><tbody>{"".join(body)}</tbody></table>'
            "</div>")


def _row_classes(frame: pd.DataFrame) -> list[str]:
    classes = []
    ok = _ok_mask(frame)
    models = frame["model"].astype(str) if "model" in frame.columns else [""] * len(frame)
    for model, good in zip(models, ok, strict=True):
        classes.append("failed" if not good else "retrain" if model == "retrain" else
                       "original" if model == "original" else "")
    return classes


def _sorted_like_display(rows: pd.DataFrame) -> pd.DataFrame:
    order = {m: i for i, m in enumerate(_ordered_models(rows["model"]))}
    keys = ["_order"] + (["seed"] if "seed" in rows.columns else [])
    return (rows.assign(_order=rows["model"].astype(str).map(order)).sort_values(keys, kind="stable")
            .drop(columns="_order"))


def _scenario_table(rows: pd.DataFrame) -> tuple[pd.DataFrame, list[str]]:
    """The scenario's rows for display (methods in display order; key and metric columns first, empty columns
    dropped, `failure` last) and each row's css class."""
    rows = _sorted_like_display(rows)
    classes = _row_classes(rows)
    rows["model"] = rows["model"].map(method_label)
    keep = [c for c in rows.columns if c not in _REDUNDANT_IN_SECTION and c != "failure"
            and (c in ("model", "seed", "status") or rows[c].notna().any())]
    if "guard_epoch" in keep and not rows["guard_epoch"].notna().any():
        keep.remove("guard_epoch")
    first = [c for c in _LEADING_COLUMNS if c in keep]
    columns = first + [c for c in keep if c not in first]
    if "failure" in rows.columns and rows["failure"].astype(object).fillna("").astype(str).str.strip().ne("").any():
        columns.append("failure")
    return rows[columns], classes


def _ranking(rows: pd.DataFrame, application: str) -> str:
    """DESIGN §5's "which is better" for the scenario's application, as a ranked table (HTML), or a note."""
    summary = _summarise(rows, ("forget_error", "test_error", "ic_error_test", "mia_basic", "ulira_auc"))
    summary = summary[~summary["failed"]]
    candidates = summary[summary["model"] != "retrain"].copy()
    if candidates.empty:
        return ""
    if application in ("rb_class", "rb_selective"):
        original = summary[summary["model"] == "original"]
        if original.empty or not _finite(original["test_error_mean"].iloc[0]):
            return "<p class=\"note\">No Original in this scenario: the RB test-error budget cannot be applied.</p>"
        base = float(original["test_error_mean"].iloc[0])
        candidates["test_error_loss"] = candidates["test_error_mean"] - base
        candidates["within_budget"] = candidates["test_error_loss"] <= RB_TEST_ERROR_BUDGET
        candidates = candidates.sort_values(["within_budget", "forget_error_mean", "test_error_mean"],
                                            ascending=[False, False, True], kind="stable")
        shown = candidates[["model", "forget_error_mean", "test_error_mean", "test_error_loss", "within_budget"]]
        shown.columns = ["method", "forget_error", "test_error", "test_error_loss_vs_original", "within_5_points"]
        rule = ("Ranked by forget error (higher first) among methods whose test error is at most "
                f"{RB_TEST_ERROR_BUDGET:g} points above the Original's ({base:.2f}); ties by lower test error; "
                "methods over the budget follow.")
    elif application == "rc":
        if not candidates["ic_error_test_mean"].notna().any():
            return ""
        candidates = candidates.sort_values(["ic_error_test_mean", "test_error_mean"], kind="stable",
                                            na_position="last")
        shown = candidates[["model", "ic_error_test_mean", "forget_error_mean", "test_error_mean"]]
        shown.columns = ["method", "ic_error_test", "forget_error", "test_error"]
        rule = "Ranked by interclass confusion on the test set (lower first); ties by lower test error."
    elif application == "up":
        retrain = summary[summary["model"] == "retrain"]
        if retrain.empty:
            return "<p class=\"note\">No Retrain in this scenario: gaps to Retrain cannot be computed.</p>"
        gap_columns = []
        for metric in ("forget_error", "mia_basic", "ulira_auc"):
            target = retrain[f"{metric}_mean"].iloc[0]
            if _finite(target) and candidates[f"{metric}_mean"].notna().any():
                candidates[f"|{metric}_gap|"] = (candidates[f"{metric}_mean"] - float(target)).abs()
                gap_columns.append(f"|{metric}_gap|")
        if not gap_columns:
            return ""
        candidates["mean_rank"] = candidates[gap_columns].rank(method="average").mean(axis=1)
        candidates = candidates.sort_values(["mean_rank"] + gap_columns, kind="stable")
        shown = candidates[["model", *gap_columns, "mean_rank"]].rename(columns={"model": "method"})
        rule = ("Ranked by the mean of each method's rank on the |gaps| to Retrain (smaller first; "
                "the metrics have different units, so their ranks are averaged, not their values).")
    else:
        return ""
    shown = shown.assign(method=shown["method"].map(method_label))
    return f'<p class="note">{_html.escape(rule)}</p>{_html_table(shown.reset_index(drop=True))}'


def _run_summary(table: pd.DataFrame) -> str:
    ok = _ok_mask(table)
    scenarios = []
    for scenario in pd.unique(table["scenario"].astype(str)):
        rows = table[table["scenario"].astype(str) == scenario]
        application = _application(rows, scenario)
        scenarios.append(_html.escape(scenario) + (f" ({_html.escape(application)})" if application != scenario
                                                   else ""))
    models = _ordered_models(table["model"]) if "model" in table.columns else []
    seeds = sorted(pd.unique(table["seed"]).tolist()) if "seed" in table.columns else []
    items = [
        f"<li><b>Scenarios:</b> {', '.join(scenarios)}</li>",
        f"<li><b>Methods:</b> {_html.escape(', '.join(method_label(m) for m in models))}</li>",
        f"<li><b>Seeds:</b> {_html.escape(', '.join(str(s) for s in seeds)) or 'n/a'}</li>",
        f"<li><b>Rows:</b> {len(table)} ({int(ok.sum())} ok, {int((~ok).sum())} failed)</li>",
    ]
    parts = [f'<ul class="summary">{"".join(items)}</ul>']
    failed = table[~ok]
    parts.append("<h3>Failed rows</h3>")
    if failed.empty:
        parts.append('<p class="note">None.</p>')
    else:
        columns = [c for c in ("scenario", "model", "seed", "failure") if c in failed.columns]
        shown = failed[columns].copy()
        shown["model"] = shown["model"].map(method_label)
        parts.append(_html_table(shown.reset_index(drop=True), ["failed"] * len(shown)))
    parts.append("<h3>Guard firings</h3>")
    fired = (table["guard_fired"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0"))
             if "guard_fired" in table.columns else pd.Series(False, index=table.index))
    if not fired.any():
        parts.append('<p class="note">None: the utility guard did not fire'
                     + ("." if "guard_fired" in table.columns else " (no guard column in this table).") + "</p>")
    else:
        columns = [c for c in ("scenario", "model", "seed", "guard_epoch") if c in table.columns]
        shown = table.loc[fired, columns].copy()
        shown["model"] = shown["model"].map(method_label)
        parts.append(_html_table(shown.reset_index(drop=True)))
    return "".join(parts)


_CSS = """
:root { color-scheme: light; }
* { box-sizing: border-box; }
body { margin: 0; background: #f4f5f7; color: #1d2330; font: 14px/1.45 -apple-system, "Segoe UI", Roboto,
  "Helvetica Neue", Arial, sans-serif; }
main { max-width: 1240px; margin: 0 auto; padding: 24px 28px 48px; }
h1 { font-size: 26px; margin: 0 0 4px; }
h2 { font-size: 20px; margin: 0 0 10px; padding-bottom: 6px; border-bottom: 2px solid #e3e6eb; }
h3 { font-size: 15px; margin: 18px 0 8px; color: #3a4354; }
section { background: #fff; border: 1px solid #e3e6eb; border-radius: 8px; padding: 18px 22px; margin: 18px 0; }
nav a { margin-right: 12px; color: #2457a6; text-decoration: none; }
.subtitle, .note { color: #5b6475; }
.note { font-size: 13px; margin: 6px 0; }
.criterion { display: inline-block; background: #eef3fb; color: #24406b; border-radius: 4px; padding: 2px 8px;
  font-size: 13px; }
ul.summary { padding-left: 18px; margin: 6px 0; }
figure { margin: 12px 0; }
figure img { display: block; max-width: 100%; height: auto; border: 1px solid #eceef2; border-radius: 4px; }
figcaption { font-size: 12px; color: #5b6475; margin-top: 4px; }
.table-wrap { overflow-x: auto; margin: 6px 0 10px; }
table { border-collapse: collapse; font-size: 12px; white-space: nowrap; }
th, td { padding: 4px 7px; border-bottom: 1px solid #e8eaee; }
th { background: #f0f2f5; text-align: left; vertical-align: bottom; white-space: normal; min-width: 44px;
  font-weight: 600; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
td.na { color: #9aa1ad; text-align: right; font-style: italic; }
td.text { white-space: nowrap; }
td.wrap { white-space: normal; min-width: 240px; max-width: 520px; overflow-wrap: anywhere; }
tr.failed td { background: #fdecee; }
tr.retrain td { background: #e9f6ec; font-weight: 600; }
tr.original td { background: #f3f4f6; }
tbody tr:hover td { background: #fff8db; }
"""


def html_report(table: pd.DataFrame, title: str,
                scores_by_scenario: dict[str, dict[str, pd.DataFrame]] | None = None,
                extra_sections: list[tuple[str, str]] | None = None) -> str:
    """A self-contained HTML page for a run-wide table.

    Contents: the title; a run summary (scenarios, methods, seeds, failed rows with their reasons, guard firings);
    then per scenario the "which is better" criterion and ranking (DESIGN §5), the Figure-1 view (forget vs test
    error), bars of the application's metrics (`APPLICATION_METRICS`, those present), the U-LiRA ROC when
    `scores_by_scenario[scenario]` holds per-example scores ({model: frame with member, score}), and the scenario's
    rows as a table. `extra_sections` are (heading, html) blocks added at the end: the heading is escaped, the html
    is inserted as given (the caller builds it). Every other text from the table is HTML-escaped; floats show with
    2 decimals and NaN as "n/a". Figures are embedded base64 PNGs and the CSS is inline, so the page needs no
    network.
    """
    if "scenario" not in table.columns or "model" not in table.columns:
        raise KeyError("html_report needs a table with 'scenario' and 'model' columns")
    scores_by_scenario = scores_by_scenario or {}
    parts = [f"<h1>{_html.escape(title)}</h1>",
             f'<p class="subtitle">{len(table)} rows · figures and tables below, one section per scenario.</p>']
    scenarios = list(pd.unique(table["scenario"].astype(str)))
    links = ['<a href="#summary">Run summary</a>'] + [
        f'<a href="#scenario-{i}">{_html.escape(s)}</a>' for i, s in enumerate(scenarios)]
    links += [f'<a href="#extra-{i}">{_html.escape(str(h))}</a>' for i, (h, _) in enumerate(extra_sections or [])]
    parts.append(f"<nav>{''.join(links)}</nav>")
    parts.append(f'<section id="summary"><h2>Run summary</h2>{_run_summary(table)}</section>')
    for index, scenario in enumerate(scenarios):
        rows = _scenario_rows(table, scenario)
        application = _application(rows, scenario)
        block = [f'<section id="scenario-{index}"><h2>{_html.escape(scenario)}'
                 + (f' <span class="subtitle">· {_html.escape(application)}</span>' if application != scenario
                    else "") + "</h2>"]
        if application in WHICH_IS_BETTER:
            block.append(f'<p><span class="criterion">Better = {_html.escape(WHICH_IS_BETTER[application])}'
                         "</span></p>")
        if _has_values(rows, "forget_error") and _has_values(rows, "test_error"):
            fig = forget_vs_test_figure(table, scenario)
            block.append(f"<figure>{_figure_img(fig, f'{scenario}: forget vs test error')}<figcaption>The SCRUB "
                         "paper's Figure 1 view: forget error (x) against test error (y). Retrain (black star) is "
                         "the target; Original (grey cross) is the model before unlearning.</figcaption></figure>")
        metrics = [m for m in APPLICATION_METRICS.get(application, DEFAULT_METRICS) if _has_values(rows, m)]
        if metrics:
            fig = metric_bars_figure(table, scenario, metrics)
            block.append(f"<figure>{_figure_img(fig, f'{scenario}: ' + ', '.join(metrics))}<figcaption>Dashed line: "
                         "Retrain's value. A gap marked \"failed\" is a method that failed on every seed."
                         "</figcaption></figure>")
        scores = scores_by_scenario.get(scenario)
        if scores:
            fig = roc_figure(scores, title=f"{scenario}: U-LiRA ROC")
            block.append(f"<figure>{_figure_img(fig, f'{scenario}: U-LiRA ROC')}<figcaption>Leave-one-shadow-out "
                         "scores of every shadow, pooled (as ulira_auc). An ideal unlearning method follows the "
                         "diagonal, as Retrain should.</figcaption></figure>")
        ranking = _ranking(rows, application)
        if ranking:
            block.append(f"<h3>Which is better</h3>{ranking}")
        shown, classes = _scenario_table(rows)
        block.append(f"<h3>Table</h3>{_html_table(shown, classes)}")
        block.append("</section>")
        parts.append("".join(block))
    for index, (heading, body) in enumerate(extra_sections or []):
        parts.append(f'<section id="extra-{index}"><h2>{_html.escape(str(heading))}</h2>{body}</section>')
    return ("<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
            f"<title>{_html.escape(title)}</title><style>{_CSS}</style></head>"
            f"<body><main>{''.join(parts)}</main></body></html>\n")


def write_report(html: str, path: str | Path) -> Path:
    """Write the HTML page to `path` (UTF-8; parent folders created) and return the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(html, encoding="utf-8")
    return path
