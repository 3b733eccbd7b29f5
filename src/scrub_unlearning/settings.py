"""Kedro project settings: the project hook, and a `project_root` resolver so MLflow's SQLite store and artifact
folder are absolute paths under the project root wherever Kedro is started from (a notebook in `notebooks/` too)."""

import warnings
from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.utils import find_kedro_project

from scrub_unlearning.hooks import ProgressHook, ScenarioRegistryHook
from scrub_unlearning.mlflow_edge.run_layout import MlflowRunLayoutHook


def project_root() -> str:
    """The Kedro project that contains the current directory (falls back to the current directory)."""
    found = find_kedro_project(Path.cwd())
    return str(Path(found or Path.cwd()).resolve())


# Kedro 1.7's own config loader calls OmegaConf's deprecated `register_new_resolver` on every run; not ours to fix,
# and three 15-line warnings at the top of every run's log hide what matters
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)

HOOKS = (ScenarioRegistryHook(), ProgressHook(), MlflowRunLayoutHook())

CONFIG_LOADER_CLASS = OmegaConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"project_root": project_root},
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},
    # an environment (test, cifar5, ...) overrides single keys of base's parameters (and of mlflow.yml: its own
    # experiment) instead of whole blocks
    "merge_strategy": {"parameters": "soft", "globals": "soft", "mlflow": "soft"},
}
