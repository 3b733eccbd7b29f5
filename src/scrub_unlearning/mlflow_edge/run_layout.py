"""The MLflow layout users read (docs/design.md §4): kedro-mlflow opens one parent run per `kedro run`; this hook
names it `<pipeline> · <env> · <date>`, tags it readably, logs the splits as a dataset input (ids and labels, never
pixels), and opens one child run per (scenario, seed, model) when that model's evaluation node has run:

- tags `env`, `scenario`, `application`, `method`, `seed`, `status` (and `failure`), named `<scenario> · <Method> ·
  seed <n>`;
- short metric names (`forget_error`, `test_error`, `mia_basic`, `ulira_auc`, ...), per-epoch curves with real
  steps (training loss, SCRUB's max/min loss and kept-class validation error);
- the method's parameters as params; its weights and spec, and its U-LiRA ROC figure, as artifacts;
- the forget set's size as a tag (its ids stay in the catalog, `data/03_primary/`).

After each tuning study node (`tune_*`), one child per trial of that call, tagged `kind: trial`, with the trial's
settings as params and the objective and its parts as metrics (docs/design.md §9).

With several seeds, one more child per (scenario, model) tagged `seed: all` holds the `<metric>_mean`/`_std` over
seeds, the 95% t-interval of each mean (`_mean_ci_low`/`_high`), each gap to Retrain's paired t-test (`_gap_p`,
`_gap_differs` as 1/0) and a `differs_from_retrain` tag naming the metrics whose gap is distinguishable from 0.
The run-wide table and the report stay on the parent. Child runs are made with `MlflowClient` (not the fluent API),
so the parent stays the active run for kedro-mlflow's datasets, under any runner.
"""

from __future__ import annotations

import datetime
import json
import logging
import math
import tempfile
from pathlib import Path

import mlflow
import pandas as pd
from kedro.framework.hooks import hook_impl
from mlflow.entities import Metric, Param, RunTag
from mlflow.tracking import MlflowClient
from safetensors.torch import save_file

from ..methods import DISPLAY_NAMES
from ..models import ModelBundle
from ..reporting import roc_figure
from .run_status import mark_abandoned_runs, owner_tags

log = logging.getLogger(__name__)
NOT_METRICS = ("seed", "guard_epoch")
SEED_SUMMARY_SUFFIXES = ("_mean", "_std", "_mean_ci_low", "_mean_ci_high", "_gap_p", "_gap_differs", "_seeds")
"""Metrics of a seed-summary child run (pipelines/summary: mean, std, 95% t-interval, the paired t-test of each gap
to Retrain and whether it differs from 0, as 1/0; yes/no columns counted over seeds)."""


def _label(model: str) -> str:
    return DISPLAY_NAMES.get(model, model)


def _number(value) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)) and not (isinstance(value, float) and math.isnan(value)):
        return float(value)
    return None


def row_metrics(row: dict) -> dict[str, float]:
    """The row's numbers under their short names (NaN left out), plus `failed` (0/1)."""
    metrics = {k: _number(v) for k, v in row.items() if k not in NOT_METRICS}
    metrics = {k: v for k, v in metrics.items() if v is not None}
    metrics["failed"] = float(row.get("status", "ok") != "ok")
    if _number(row.get("guard_epoch")) is not None:
        metrics["guard_epoch"] = float(row["guard_epoch"])
    return metrics


def curves(info: dict) -> dict[str, list[tuple[int, float]]]:
    """Per-epoch curves in a method's info: lists of numbers (step = epoch, from 1) and a trajectory of per-epoch
    records (step = the record's epoch; every numeric field)."""
    out: dict[str, list[tuple[int, float]]] = {}
    for key, value in info.items():
        if not isinstance(value, list) or not value:
            continue
        if all(_number(v) is not None for v in value):
            out[key] = [(step, float(v)) for step, v in enumerate(value, start=1)]
        elif all(isinstance(v, dict) and "epoch" in v for v in value):
            for record in value:
                for field, v in record.items():
                    if field != "epoch" and not isinstance(v, bool) and _number(v) is not None:
                        out.setdefault(field, []).append((int(record["epoch"]), float(v)))
    return out


def _flat_params(params: dict, prefix: str = "") -> dict[str, str]:
    flat = {}
    for key, value in (params or {}).items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            flat.update(_flat_params(value, f"{name}."))
        else:
            flat[name] = json.dumps(value) if isinstance(value, (list, tuple)) else str(value)
    return flat


