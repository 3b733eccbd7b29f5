"""Thin Kedro nodes: each unpacks parameters, calls the library, and packs catalog-ready outputs."""

from __future__ import annotations

import logging
import math
import time

import pandas as pd
import torch

from ..data import (
    RawDataset,
    Splits,
    TrainingSet,
    build_forget_set,
    build_training_set,
    load_dataset,
    make_splits,
    make_task,
)
from ..evaluation import (
    APPLICATION_METRICS,
    BASE_METRICS,
    compare_to_retrain,
    evaluate_model,
    gap_metrics,
    scale_up,
)
from ..evaluation.shadows import ShadowStore, plan_shadows, train_shadows, unlearned_margins
from ..evaluation.ulira import plot_roc
from ..evaluation.ulira import ulira as run_ulira
from ..methods import get_method, method_parameters
from ..models import build_model, load_model, model_spec, state_dict_for_saving
from ..reporting import html_report
from ..training import check_finite, seed_everything, select_device, set_deterministic, train_model
from ..validation import check_scenarios

log = logging.getLogger(__name__)

NO_MODEL: dict = {}  # what a failed method "saves": ModelDataset writes nothing and loads it back as {}


def device_for(runtime: dict) -> torch.device:
    """The configured device (`runtime.device`), after applying `runtime.num_threads` and `runtime.deterministic`."""
    if runtime.get("num_threads"):
        torch.set_num_threads(int(runtime["num_threads"]))
    set_deterministic(bool(runtime.get("deterministic", False)))
    return select_device(runtime.get("device", "auto"))


def load_raw_dataset(dataset: dict) -> RawDataset:
    """Read the configured source into uint8 tensors."""
    raw = load_dataset(dataset)
    log.info("dataset '%s': %d training-source images of shape %s, %d classes",
             raw.name, len(raw.x_train), tuple(raw.image_shape), raw.num_classes)
    return raw


def split_dataset(raw: RawDataset, splits: dict, scenarios: dict, training_sets: dict,
                  seeds: list) -> tuple[Splits, pd.DataFrame]:
    """Fixed splits, then every scenario's forget specification is checked against them before any training."""
    result = make_splits(raw, splits)
    check_scenarios(result, scenarios, training_sets, seeds)
    log.info("splits: %s", {name: len(y) for name, y in result.y.items()})
    return result, result.table()


def prepare_training_set(splits: Splits, training_set: dict, name: str, seed: int) -> tuple[TrainingSet, pd.DataFrame]:
    """The clean training split, or its RC-confused version; the table holds ids and labels only."""
    result = build_training_set(splits, name, training_set, seed)
    return result, result.table()


def train_original(splits: Splits, training_set: TrainingSet, model: dict, training: dict, runtime: dict,
                   seed: int) -> tuple[dict, dict]:
    """Train the Original on the training set (labels as given, RC-confused where configured)."""
    device = device_for(runtime)
    options = {k: v for k, v in model.items() if k != "architecture"}
    spec = model_spec(model["architecture"], splits.num_classes, splits.image_shape, splits.mean, splits.std,
                      **options)
    seed_everything(seed)
    network = build_model(spec)
    info = train_model(network, training_set.x, training_set.labels, training, device, seed,
                       what=f"original[{training_set.name}]", progress=log.info)
    return model_bundle(network), {"seconds": info["seconds"], "epoch_losses": info["epoch_losses"], "status": "ok"}


def model_bundle(model) -> dict:
    """What the catalog's ModelDataset saves: contiguous CPU weights and the architecture spec."""
    return {"weights": state_dict_for_saving(model), "spec": model.spec}


def make_forget_set(splits: Splits, training_set: TrainingSet, scenario: dict, seed: int) -> pd.DataFrame:
    """The scenario's forget set, as ids with trained and true labels."""
    return build_forget_set(training_set, scenario, splits.num_classes, seed)


def _json_safe(info: dict) -> dict:
    """The info dict without checkpoints (they stay in memory for SCRUB+R), with JSON-able keys."""
    out = {}
    for key, value in info.items():
        if key == "checkpoints":
            continue
        out[key] = {str(k): v for k, v in value.items()} if isinstance(value, dict) else value
    return out


