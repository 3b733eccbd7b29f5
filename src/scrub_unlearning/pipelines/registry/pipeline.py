"""The clean Original of the first seed registered in the MLflow Model Registry (with `registry.enabled`)."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from ..common import RUNTIME, seeded
from . import nodes


def create_pipeline(first_seed: int) -> Pipeline:
    """Register the clean Original of the first seed, then train its audit shadows."""
    return Pipeline([node(nodes.register_original,
                          [f"{seeded('clean', first_seed)}.original_model", "splits", "split_table",
                           "params:dataset", "params:training", "params:registry"],
                          "registered_original", name="register_original", tags=["registry"]),
                     node(nodes.train_registration_shadows,
                          ["registered_original", f"{seeded('clean', first_seed)}.original_model",
                           f"{seeded('clean', first_seed)}.training_set", "params:training", "params:registry",
                           RUNTIME],
                          "registration_audit", name="train_registration_shadows", tags=["registry"])])
