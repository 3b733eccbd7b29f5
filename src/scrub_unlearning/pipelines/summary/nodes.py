"""Reporting nodes: the run-wide table, its summary over seeds, and the HTML research report."""

from __future__ import annotations

import pandas as pd

from ...reporting import run_report

KEYS = ["scenario", "application", "model"]
NOT_SUMMARISED = (*KEYS, "seed", "status", "failure")


def _is_flag(column: pd.Series) -> bool:
    """A yes/no column (a method's own row field, e.g. SCRUB's `guard_fired`); missing where a method has none."""
    values = column.dropna()
    return pd.api.types.is_bool_dtype(column) or (len(values) > 0 and values.map(
        lambda v: isinstance(v, bool) or str(v) in ("True", "False")).all())


def summarise_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every numeric column, per (scenario, model), and for every yes/no
    column the number of seeds where it was yes (`<column>_seeds`); a (scenario, model) counts as failed when any
    seed failed."""
    columns = [c for c in table.columns if c not in NOT_SUMMARISED]
    flags = [c for c in columns if _is_flag(table[c])]
    numeric = [c for c in columns if c not in flags and pd.api.types.is_numeric_dtype(table[c])]
    grouped = table.groupby(KEYS, sort=False)
    summary = grouped[numeric].agg(["mean", "std"])
    summary.columns = [f"{column}_{stat}" for column, stat in summary.columns]
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
    shown = table if len(seeds) == 1 else summary
    markdown = shown.to_markdown(index=False, floatfmt=".2f")
    print(f"\nRun-wide table (seeds {seeds}{'' if len(seeds) == 1 else ': mean and std over seeds'}):\n{markdown}\n")
    return table, summary, table, markdown


def build_run_report(table: pd.DataFrame, **scores: pd.DataFrame) -> str:
    """The run's HTML report: per scenario the forget-vs-test view, metric bars against Retrain, U-LiRA ROC curves
    (per attacked scenario, its score table with a `model` column) and the table."""
    by_scenario = {scenario: {str(model): rows for model, rows in frame.groupby("model", sort=False)}
                   for scenario, frame in scores.items() if len(frame)}
    return run_report(table, "Unlearning run", scores_by_scenario=by_scenario or None)
