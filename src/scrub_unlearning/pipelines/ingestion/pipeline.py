"""raw -> splits (+ the split table of ids), shared by every other pipeline."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from . import nodes


def create_pipeline() -> Pipeline:
    """Load the dataset, split it, and validate every scenario against the splits."""
    return Pipeline([
        node(nodes.load_raw_dataset, "params:dataset", "raw_dataset", name="load_raw_dataset", tags=["ingestion"]),
        node(nodes.split_dataset,
             ["raw_dataset", "params:splits", "params:scenarios", "params:training_sets", "params:seeds",
              "params:ulira"],
             ["splits", "split_table"], name="split_dataset", tags=["ingestion"]),
    ])
