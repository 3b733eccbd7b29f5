"""`kedro run --pipelines=verify_ledger`: the deletion ledger checked, line by line, and against the Model Registry;
prints the verdict and fails the run when the ledger is broken."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from . import nodes


def create_pipeline() -> Pipeline:
    """One node: no data, no training; it reads the ledger (path and key from `deletion_request`) and the
    registry (`registry.model_name`, its serving alias)."""
    return Pipeline([
        node(nodes.verify_ledger, ["params:deletion_request", "params:registry"], "ledger_verdict",
             name="verify_ledger"),
    ], tags=["verify_ledger"])
