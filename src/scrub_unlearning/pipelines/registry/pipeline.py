"""The clean Original of the first seed registered in the MLflow Model Registry (with `registry.enabled`)."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from ..common import seeded
from . import nodes


def create_pipeline(first_seed: int) -> Pipeline:
    """Register the clean Original of the first seed."""
    return Pipeline([node(nodes.register_original,
                          [f"{seeded('clean', first_seed)}.original_model", "splits", "split_table",
                           "params:dataset", "params:training", "params:registry"],
                          "registered_original", name="register_original", tags=["registry"])])
