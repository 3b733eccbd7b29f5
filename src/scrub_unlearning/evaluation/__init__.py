"""Evaluation: errors, interclass confusion, the basic MIA (no Kedro, no MLflow, never imports methods/)."""

from .metrics import APPLICATION_METRICS, BASE_METRICS, evaluate_model, interclass_confusion
from .mia import basic_mia, per_example_loss

__all__ = ["APPLICATION_METRICS", "BASE_METRICS", "basic_mia", "evaluate_model", "interclass_confusion",
           "per_example_loss"]
