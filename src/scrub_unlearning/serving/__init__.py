"""Serving real deletion requests: reading and validating a request, and the auditable ledger of processed ones
(no Kedro, no MLflow)."""

from .ledger import ENV_VAR, Ledger, keyed_hash, ledger_key, set_hash
from .requests import DeletionRequest, read_request, validate_request

__all__ = [
    "ENV_VAR", "DeletionRequest", "Ledger", "keyed_hash", "ledger_key", "read_request", "set_hash",
    "validate_request",
]
