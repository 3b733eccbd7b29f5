"""Table helpers shared by the figures, the ranking and the HTML: display names and order (from the method
registry), colours, a run table's scenario rows and their per-method summary over seeds."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import pandas as pd

from ..evaluation.statistics import mean_interval
from ..methods import DISPLAY_NAMES

DEFAULT_METRICS = ("forget_error", "test_error")
"""The metrics charted for an application `CHARTED_METRICS` does not know."""

CHARTED_METRICS = {
    "rb_class": ("forget_error", "test_error", "forgotten_class_test_error"),
    "rb_selective": ("forget_error", "test_error"),
    "rc": ("ic_error_test", "forget_error", "test_error"),
    "up": ("forget_error", "mia_basic", "ulira_auc"),
}
"""The metrics charted (bar charts) per application in the reports: a display choice, not the list of columns an
application is evaluated on (that is `evaluation.metrics.APPLICATION_METRICS`, which for example holds counts and
split stds that are not worth a chart, and lacks the base errors and U-LiRA). A metric the table lacks (or holds
only NaN for) is left out."""

METRIC_LABELS = {
    "forget_error": "forget error (%)", "retain_error": "retain error (%)", "test_error": "test error (%)",
    "val_error": "validation error (%)", "forgotten_class_test_error": "forgotten-class test error (%)",
    "ic_error_test": "interclass confusion, test (%)", "ic_error_retain": "interclass confusion, retain (%)",
    "ic_count_test": "interclass confusion, test (count)", "ic_count_retain": "interclass confusion, retain (count)",
    "ic_all_error_test": "errors on the two classes, test (%)",
    "ic_all_error_retain": "errors on the two classes, retain (%)",
    "mia_basic": "basic MIA accuracy (%)", "ulira_auc": "U-LiRA AUC", "ulira_acc": "U-LiRA balanced accuracy",
    "klom_forget_p50": "KLoM, forget (median)", "klom_forget_p95": "KLoM, forget (95th pct.)",
    "klom_retain_p50": "KLoM, never forgotten (median)", "klom_retain_p95": "KLoM, never forgotten (95th pct.)",
    "tow": "ToW", "seconds": "seconds", "scale_up": "scale-up vs Retrain",
}
"""Axis labels of the charted metrics (unknown metrics are labelled with their column name)."""

RETRAIN_COLOR = "#111111"
ORIGINAL_COLOR = "#8c8c8c"
FAILED_COLOR = "#b00020"
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22", "#17becf",
           "#393b79", "#637939", "#8c6d31", "#843c39", "#7b4173", "#3182bd", "#e6550d")


def method_label(name: str) -> str:
    """The display name of a model from the method registry ("scrub_r" → "SCRUB+R"); a name the registry does not
    know is shown as it is."""
    return DISPLAY_NAMES.get(str(name), str(name))


def ordered_models(models: Iterable) -> list[str]:
    """`models` without repeats, registered ones first in the registry's order ("original" first), then the others
    in the order they first appear."""
    seen = list(dict.fromkeys(str(m) for m in models))
    known = [m for m in DISPLAY_NAMES if m in seen]
    return known + [m for m in seen if m not in DISPLAY_NAMES]


def method_colors(models: Sequence[str]) -> dict[str, str]:
    """A fixed colour per method (the same in every figure of a report): Retrain black, Original grey, the other
    registered methods by registry position, unknown models after them."""
    others = [m for m in DISPLAY_NAMES if m not in ("original", "retrain")]
    extra = [m for m in models if m not in DISPLAY_NAMES]
    colors = {model: PALETTE[i % len(PALETTE)] for i, model in enumerate(others + extra)}
    colors["retrain"], colors["original"] = RETRAIN_COLOR, ORIGINAL_COLOR
    return colors


def ok_mask(frame: pd.DataFrame) -> pd.Series:
    """True for the rows whose `status` is "ok" (every row when there is no status column)."""
    if "status" not in frame.columns:
        return pd.Series(True, index=frame.index)
    return frame["status"].astype(str).str.lower().eq("ok")


def scenario_rows(table: pd.DataFrame, scenario: str) -> pd.DataFrame:
    """The table's rows of one scenario; KeyError naming the known scenarios when there is none."""
    if "scenario" not in table.columns:
        raise KeyError("the table has no 'scenario' column")
    rows = table[table["scenario"].astype(str) == str(scenario)]
    if rows.empty:
        known = ", ".join(map(str, pd.unique(table["scenario"])))
        raise KeyError(f"scenario {scenario!r} is not in the table (scenarios: {known})")
    return rows


def application_of(rows: pd.DataFrame, scenario: str) -> str:
    """The scenario's application (its `application` column; the scenario name when there is none)."""
    if "application" in rows.columns and rows["application"].notna().any():
        return str(rows["application"].dropna().iloc[0])
    return str(scenario)


def has_values(table: pd.DataFrame, column: str) -> bool:
    return column in table.columns and pd.to_numeric(table[column], errors="coerce").notna().any()


def finite(value) -> bool:
    try:
        return math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def summarise(rows: pd.DataFrame, metrics: Sequence[str]) -> pd.DataFrame:
    """Per model (display order): mean, std and 95% t-interval of the mean over its successful seeds of each metric
    (`<metric>_mean`, `<metric>_std`, `<metric>_mean_ci_low`, `<metric>_mean_ci_high`; NaN but the mean with one
    seed), the number of `seeds`, of `failed_seeds`, and whether every seed `failed`."""
    records = []
    ok = ok_mask(rows)
    for model in ordered_models(rows["model"]):
        mine = rows["model"].astype(str) == model
        good = rows[mine & ok]
        record = {"model": model, "seeds": int(mine.sum()), "failed_seeds": int((mine & ~ok).sum())}
        record["failed"] = record["failed_seeds"] == record["seeds"]
        for metric in metrics:
            values = (pd.to_numeric(good[metric], errors="coerce").dropna() if metric in good.columns
                      else pd.Series(dtype=float))
            stats = mean_interval(values.to_numpy(dtype=float))
            record[f"{metric}_mean"], record[f"{metric}_std"] = stats.mean, stats.std
            record[f"{metric}_mean_ci_low"], record[f"{metric}_mean_ci_high"] = stats.low, stats.high
        records.append(record)
    return pd.DataFrame.from_records(records)


def seed_note(rows: pd.DataFrame) -> str:
    seeds = pd.unique(rows["seed"]) if "seed" in rows.columns else []
    return f"mean ± std over {len(seeds)} seeds" if len(seeds) > 1 else "one seed"
