"""Project hooks.

- `ScenarioRegistryHook` first checks the configuration - an unknown `--env`, then every parameter the run reads
  (`validation.check_run_config`) - so bad input fails before any node runs (before kedro-mlflow's own hook, too),
  then hands the session's own config loader (with `--env` and `--params` applied) to the pipeline registry, so
  scenarios and methods written as parameters shape the DAG.
- `ProgressHook` shows the library's progress reports (epochs, shadows) as rich progress bars labelled with the
  running node's namespace; when the output is not a terminal (CI, a cron log) it writes a log line every quarter
  instead, and widens the console so log lines are not wrapped at 80 columns.
"""

from __future__ import annotations

import logging
import threading
from contextlib import ExitStack

from kedro.framework.hooks import hook_impl
from kedro.framework.project import pipelines

from scrub_unlearning import progress

log = logging.getLogger("scrub_unlearning.progress")
LOG_WIDTH = 160  # columns of a log that is not a terminal


class ScenarioRegistryHook:
    @hook_impl(tryfirst=True)
    def after_context_created(self, context) -> None:
        # imported here, so reading the settings (the benchmark does) does not import every pipeline
        from scrub_unlearning import pipeline_registry, validation

        validation.check_environment(context.config_loader.conf_source, context.env)
        validation.check_run_config(context.config_loader["parameters"])
        pipeline_registry.use_config_loader(context.config_loader)
        # pipelines are cached per process: re-register them for this session's env and parameters
        pipelines.configure("scrub_unlearning.pipeline_registry")


class ProgressHook:
    def __init__(self) -> None:
        self._node = threading.local()
        self._stack: ExitStack | None = None
        self._bars = None
        self._tasks: dict[str, int] = {}
        self._logged: dict[str, int] = {}

    @hook_impl
    def after_context_created(self, context) -> None:
        import rich

        console = rich.get_console()
        if not console.is_terminal:
            console.width = max(console.width, LOG_WIDTH)

    @hook_impl
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        import rich
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

        self._stack = ExitStack()
        console = rich.get_console()
        if console.is_terminal:
            self._bars = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                  TimeElapsedColumn(), console=console)
            self._stack.enter_context(self._bars)
        self._stack.enter_context(progress.reporting_to(self._report))

    @hook_impl
    def before_node_run(self, node, catalog, inputs, is_async, run_id) -> None:
        self._node.label = node.namespace or node.name

    @hook_impl
    def after_pipeline_run(self, run_params, pipeline, catalog) -> None:
        self._close()

    @hook_impl
    def on_pipeline_error(self, error, run_params, pipeline, catalog) -> None:
        self._close()

    def _close(self) -> None:
        if self._stack is not None:
            self._stack.close()
        self._stack, self._bars = None, None
        self._tasks.clear()
        self._logged.clear()

    def _report(self, what: str, done: int, total: int) -> None:
        label = f"{getattr(self._node, 'label', '')} · {what}".strip(" ·")
        if self._bars is not None:
            if label not in self._tasks:
                self._tasks[label] = self._bars.add_task(label, total=total)
            self._bars.update(self._tasks[label], completed=done, total=total)
            if done >= total:
                self._bars.remove_task(self._tasks.pop(label))
            return
        quarter = max(1, total // 4)
        if done >= total or done - self._logged.get(label, 0) >= quarter:
            self._logged[label] = 0 if done >= total else done
            log.info("%s: %d/%d", label, done, total)