def log_batch(client: MlflowClient, run_id: str, params: dict[str, str] | None = None,
              metrics: list[tuple[str, float, int]] | None = None, tags: dict[str, str] | None = None) -> None:
    """Params, metrics (key, value, step) and tags of one run in as few `log_batch` calls as MLflow's limits allow
    (100 params or tags and 1,000 entities per call): one call per child run instead of one per value, which made
    child-run logging the slowest part of a run whose models were all reused."""
    now = int(datetime.datetime.now().timestamp() * 1000)
    entities = [Param(k, str(v)[:6000]) for k, v in (params or {}).items()]
    entities += [RunTag(k, str(v)[:5000]) for k, v in (tags or {}).items()]
    entities += [Metric(k, float(v), now, int(step)) for k, v, step in (metrics or [])]
    batch: list = []
    for entity in entities + [None]:
        small = sum(not isinstance(e, Metric) for e in batch)
        if entity is None or len(batch) == 1000 or (small == 100 and not isinstance(entity, Metric)):
            if batch:
                client.log_batch(run_id, metrics=[e for e in batch if isinstance(e, Metric)],
                                 params=[e for e in batch if isinstance(e, Param)],
                                 tags=[e for e in batch if isinstance(e, RunTag)])
            batch = []
        if entity is not None:
            batch.append(entity)


