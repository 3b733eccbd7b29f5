"""Scenario tables -> the run-wide table, its summary over seeds, the Markdown, the MLflow copies, the report."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from ..common import seeded
from . import nodes


def create_pipeline(scenario_names: list[str], attacked: list[str] | None = None, seed: int = 1) -> Pipeline:
    """The run-wide table over the given scenarios (per seed), its mean ± std summary over seeds, the Markdown,
    a copy in MLflow, and the HTML report (with the U-LiRA ROC curves of the `attacked` scenarios, from the
    first seed)."""
    inputs = {"seeds": "params:seeds", **{name: f"{name}.metrics" for name in scenario_names}}
    scores = {scenario: f"{seeded(scenario, seed)}.ulira_scores" for scenario in attacked or []}
    return Pipeline([
        node(nodes.build_run_table, inputs,
             ["run_table", "run_summary", "run_table_mlflow", "run_table_markdown"],
             name="build_run_table", tags=["reporting"]),
        node(nodes.build_run_report, {"table": "run_table", **scores}, "run_report", name="build_run_report",
             tags=["reporting"]),
    ])
