"""Project hooks. `ScenarioRegistryHook` hands the session's own config loader (with `--env` and `--params`
applied) to the pipeline registry, so scenarios and methods written as parameters shape the DAG."""

from __future__ import annotations

from kedro.framework.hooks import hook_impl
from kedro.framework.project import pipelines


class ScenarioRegistryHook:
    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        # imported here, so reading the settings (the benchmark does) does not import every pipeline
        from scrub_unlearning import pipeline_registry

        pipeline_registry.use_config_loader(context.config_loader)
        # pipelines are cached per process: re-register them for this session's env and parameters
        pipelines.configure("scrub_unlearning.pipeline_registry")
