"""Kedro project settings: the project hook, and a `project_root` resolver so MLflow's SQLite store and artifact
folder are absolute paths under the project root wherever Kedro is started from (a notebook in `notebooks/` too)."""

import warnings
from pathlib import Path

from kedro.config import OmegaConfigLoader
from kedro.utils import find_kedro_project

from scrub_unlearning.hooks import ProgressHook, ScenarioRegistryHook
from scrub_unlearning.mlflow_edge.params_hook import OncePerRunMlflowHook
from scrub_unlearning.mlflow_edge.run_layout import MlflowRunLayoutHook
from scrub_unlearning.tuning.settings_file import SOURCE_KEY, apply_tuned_settings, select_environment


class ProjectConfigLoader(OmegaConfigLoader):
    """Kedro's OmegaConfigLoader; its `parameters` carry the tuned settings when `method_params_source: tuned`
    (in the configuration or as `--params`): `conf/<env>/parameters_tuned.yml`, written by `kedro run
    --pipelines=tune`, overlaid on the scenarios' method parameters and the Original's recipe, so every node, the
    validation and MLflow see the values the run uses (tuning/settings_file.py)."""

    def __getitem__(self, key):
        config = super().__getitem__(key)
        if key == "parameters":
            # `kedro run` without --env runs base + local; its tuned file is base's
            environment = self.env if self.env and self.env != self.default_run_env else self.base_env
            config = select_environment(config, environment)
            source = (self.runtime_params or {}).get(SOURCE_KEY, config.get(SOURCE_KEY))
            config = apply_tuned_settings(config, source)
        return config


def project_root() -> str:
    """The Kedro project that contains the current directory (falls back to the current directory)."""
    found = find_kedro_project(Path.cwd())
    return str(Path(found or Path.cwd()).resolve())


# Kedro 1.7's own config loader calls OmegaConf's deprecated `register_new_resolver` on every run; not ours to fix,
# and three 15-line warnings at the top of every run's log hide what matters
warnings.filterwarnings("ignore", message=r"register_new_resolver\(\) is deprecated", category=UserWarning)

# kedro-mlflow's own hook instance is replaced by a subclass that logs each parameter once per run
# (mlflow_edge/params_hook.py); the plugin's CLI commands stay registered
DISABLE_HOOKS_FOR_PLUGINS = ("kedro-mlflow", "kedro_mlflow")  # the distribution's name as its metadata spells it
# last, so it is called first (pluggy calls the last registered hook first), as the plugin's entry point was
HOOKS = (ScenarioRegistryHook(), ProgressHook(), MlflowRunLayoutHook(), OncePerRunMlflowHook())

CONFIG_LOADER_CLASS = ProjectConfigLoader
CONFIG_LOADER_ARGS = {
    "base_env": "base",
    "default_run_env": "local",
    "custom_resolvers": {"project_root": project_root},
    "config_patterns": {"mlflow": ["mlflow*", "mlflow*/**", "**/mlflow*"]},
    # an environment (test, cifar5, ...) overrides single keys of base's parameters (and of mlflow.yml: its own
    # experiment) instead of whole blocks
    "merge_strategy": {"parameters": "soft", "globals": "soft", "mlflow": "soft"},
}
