"""Kedro project settings: the project hook, and a `project_root` resolver so MLflow's SQLite store and artifact
folder are absolute paths under the project root wherever Kedro is started from (a notebook in `notebooks/` too)."""

from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.utils import find_kedro_project

from scrub_unlearning.hooks import ScenarioRegistryHook


def project_root() -> str:
    """The Kedro project that contains the current directory (falls back to the current directory)."""
    found = find_kedro_project(Path.cwd())
    return str(Path(found or Path.cwd()).resolve())


HOOKS = (ScenarioRegistryHook(),)

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"project_root": project_root},
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},
    # an environment (test, cifar5, ...) overrides single keys of base's parameters instead of whole blocks
    "merge_strategy": {"parameters": "soft", "globals": "soft"},
}
