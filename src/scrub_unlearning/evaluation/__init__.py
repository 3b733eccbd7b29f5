"""Evaluation: errors, interclass confusion, the basic MIA, U-LiRA and its shadows, comparison with Retrain (no Kedro,
no MLflow, never imports methods/: an attack takes the method as a callable)."""

from .comparison import compare_to_retrain, gap_metrics, scale_up
from .metrics import APPLICATION_METRICS, BASE_METRICS, evaluate_model, interclass_confusion, interclass_error
from .mia import basic_mia, per_example_loss
from .ulira import UliraResult, logit_margin, ulira

__all__ = ["APPLICATION_METRICS", "BASE_METRICS", "basic_mia", "compare_to_retrain", "evaluate_model", "gap_metrics",
           "interclass_confusion", "interclass_error", "per_example_loss", "scale_up", "UliraResult", "logit_margin",
           "ulira"]
