"""`kedro run --pipelines=deletion_request`: request -> task -> unlearn -> evaluate (+ audit) -> gates -> register
(ledger: intent, registered) -> record and promote (ledger: recorded, promoted) -> report, against the serving
version of the registered model."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from ..common import RUNTIME
from . import nodes

REQUEST = "params:deletion_request"
BACKBONE, BACKBONE_INFO = "pretrained_backbone", "pretraining_info"  # what Retrain and the audit's shadows start from


def create_pipeline(ingestion: Pipeline) -> Pipeline:
    """The deletion-request nodes after `ingestion` (the splits give the training ids and the test set; the
    pre-trained backbone, from its store, is what Retrain and the audit's shadows start from).

    Only ingestion's outputs stay in memory: every `request_*` dataset between the nodes below is a file, so a node
    runs in its own process (`kedro run --pipelines deletion_request --nodes <ingestion nodes>,<node>`, what the
    Airflow template does) and the nodes that need the tensors rebuild them from the splits."""
    return ingestion + Pipeline([
        node(nodes.prepare_request, ["splits", REQUEST], "request_prepared", name="prepare_request"),
        node(nodes.build_request_task, ["splits", "request_prepared", REQUEST], "request_task",
             name="build_request_task"),
        node(nodes.unlearn_request, ["splits", "request_task", REQUEST, "params:registry", "params:method_params",
                                     "params:training", RUNTIME, BACKBONE, BACKBONE_INFO],
             ["request_result", "request_model_before", "request_model_after"], name="unlearn_request"),
        node(nodes.evaluate_request, ["splits", "request_task", "request_result", "request_model_before",
                                      "request_model_after", REQUEST], "request_comparison", name="evaluate_request"),
        node(nodes.audit_request, ["splits", "request_task", "request_result", "request_model_before",
                                   "request_model_after", REQUEST, "params:registry", "params:method_params",
                                   "params:training", RUNTIME, BACKBONE, BACKBONE_INFO],
             "request_audit", name="audit_request"),
        node(nodes.check_gates, ["request_comparison", "request_audit", REQUEST], "request_gates",
             name="check_gates"),
        node(nodes.register_candidate, ["request_prepared", "request_result", "request_model_after",
                                        "request_comparison", "request_audit", "request_gates", "params:registry",
                                        REQUEST],
             "request_registration", name="register_candidate"),
        node(nodes.record_request, ["request_prepared", "request_result", "request_comparison", "request_audit",
                                    "request_gates", "request_registration", REQUEST, "params:registry"],
             "request_summary", name="record_request"),
        node(nodes.build_request_report, "request_summary",
             ["request_report", "request_report_mlflow", "request_metrics"], name="build_request_report"),
    ], tags=["deletion_request"])