class MlflowRunLayoutHook:
    def __init__(self) -> None:
        self._env = "local"

    @hook_impl
    def after_context_created(self, context) -> None:
        self._env = context.env or "local"

    @hook_impl(trylast=True)
    def before_pipeline_run(self, run_params, pipeline, catalog) -> None:
        run = mlflow.active_run()
        if run is None:
            return
        names = run_params.get("pipeline_names") or [run_params.get("pipeline_name") or "__default__"]
        pipeline_name = "+".join(n if n != "__default__" else "default" for n in names)
        when = datetime.datetime.now().strftime("%Y-%m-%d %H:%M")
        tags = {"mlflow.runName": f"{pipeline_name} · {self._env} · {when}", "env": self._env,
                "pipeline": pipeline_name, "kind": "run", **owner_tags()}
        runner = run_params.get("runner")
        if runner:  # kedro-mlflow writes the runner's repr; a class name reads better
            tags["runner"] = str(runner).strip("<>").split(" ")[0].rsplit(".", 1)[-1]
        client = MlflowClient()
        for key, value in tags.items():
            client.set_tag(run.info.run_id, key, value)
        # the UI opens a model-training experiment on its runs table, not on the GenAI (traces) overview
        client.set_experiment_tag(run.info.experiment_id, "mlflow.experimentKind", "custom_model_development")
        for run_id in mark_abandoned_runs(client, run.info.experiment_id, run.info.run_id):
            log.warning("MLflow run %s was left RUNNING by a process that is gone: marked KILLED", run_id)

    @hook_impl
    def after_node_run(self, node, catalog, inputs, outputs, is_async, run_id) -> None:
        parent = mlflow.active_run()
        if parent is None:
            return
        short = node.name.rsplit(".", 1)[-1]
        if short == "split_dataset":
            self._log_splits(outputs)
        elif short.startswith("evaluate_"):
            self._log_model_run(parent.info, node, catalog, inputs, outputs)
        elif short == "build_run_table":
            self._log_seed_summaries(parent.info, outputs)
        elif short.startswith("tune_"):
            self._log_trials(parent.info, outputs)

    # --- pieces ----------------------------------------------------------------------------------------------

    def _log_splits(self, outputs: dict) -> None:
        """The splits as the parent run's dataset input: ids, labels and split names (digest included), never
        pixels; split sizes as tags."""
        table = next((v for k, v in outputs.items() if k.endswith("split_table")), None)
        if not isinstance(table, pd.DataFrame):
            return
        mlflow.log_input(mlflow.data.from_pandas(table, name=f"splits ({self._env})"), context="splits")
        if "split" in table:
            for split, count in table["split"].value_counts().items():
                mlflow.set_tag(f"split_size.{split}", int(count))

    def _child(self, parent, name: str, tags: dict, start_time: int | None = None) -> str:
        client = MlflowClient()
        child = client.create_run(parent.experiment_id, run_name=name, start_time=start_time,
                                  tags={"mlflow.parentRunId": parent.run_id, "env": self._env, **owner_tags(),
                                        **tags})
        return child.info.run_id

    def _log_model_run(self, parent, node, catalog, inputs: dict, outputs: dict) -> None:
        row = next((v for k, v in outputs.items() if k.endswith("_row")), None)
        if not isinstance(row, dict):
            return
        info = next((v for k, v in inputs.items() if k.endswith("_info")), {}) or {}
        bundle = next((v for k, v in inputs.items() if k.endswith("_model")), None)
        forget = next((v for k, v in inputs.items() if k.endswith("forget_set")), None)
        model, scenario, seed = str(row["model"]), str(row["scenario"]), int(row["seed"])
        status = str(row.get("status", "ok"))
        tags = {"scenario": scenario, "application": str(row.get("application", "")), "method": model,
                "seed": str(seed), "status": status, "kind": "model"}
        if row.get("failure"):
            tags["failure"] = str(row["failure"])[:4000]
        run_id = self._child(parent, f"{scenario} · {_label(model)} · seed {seed}", tags)
        client = MlflowClient()
        try:
            metrics = [(key, value, 0) for key, value in row_metrics(row).items()]
            metrics += [(key, value, step) for key, points in curves(info).items() for step, value in points]
            has_forget_set = isinstance(forget, pd.DataFrame) and "id" in forget
            extra_tags = {"forget_size": str(len(forget))} if has_forget_set else {}
            log_batch(client, run_id, params=_flat_params(info.get("parameters") or {}), metrics=metrics,
                      tags=extra_tags)
            with tempfile.TemporaryDirectory() as folder:
                if isinstance(bundle, ModelBundle) and bundle.present:
                    (Path(folder) / "model").mkdir()
                    save_file(bundle.weights, str(Path(folder) / "model" / "weights.safetensors"))
                    (Path(folder) / "model" / "spec.json").write_text(json.dumps(bundle.spec, indent=2))
                scores = self._scores(node, model, catalog)
                if scores is not None and len(scores):
                    (Path(folder) / "figures").mkdir()
                    figure = roc_figure({model: scores}, title=f"U-LiRA ROC: {scenario} · {_label(model)}")
                    figure.savefig(Path(folder) / "figures" / "ulira_roc.png", dpi=110)
                if any(Path(folder).iterdir()):
                    client.log_artifacts(run_id, folder)  # one call: model/ and figures/
            client.set_terminated(run_id, "FINISHED" if status == "ok" else "FAILED")
        except Exception:
            client.set_terminated(run_id, "FAILED")
            raise

    @staticmethod
    def _scores(node, model: str, catalog) -> pd.DataFrame | None:
        name = f"{node.namespace}.{model}_ulira_scores" if node.namespace else f"{model}_ulira_scores"
        try:
            if name not in catalog:
                return None
            return catalog.load(name)
        except Exception:  # no U-LiRA for this scenario, or nothing saved
            return None

    def _log_trials(self, parent, outputs: dict) -> None:
        """One child run per tuning trial of this call (`kind: trial`): the trial's settings as params, the
        objective and its parts as metrics, study, state and scenario/method as tags, so the UI compares trials."""
        result = next((v for v in outputs.values() if isinstance(v, dict) and "trials" in v), None)
        if result is None:
            return
        client = MlflowClient()
        scenario, method = result.get("scenario") or "original", str(result.get("method"))
        for trial in result["trials"]:
            started, seconds = _number(trial.get("started")), _number(trial.get("seconds"))
            timed = started is not None and seconds is not None  # the run spans the trial, not its logging
            run_id = self._child(parent, f"tune · {scenario} · {_label(method)} · trial {trial['number']}",
                                 {"kind": "trial", "scenario": scenario, "method": method,
                                  "study": str(trial["study"]), "trial": str(trial["number"]),
                                  "state": str(trial["state"]), **({"note": trial["note"][:4000]}
                                                                  if trial.get("note") else {})},
                                 start_time=int(started * 1000) if timed else None)
            metrics = [(key, _number(value), 0) for key, value in (trial.get("parts") or {}).items()]
            metrics += [("objective", _number(trial.get("value")), 0), ("seconds", _number(trial.get("seconds")), 0)]
            log_batch(client, run_id, params=_flat_params(trial.get("params") or {}),
                      metrics=[m for m in metrics if m[1] is not None])
            client.set_terminated(run_id, "FINISHED" if trial["state"] != "FAIL" else "FAILED",
                                  end_time=int((started + seconds) * 1000) if timed else None)
        if result.get("settings"):
            mlflow.set_tag(f"tuned.{scenario}.{method}.objective", f"{result['provenance']['objective']:.4g}")

    def _log_seed_summaries(self, parent, outputs: dict) -> None:
        summary = next((v for k, v in outputs.items() if k.endswith("run_summary")), None)
        if not isinstance(summary, pd.DataFrame) or summary.empty or summary["seeds"].max() < 2:
            return
        client = MlflowClient()
        for record in summary.to_dict("records"):
            model, scenario = str(record["model"]), str(record["scenario"])
            run_id = self._child(parent, f"{scenario} · {_label(model)} · {int(record['seeds'])} seeds",
                                 {"scenario": scenario, "application": str(record.get("application", "")),
                                  "method": model, "seed": "all", "kind": "seed summary",
                                  "status": "ok" if not record.get("failed_seeds") else "failed"})
            metrics = [(key, _number(value), 0) for key, value in record.items()
                       if key.endswith(SEED_SUMMARY_SUFFIXES) or key in ("seeds", "failed_seeds")]
            differs = record.get("differs_from_retrain")
            log_batch(client, run_id, metrics=[m for m in metrics if m[1] is not None],
                      tags={"differs_from_retrain": differs} if isinstance(differs, str) else {})
            client.set_terminated(run_id, "FINISHED")