def run_method(original: dict, splits: Splits, training_set: TrainingSet, forget_set: pd.DataFrame, scenario: dict,
               method_params: dict, training: dict, runtime: dict, rewound: dict | None = None, *, method: str,
               seed: int) -> tuple[dict, dict, dict]:
    """Unlearn the scenario's forget set from the Original with one registered method.

    Returns (model, info, trajectory for methods that rewind this one). A method that diverges or raises yields
    `NO_MODEL` (nothing is saved) and an info dict with `status: failed` and the reason; the run goes on
    (DESIGN §7)."""
    device = device_for(runtime)
    task = make_task(splits, training_set, forget_set, scenario["application"], seed)
    params = method_parameters(method, method_params, scenario, training)
    registered = get_method(method)
    if registered.rewinds and (rewound is None or rewound.get("status") != "ok"):
        reason = f"{registered.rewinds} failed, so there is no trajectory to rewind"
        log.warning("%s: %s", method, reason)
        failed = {"status": "failed", "failure": reason, "seconds": float("nan")}
        return NO_MODEL, failed, failed
    log.info("%s: unlearning %d examples (%s) on %s", method, len(task.forget_y), scenario["application"], device)
    start = time.perf_counter()
    try:
        extra = (rewound,) if registered.rewinds else ()
        model, info = registered.unlearn(load_model(original["spec"], original["weights"]), task, params, device,
                                         *extra)
        check_finite(model, None, method)
    except Exception as error:  # a failed method is a row, not a crashed run
        if isinstance(error, (KeyboardInterrupt, MemoryError)):
            raise
        reason = f"{type(error).__name__}: {error}"
        log.warning("%s failed after %.1f s: %s", method, time.perf_counter() - start, reason)
        failed = {"status": "failed", "failure": reason, "seconds": time.perf_counter() - start}
        return NO_MODEL, failed, failed
    info = {**info, "status": "ok"}
    return model_bundle(model), _json_safe(info), info


def evaluate_method(model: dict, info: dict, splits: Splits, training_set: TrainingSet,
                    forget_set: pd.DataFrame, scenario: dict, runtime: dict, retrain_row: dict | None = None,
                    retrain_info: dict | None = None, ulira: dict | None = None, *, scenario_name: str, method: str,
                    seed: int) -> tuple[dict, dict]:
    """One table row for (scenario, method) and its MLflow metrics. Gaps, tug-of-war and scale-up compare with
    Retrain's row; a failed method's metrics are NaN and its reason is kept. `ulira`: the method's U-LiRA result
    (UP scenarios with `ulira.enabled`)."""
    application = scenario["application"]
    row = {"scenario": scenario_name, "application": application, "model": method, "seed": seed,
           "status": info.get("status", "ok"), "failure": info.get("failure", "")}
    if not model.get("weights"):
        row.update({m: math.nan for m in (*BASE_METRICS, *APPLICATION_METRICS[application])})
    else:
        device = device_for(runtime)
        task = make_task(splits, training_set, forget_set, application, seed)
        network = load_model(model["spec"], model["weights"])
        row.update(evaluate_model(network, task, splits.x["test"], splits.y["test"], device, seed))
    if ulira is not None:
        row.update({k: ulira.get(k, math.nan) for k in ULIRA_COLUMNS})
    if retrain_row is not None:
        if not model.get("weights") or retrain_row["status"] != "ok":
            row.update({f"{m}_gap": math.nan for m in gap_metrics(application)}, tow=math.nan)
        else:
            row.update(compare_to_retrain(row, retrain_row, application))
        if ulira is not None and "ulira_auc" in retrain_row:
            row["ulira_auc_gap"] = row["ulira_auc"] - retrain_row["ulira_auc"]
    row["seconds"] = float(info.get("seconds", math.nan))
    retrain_seconds = (retrain_info or info).get("seconds", math.nan)
    row["scale_up"] = math.nan if method == "original" else scale_up(retrain_seconds, row["seconds"])
    row["guard_fired"] = bool(info.get("guard_fired", False))
    row["guard_epoch"] = info.get("guard_epoch")
    metrics = {
        key: {"value": float(value), "step": seed}
        for key, value in row.items()
        if isinstance(value, (int, float)) and key not in ("seed", "guard_epoch") and not _isnan(value)
    }
    metrics["failed"] = {"value": float(row["status"] != "ok"), "step": seed}
    return row, metrics


ULIRA_COLUMNS = ("ulira_auc", "ulira_auc_ci_low", "ulira_auc_ci_high", "ulira_acc", "ulira_seconds")


def train_shadow_models(original: dict, splits: Splits, training_set: TrainingSet, forget_set: pd.DataFrame,
                        scenario: dict, ulira: dict, training: dict, runtime: dict, store: ShadowStore, *,
                        seed: int) -> tuple[dict, dict]:
    """U-LiRA's K shadows for this scenario, trained once: a shadow whose inputs did not change comes from the
    store. Returns the shadows (in memory) and a manifest (how many were trained and reused)."""
    device = device_for(runtime)
    task = make_task(splits, training_set, forget_set, scenario["application"], seed)
    forget_ids = torch.as_tensor(forget_set["id"].to_numpy().copy())
    plan = plan_shadows(training_set, forget_ids, task.forget_classes, int(ulira["num_shadows"]), seed,
                        ulira.get("pool_size"))
    states, manifest = train_shadows(training_set, plan, original["spec"], training, store, device,
                                     int(ulira.get("workers") or 0), progress=log.info)
    log.info("U-LiRA shadows: %d trained, %d reused (%.1f s)", manifest["trained"], manifest["reused"],
             manifest["seconds"])
    return {"plan": plan, "states": states, "spec": original["spec"]}, manifest


