"""How a method compares with Retrain, the gold reference: signed gaps, tug-of-war, speed-up (docs/design.md §5)."""

from __future__ import annotations

import math

from .metrics import APPLICATION_METRICS, BASE_METRICS

NOT_COMPARED = ("mia_basic_split_std",)


def gap_metrics(application: str) -> tuple[str, ...]:
    """The metrics that get a `<metric>_gap` column for this application."""
    return tuple(m for m in (*BASE_METRICS, *APPLICATION_METRICS[application]) if m not in NOT_COMPARED)


def compare_to_retrain(row: dict, retrain_row: dict, application: str) -> dict:
    """`<metric>_gap` = method - Retrain (signed, in the metric's unit) and
    `tow = (1-|d forget acc|)(1-|d retain acc|)(1-|d test acc|)` with accuracies in [0, 1]."""
    out = {}
    for metric in gap_metrics(application):
        if metric in row and metric in retrain_row:
            out[f"{metric}_gap"] = float(row[metric]) - float(retrain_row[metric])
    tow = 1.0
    for metric in ("forget_error", "retain_error", "test_error"):
        tow *= 1.0 - abs(float(row[metric]) - float(retrain_row[metric])) / 100.0
    out["tow"] = tow
    return out


def scale_up(retrain_seconds: float, method_seconds: float) -> float:
    """Retrain's time over the method's (how many times faster than retraining)."""
    if not method_seconds or math.isnan(method_seconds) or math.isnan(retrain_seconds):
        return math.nan
    return float(retrain_seconds) / float(method_seconds)
