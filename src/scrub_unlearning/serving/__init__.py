"""Serving real deletion requests: reading and validating a request, and the authenticated, chained ledger of
their steps (no Kedro, no MLflow)."""

from .ledger import (
    ENV_VAR,
    ORPHAN_TAG,
    STEPS,
    Attempt,
    Ledger,
    LedgerError,
    RequestInFlight,
    Verdict,
    check_against_registry,
    classify_versions,
    keyed_hash,
    ledger_key,
    migrate_schema1,
    set_hash,
)
from .requests import DeletionRequest, read_request, validate_request

__all__ = [
    "ENV_VAR", "ORPHAN_TAG", "STEPS", "Attempt", "DeletionRequest", "Ledger", "LedgerError", "RequestInFlight",
    "Verdict", "check_against_registry", "classify_versions", "keyed_hash", "ledger_key", "migrate_schema1",
    "read_request", "set_hash", "validate_request",
]
