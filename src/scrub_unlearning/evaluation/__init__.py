"""Evaluation: errors, interclass confusion, the basic MIA, comparison with Retrain (no Kedro, no MLflow, never
imports methods/)."""

from .comparison import compare_to_retrain, gap_metrics, scale_up
from .metrics import APPLICATION_METRICS, BASE_METRICS, evaluate_model, interclass_confusion
from .mia import basic_mia, per_example_loss

__all__ = ["APPLICATION_METRICS", "BASE_METRICS", "basic_mia", "compare_to_retrain", "evaluate_model", "gap_metrics",
           "interclass_confusion", "per_example_loss", "scale_up"]
