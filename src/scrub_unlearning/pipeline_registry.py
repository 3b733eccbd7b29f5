"""Project pipelines, built from the `scenarios:`, `training_sets:`, `methods:` and `seeds:` parameters.

`register_pipelines()` takes no arguments and cannot see `--env`/`--params`, so `ScenarioRegistryHook` hands it
the session's config loader first. Without a session (e.g. a bare import), the `base` + `local` configuration of
the current project is read.
"""

from __future__ import annotations

from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.pipeline import Pipeline

from .pipelines.unlearning import create_pipelines
from .validation import check_config

_config_loader = None


def use_config_loader(config_loader) -> None:
    """Remember the session's config loader (called by the project hook)."""
    global _config_loader
    _config_loader = config_loader


def _parameters() -> dict:
    loader = _config_loader
    if loader is None:
        from .settings import CONFIG_LOADER_ARGS, project_root

        loader = OmegaConfigLoader(str(Path(project_root()) / "conf"), **CONFIG_LOADER_ARGS)
    return loader["parameters"]


def register_pipelines() -> dict[str, Pipeline]:
    parameters = _parameters()
    scenarios = parameters.get("scenarios") or {}
    training_sets = parameters.get("training_sets") or {}
    methods = list(parameters.get("methods") or [])
    check_config(scenarios, training_sets, methods)
    methods = [m for m in methods if m not in ("original", "retrain")]
    return create_pipelines(scenarios, training_sets, methods, list(parameters.get("seeds") or [1]),
                            parameters.get("ulira"), parameters.get("registry"))
