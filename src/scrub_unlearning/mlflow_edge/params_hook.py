"""kedro-mlflow's hook with one change: a parameter is logged once per run, not again before every node that reads
it. kedro-mlflow logs a node's `params:` inputs (flattened) before each node; in this project most nodes read the
same blocks, so a `kedro run --env test` made ~7,600 identical `log_param` calls to the SQLite store, about a third
of the run's wall time. Registered in settings.py in place of the plugin's own instance (docs/design.md §8)."""

from __future__ import annotations

from typing import Any

from kedro.framework.hooks import hook_impl
from kedro_mlflow.framework.hooks.mlflow_hook import MlflowHook


class OncePerRunMlflowHook(MlflowHook):
    """MlflowHook whose parameter logging skips a (name, value) pair already logged in this run. A parameter seen
    again with another value is still passed to MLflow, which refuses it as before (parameters are immutable)."""

    def __init__(self) -> None:
        super().__init__()
        self._logged: dict[str, str] = {}

    @hook_impl
    def before_pipeline_run(self, run_params: dict[str, Any], pipeline, catalog) -> None:
        self._logged = {}
        super().before_pipeline_run(run_params, pipeline, catalog)

    def _log_param(self, name: str, value: Any) -> None:
        text = str(value)
        if self._logged.get(name) == text:
            return None
        result = super()._log_param(name, value)
        self._logged[name] = text
        return result
