"""The paper's views of a run table as matplotlib figures, and the U-LiRA ROC.

- `forget_vs_test_figure`: the SCRUB paper's Figure 1 view, forget error (x) against test error (y), one point per
  method (mean over the seeds that succeeded, error bars = std), Retrain highlighted, Original marked, the utility
  budget as a dashed line.
- `metric_bars_figure`: one bar chart per metric, Retrain's value as a horizontal reference line, failed methods
  shown as a gap marked "failed".
- `roc_figure`: U-LiRA ROC curves from per-example scores (frames with `member`, `score`), the one ROC plotter of
  the project (the pipelines draw their per-method ROC with it too); `load_ulira_scores` reads a seed folder's
  `<model>_ulira_scores.csv`. `roc_points_figure` draws an ROC given as its points (fpr, tpr) on `roc_figure`'s axes.
- `p_value_figure`: two samples of p-values as ECDFs on [0, 1] (and zoomed near the level alpha), alpha marked.

Figures are built on `matplotlib.figure.Figure` directly (no pyplot global state).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle
from sklearn.metrics import roc_auc_score, roc_curve

from .labels import crowded_cluster, place_labels
from .ranking import UTILITY_BUDGET
from .tables import (
    FAILED_COLOR,
    METRIC_LABELS,
    ORIGINAL_COLOR,
    RETRAIN_COLOR,
    finite,
    method_colors,
    method_label,
    ordered_models,
    scenario_rows,
    seed_note,
    summarise,
)

__all__ = ["forget_vs_test_figure", "load_ulira_scores", "metric_bars_figure", "p_value_figure", "roc_figure",
           "roc_points_figure"]


def _draw_points(ax, shown: pd.DataFrame, colors: dict[str, str], gid: str) -> None:
    for record in shown.to_dict("records"):
        model, x, y = record["model"], record["forget_error_mean"], record["test_error_mean"]
        style = {"retrain": dict(marker="*", s=320, edgecolors="white", linewidths=0.8, zorder=5),
                 "original": dict(marker="X", s=110, edgecolors="white", linewidths=0.6, zorder=4)}.get(
            model, dict(marker="o", s=55, edgecolors="white", linewidths=0.6, zorder=3, alpha=0.9))
        ax.scatter([x], [y], color=colors.get(model, "#444444"), label=method_label(model), gid=f"{gid}:{model}",
                   **style)
        xerr, yerr = record["forget_error_std"], record["test_error_std"]
        if finite(xerr) or finite(yerr):
            ax.errorbar([x], [y], xerr=[xerr] if finite(xerr) else None, yerr=[yerr] if finite(yerr) else None,
                        fmt="none", ecolor=colors.get(model, "#444444"), elinewidth=1.0, capsize=3, alpha=0.7,
                        zorder=2)


def _reference_lines(ax, retrain: tuple[float, float] | None, budget: float | None) -> list:
    if retrain is not None:
        ax.axvline(retrain[0], color=RETRAIN_COLOR, linestyle=":", linewidth=0.9, alpha=0.6, zorder=1)
        ax.axhline(retrain[1], color=RETRAIN_COLOR, linestyle=":", linewidth=0.9, alpha=0.6, zorder=1)
    if budget is None:
        return []
    return [ax.axhline(budget, color=FAILED_COLOR, linestyle="--", linewidth=1.0, alpha=0.7, zorder=1,
                       label=f"Original's test error + {UTILITY_BUDGET:g} points (utility budget)")]


def forget_vs_test_figure(table: pd.DataFrame, scenario: str) -> Figure:
    """The SCRUB paper's Figure 1 view of one scenario: forget error (%, x) against test error (%, y).

    One point per method that succeeded on at least one seed (mean over its successful seeds, error bars = std over
    seeds when several), each labelled; methods on the same point share one label. Retrain is the large black star
    (with dotted lines through it: the target), Original the grey cross. A dashed line marks the Original's test
    error + `UTILITY_BUDGET` points (the utility budget of every application's ranking). In the main axes
    (`fig.axes[0]`) each point is a one-point `PathCollection` with gid "point:<model>". When several points crowd
    together, a second axes zooms on them (its points have gid "zoom:<model>" and carry the labels of that cluster;
    a dashed box marks the zoomed area in the main axes).
    """
    rows = scenario_rows(table, scenario)
    summary = summarise(rows, ("forget_error", "test_error"))
    colors = method_colors(list(summary["model"]))
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
    budget = float(original["test_error_mean"].iloc[0]) + UTILITY_BUDGET if len(original) else None
    reach = [y + (s if finite(s) else 0.0)
             for y, s in zip(shown["test_error_mean"], shown["test_error_std"], strict=True)]
    top = max(reach + ([budget] if budget is not None else []) + [1.0])
    xlim, ylim = (-5.0, 105.0), (0.0, top * 1.12 + 0.5)
    crowded = crowded_cluster(list(groups), xlim, ylim)

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
    ax.set_title(f"{scenario}: forget vs test error ({seed_note(rows)})", fontsize=11)
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
                color=FAILED_COLOR)
    failed = summary[summary["failed"]]["model"].map(method_label).tolist()
    notes = []
    if failed:
        notes.append("failed (not shown): " + ", ".join(failed))
    if (~summary["failed"] & (summary["failed_seeds"] > 0)).any():
        notes.append("* some seeds failed: mean over the others")
    if notes:
        ax.text(0.01, 0.99, "\n".join(notes), transform=ax.transAxes, ha="left", va="top", fontsize=8,
                color=FAILED_COLOR)
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

    place_labels(fig, ax, bold_first([label(key) for key in groups if key not in crowded]))
    if zoom is not None:
        place_labels(fig, zoom, bold_first([label(key) for key in crowded]))
    return fig


def metric_bars_figure(table: pd.DataFrame, scenario: str, metrics: Sequence[str]) -> Figure:
    """One bar chart per metric (side by side): a bar per method (mean over its successful seeds, error bar = std),
    Retrain's value as a dashed horizontal line (gid "retrain_ref"), methods that failed on every seed left as a
    gap marked "failed" ("n/a" where the method ran but has no value). Bars carry gid "bar:<model>"."""
    metrics = list(metrics)
    if not metrics:
        raise ValueError("metric_bars_figure needs at least one metric")
    rows = scenario_rows(table, scenario)
    summary = summarise(rows, metrics)
    models = list(summary["model"])
    colors = method_colors(models)
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
                        va="bottom", fontsize=8, color=FAILED_COLOR if failed else ORIGINAL_COLOR, zorder=3)
        retrain = summary.index[summary["model"] == "retrain"]
        if len(retrain) and np.isfinite(means[retrain[0]]):
            value = float(means[retrain[0]])
            ax.axhline(value, color=RETRAIN_COLOR, linestyle="--", linewidth=1.1, zorder=3, gid="retrain_ref",
                       label=f"Retrain ({value:.2f})")
            ax.legend(loc="upper left", fontsize=7, frameon=False)
        ax.set_xticks(positions, [method_label(m) for m in models], rotation=45, ha="right",
                      rotation_mode="anchor", fontsize=8)
        ax.set_xlim(-0.6, len(models) - 0.4)
        ax.set_ylabel(METRIC_LABELS.get(metric, metric))
        ax.set_title(metric, fontsize=10)
        ax.grid(True, axis="y", linewidth=0.5, alpha=0.4, zorder=0)
        if not have.any():
            ax.text(0.5, 0.5, "no data", transform=ax.transAxes, ha="center", va="center", color=ORIGINAL_COLOR)
    fig.suptitle(f"{scenario}: {', '.join(metrics)} ({seed_note(rows)})", fontsize=11)
    return fig


def roc_figure(scores: Mapping[str, pd.DataFrame], title: str | None = None) -> Figure:
    """U-LiRA ROC curves of per-example scores, one line per method, plus the chance diagonal, on one axes.

    `scores` maps a model name to its score frame (columns `member`: bool or "true"/"1", `score`: higher = more
    likely a member; e.g. `UliraResult.scores` or a `<model>_ulira_scores.csv`). Each line is sklearn's `roc_curve`
    on the rows with a finite score (gid "roc:<model>", legend: display name and AUC). Methods without both members
    and non-members are left out and named in a note. An empty mapping (the attack failed, or did not run) gives the
    titled axes with the diagonal and a "no U-LiRA scores" note, so a failed attack still has a figure to save.
    """
    fig = Figure(figsize=(7.8, 5.2), layout="constrained")
    ax = fig.add_subplot()
    colors = method_colors(list(scores))
    skipped = []
    for model in ordered_models(scores):
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
    if not scores:
        ax.text(0.5, 0.62, "no U-LiRA scores", transform=ax.transAxes, ha="center", va="center", fontsize=10,
                color=FAILED_COLOR, gid="no_scores")
    if skipped:
        ax.text(0.98, 0.02, "no scores: " + ", ".join(skipped), transform=ax.transAxes, ha="right", va="bottom",
                fontsize=8, color=ORIGINAL_COLOR)
    return fig


def _finite_array(values) -> np.ndarray:
    """`values` as a flat float array (None → NaN); anything that is not numbers gives an empty array."""
    try:
        array = np.asarray(values if values is not None else [], dtype=float).ravel()
    except (TypeError, ValueError):
        return np.empty(0)
    return array


def roc_points_figure(fpr: Sequence[float] | None, tpr: Sequence[float] | None, label: str,
                      title: str | None = None) -> Figure:
    """An ROC given as its points rather than per-example scores (e.g. a summary's `fpr`/`tpr` lists): `roc_figure`'s
    axes (chance diagonal, limits, labels, legend to the right) with one line, gid "roc:points", labelled `label`.

    Pairs where either rate is missing or not finite are dropped, the rest drawn in order of fpr. No pair left (or
    lists of unequal length) gives `roc_figure`'s "no U-LiRA scores" figure.
    """
    fig = roc_figure({}, title=title)
    fpr_array, tpr_array = _finite_array(fpr), _finite_array(tpr)
    if len(fpr_array) != len(tpr_array):
        return fig
    keep = np.isfinite(fpr_array) & np.isfinite(tpr_array)
    if not keep.any():
        return fig
    ax = fig.axes[0]
    for text in list(ax.texts):
        if text.get_gid() == "no_scores":
            text.remove()
    x, y = fpr_array[keep], tpr_array[keep]
    order = np.lexsort((y, x))
    ax.plot(x[order], y[order], color="#2457a6", linewidth=2.0, label=label, gid="roc:points", zorder=3)
    handles, labels = ax.get_legend_handles_labels()
    first = [i for i, handle in enumerate(handles) if handle.get_gid() == "roc:points"]
    rest = [i for i in range(len(handles)) if i not in first]
    ax.legend([handles[i] for i in first + rest], [labels[i] for i in first + rest], loc="upper left",
              bbox_to_anchor=(1.03, 1.0), fontsize=8, frameon=False, borderaxespad=0)
    return fig


def _draw_ecdfs(ax, samples: Sequence[tuple[str, np.ndarray, str]], alpha: float | None, right: float) -> None:
    ax.plot([0, right], [0, right], linestyle=":", color="#999999", linewidth=1.0, gid="uniform",
            label="what chance alone gives (uniform)")
    for key, values, color in samples:
        if len(values):
            x = np.concatenate([[0.0], np.sort(values), [1.0]])
            y = np.concatenate([[0.0], np.arange(1, len(values) + 1) / len(values), [1.0]])
            ax.step(x, y, where="post", color=color, linewidth=1.8, gid=f"ecdf:{key}", label=key)
    if alpha is not None:
        ax.axvline(alpha, color=FAILED_COLOR, linestyle="--", linewidth=1.1, gid="alpha", label=f"α = {alpha:g}")
    ax.set_xlim(0, right)
    reach = max([float(np.mean(values <= right)) for _, values, _ in samples if len(values)] + [right])
    ax.set_ylim(0, 1.0 if right >= 1 else min(1.0, max(1.15 * reach, 1.5 * right)))
    ax.set_xlabel("p-value")
    ax.set_ylabel("share of examples with a p-value ≤ x")
    ax.grid(True, linewidth=0.5, alpha=0.4)


def p_value_figure(p_request: Sequence[float] | None, p_chance: Sequence[float] | None, alpha: float | None,
                   labels: tuple[str, str] = ("requested examples", "never-seen validation examples"),
                   title: str | None = None) -> Figure:
    """Two samples of p-values as empirical CDFs (share of examples with p ≤ x), the uniform diagonal as chance.

    Left axes: [0, 1]; right axes (only when `alpha` is a number in (0, 1)): a zoom on [0, min(1, max(4 alpha,
    0.1))], where the height of a line at the dashed alpha line (gid "alpha") is the share flagged at alpha. Lines
    carry gid "ecdf:<label>"; missing or non-finite p-values are dropped, and a sample left empty is named in a note.
    """
    samples = [(labels[0], _finite_array(p_request), "#2457a6"), (labels[1], _finite_array(p_chance), ORIGINAL_COLOR)]
    samples = [(key, values[np.isfinite(values)], color) for key, values, color in samples]
    level = float(alpha) if isinstance(alpha, (int, float)) and np.isfinite(alpha) and 0 < alpha < 1 else None
    fig = Figure(figsize=(10.5 if level is not None else 6.0, 4.4), layout="constrained")
    axes = fig.subplots(1, 2 if level is not None else 1, squeeze=False)[0]
    _draw_ecdfs(axes[0], samples, level, 1.0)
    axes[0].set_title("all p-values", fontsize=10)
    if level is not None:
        right = min(1.0, max(4 * level, 0.1))
        _draw_ecdfs(axes[1], samples, level, right)
        axes[1].set_title(f"zoom on p ≤ {right:g}", fontsize=10)
    empty = [key for key, values, _ in samples if not len(values)]
    if empty:
        axes[0].text(0.98, 0.02, "no p-values: " + ", ".join(empty), transform=axes[0].transAxes, ha="right",
                     va="bottom", fontsize=8, color=FAILED_COLOR, gid="no_p_values")
    handles, names = axes[0].get_legend_handles_labels()
    fig.legend(handles, names, loc="outside lower center", ncol=len(handles), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
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
    return {model: found[model] for model in ordered_models(found)}