def attack_method(shadows: dict, splits: Splits, training_set: TrainingSet, forget_set: pd.DataFrame,
                  scenario: dict, method_params: dict, training: dict, ulira: dict, runtime: dict,
                  rewound: list | None = None, *, method: str, seed: int):
    """U-LiRA against one method: every shadow unlearns its F_k with the method (Original: none), then the
    leave-one-shadow-out likelihood-ratio attack. Returns (metrics, per-example scores, ROC figure, the shadows'
    trajectories for a method that rewinds this one)."""
    start = time.perf_counter()
    device = device_for(runtime)
    template = make_task(splits, training_set, forget_set, scenario["application"], seed)
    plan = shadows["plan"]
    unlearn, params, extras = None, {}, None
    if method != "original":
        registered = get_method(method)
        unlearn, params = registered.unlearn, method_parameters(method, method_params, scenario, training)
        if registered.rewinds:
            extras = [(info,) for info in rewound or []]
    try:
        if extras is not None and len(extras) != plan.num_shadows:
            raise RuntimeError(f"{get_method(method).rewinds} has no trajectory on the shadows to rewind")
        phi, infos = unlearned_margins(unlearn, params, shadows["states"], shadows["spec"], training_set, plan,
                                       template, device, int(ulira.get("workers") or 0), extras)
        member, nonmember = plan.masks()
        result = run_ulira(phi, member, nonmember, seed, int(ulira.get("bootstrap", 1000)))
    except Exception as error:  # the method failed on a shadow: NaN attack columns, the run goes on
        if isinstance(error, (KeyboardInterrupt, MemoryError)):
            raise
        log.warning("U-LiRA for %s failed: %s: %s", method, type(error).__name__, error)
        metrics = {k: math.nan for k in ULIRA_COLUMNS}
        metrics.update(ulira_seconds=time.perf_counter() - start, ulira_failure=f"{type(error).__name__}: {error}")
        return metrics, pd.DataFrame(columns=["shadow", "example", "member", "score"]), \
            plot_roc({}, f"U-LiRA: {method} failed"), []
    metrics = {**result.as_metrics(), "ulira_seconds": time.perf_counter() - start}
    log.info("U-LiRA %s: AUC %.3f [%.3f, %.3f]", method, metrics["ulira_auc"], metrics["ulira_auc_ci_low"],
             metrics["ulira_auc_ci_high"])
    scores = result.scores.assign(id=plan.pool_ids.numpy()[result.scores["example"].to_numpy()])
    return metrics, scores, plot_roc({method: result}, f"U-LiRA ROC: {method}"), infos


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def build_scenario_table(**rows: dict) -> pd.DataFrame:
    """The scenario's rows (one per model and seed), in the order given: Original and Retrain first."""
    return pd.DataFrame(list(rows.values()))


KEYS = ["scenario", "application", "model"]


def summarise_seeds(table: pd.DataFrame) -> pd.DataFrame:
    """Mean and standard deviation over seeds of every numeric column, per (scenario, model); a (scenario, model)
    counts as failed when any seed failed."""
    numeric = [c for c in table.columns if c not in (*KEYS, "seed", "status", "failure", "guard_fired", "guard_epoch")
               and pd.api.types.is_numeric_dtype(table[c])]
    grouped = table.groupby(KEYS, sort=False)
    summary = grouped[numeric].agg(["mean", "std"])
    summary.columns = [f"{column}_{stat}" for column, stat in summary.columns]
    summary["seeds"] = grouped["seed"].count()
    summary["failed_seeds"] = grouped["status"].apply(lambda s: int((s != "ok").sum()))
    summary["guard_fired_seeds"] = grouped["guard_fired"].apply(lambda s: int(s.astype(bool).sum()))
    return summary.reset_index()


def build_run_table(seeds: list, **scenario_tables: pd.DataFrame):
    """The run-wide table (one row per scenario, model and seed), printed, with its Markdown; with several seeds
    also the mean ± std summary and its MLflow metrics `<scenario>.<model>.<metric>_mean|_std`."""
    table = pd.concat(list(scenario_tables.values()), ignore_index=True)
    table["failure"] = table["failure"].fillna("")  # CSV reads an empty reason back as NaN
    summary = summarise_seeds(table)
    metrics = {}
    if len(seeds) > 1:
        for record in summary.to_dict("records"):
            for column, value in record.items():
                if column.endswith(("_mean", "_std")) and not _isnan(value):
                    metrics[f"{record['scenario']}.{record['model']}.{column}"] = {"value": float(value), "step": 0}
    shown = table if len(seeds) == 1 else summary
    markdown = shown.to_markdown(index=False, floatfmt=".2f")
    print(f"\nRun-wide table (seeds {seeds}{'' if len(seeds) == 1 else ': mean and std over seeds'}):\n{markdown}\n")
    return table, summary, table, markdown, metrics


def build_run_report(table: pd.DataFrame, **scores: pd.DataFrame) -> str:
    """The run's HTML report: per scenario the forget-vs-test view, metric bars against Retrain, U-LiRA ROC curves
    (`<scenario>__<model>` score tables) and the table."""
    by_scenario: dict[str, dict[str, pd.DataFrame]] = {}
    for key, frame in scores.items():
        scenario, model = key.split("__", 1)
        if len(frame):
            by_scenario.setdefault(scenario, {})[model] = frame
    return html_report(table, "Unlearning run", scores_by_scenario=by_scenario or None)
