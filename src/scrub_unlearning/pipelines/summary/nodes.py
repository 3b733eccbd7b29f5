"""Reporting nodes: the run-wide table, its summary over seeds, and the HTML research report."""

from __future__ import annotations

import math

import pandas as pd

from ...evaluation.statistics import CONFIDENCE, mean_interval
from ...reporting import run_report

KEYS = ["scenario", "application", "model"]
NOT_SUMMARISED = (*KEYS, "seed", "status", "failure")


def _is_flag(column: pd.Series) -> bool:
    """A yes/no column (a method's own row field, e.g. SCRUB's `guard_fired`); missing where a method has none."""
    values = column.dropna()
    return pd.api.types.is_bool_dtype(column) or (len(values) > 0 and values.map(
        lambda v: isinstance(v, bool) or str(v) in ("True", "False")).all())


def _seed_statistics(values: pd.Series, gap: bool) -> dict:
    """`_mean`, `_std`, the 95% t-interval of the mean (`_mean_ci_low`/`_high`, n − 1 degrees of freedom) of one
    column over seeds; for a `<metric>_gap` column (method − Retrain on the same seed) also the paired t-test's
    p-value (`_p`) and whether the gap is distinguishable from 0 (`_differs`: p < 0.05, i.e. the interval excludes
    0; None with fewer than two seeds)."""
    stats = mean_interval(pd.to_numeric(values, errors="coerce").to_numpy(dtype=float), CONFIDENCE)
    out = {"mean": stats.mean, "std": stats.std, "mean_ci_low": stats.low, "mean_ci_high": stats.high}
    if gap:
        out["p"] = stats.p_value
        out["differs"] = None if math.isnan(stats.p_value) else bool(stats.p_value < 1.0 - CONFIDENCE)
    return out


def summarise_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """Per (scenario, model), over seeds: every numeric column's mean, standard deviation and 95% t-interval of the
    mean (`_mean`, `_std`, `_mean_ci_low`, `_mean_ci_high`); for every gap to Retrain (`<metric>_gap`, paired by
    seed) the paired t-test's p-value (`<metric>_gap_p`) and whether it is distinguishable from 0
    (`<metric>_gap_differs`), with `differs_from_retrain` listing those metrics; for every yes/no column the number
    of seeds where it was yes (`<column>_seeds`). A (scenario, model) counts as failed when any seed failed."""
    columns = [c for c in table.columns if c not in NOT_SUMMARISED]
    flags = [c for c in columns if _is_flag(table[c])]
    numeric = [c for c in columns if c not in flags and pd.api.types.is_numeric_dtype(table[c])]
    grouped = table.groupby(KEYS, sort=False)
    records, keys = [], []
    for key, rows in grouped:
        keys.append(key)
        record, differs = {}, []
        for column in numeric:
            for stat, value in _seed_statistics(rows[column], column.endswith("_gap")).items():
                record[f"{column}_{stat}"] = value
            if record.get(f"{column}_differs"):
                differs.append(column[: -len("_gap")])
        tested = any(record.get(f"{c}_differs") is not None for c in numeric if c.endswith("_gap"))
        record["differs_from_retrain"] = (", ".join(differs) or "none") if tested else None
        records.append(record)
    summary = pd.DataFrame.from_records(records, index=pd.MultiIndex.from_tuples(keys, names=KEYS))
    summary["seeds"] = grouped["seed"].count()
    summary["failed_seeds"] = grouped["status"].apply(lambda s: int((s != "ok").sum()))
    for flag in flags:
        summary[f"{flag}_seeds"] = grouped[flag].apply(lambda s: int(s.map(lambda v: str(v) == "True").sum()))
    return summary.reset_index()


def build_run_table(seeds: list, **scenario_tables: pd.DataFrame):
    """The run-wide table (one row per scenario, model and seed), printed, with its Markdown, a copy for MLflow,
    and the mean ± std summary over seeds (in MLflow: one child run per scenario and model, tagged `seed: all`)."""
    table = pd.concat(list(scenario_tables.values()), ignore_index=True)
    table["failure"] = table["failure"].fillna("")  # CSV reads an empty reason back as NaN
    summary = summarise_seeds(table)
    # printed and in Markdown: mean and std (the CSV and MLflow also hold the intervals and the paired tests)
    brief = [c for c in summary.columns if not c.endswith(("_mean_ci_low", "_mean_ci_high", "_gap_p", "_differs"))]
    shown = table if len(seeds) == 1 else summary[brief]
    markdown = shown.to_markdown(index=False, floatfmt=".2f")
    print(f"\nRun-wide table (seeds {seeds}{'' if len(seeds) == 1 else ': mean and std over seeds'}):\n{markdown}\n")
    return table, summary, table, markdown


def build_run_report(table: pd.DataFrame, **scores: pd.DataFrame) -> str:
    """The run's HTML report: per scenario the forget-vs-test view, metric bars against Retrain, U-LiRA ROC curves
    (per attacked scenario, its score table with a `model` column) and the table."""
    by_scenario = {scenario: {str(model): rows for model, rows in frame.groupby("model", sort=False)}
                   for scenario, frame in scores.items() if len(frame)}
    return run_report(table, "Unlearning run", scores_by_scenario=by_scenario or None)
