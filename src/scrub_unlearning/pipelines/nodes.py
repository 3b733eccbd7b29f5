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
from ..methods import get_method
from ..models import build_model, load_model, model_spec, state_dict_for_saving
from ..training import check_finite, seed_everything, select_device, train_model
from ..validation import check_scenarios

log = logging.getLogger(__name__)

NO_MODEL: dict = {}  # what a failed method "saves": ModelDataset writes nothing and loads it back as {}


def _device(runtime: dict) -> torch.device:
    if runtime.get("num_threads"):
        torch.set_num_threads(int(runtime["num_threads"]))
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
    device = _device(runtime)
    options = {k: v for k, v in model.items() if k != "architecture"}
    spec = model_spec(model["architecture"], splits.num_classes, splits.image_shape, splits.mean, splits.std,
                      **options)
    seed_everything(seed)
    network = build_model(spec)
    info = train_model(network, training_set.x, training_set.labels, training, device, seed,
                       what=f"original[{training_set.name}]", progress=log.info)
    return _bundle(network), {"seconds": info["seconds"], "epoch_losses": info["epoch_losses"], "status": "ok"}


def _bundle(model) -> dict:
    return {"weights": state_dict_for_saving(model), "spec": model.spec}


def make_forget_set(splits: Splits, training_set: TrainingSet, scenario: dict, seed: int) -> pd.DataFrame:
    """The scenario's forget set, as ids with trained and true labels."""
    return build_forget_set(training_set, scenario, splits.num_classes, seed)


def method_parameters(method: str, method_params: dict, scenario: dict, training: dict) -> dict:
    """The method's parameter block with the scenario's overrides (`scenario.method_params.<method>`) on top;
    Retrain takes the Original's recipe."""
    if method == "retrain":
        return dict(training)
    merged = dict(method_params.get(method) or {})
    merged.update((scenario.get("method_params") or {}).get(method) or {})
    for name in get_method(method).from_training:
        if merged.get(name) is None:
            merged[name] = training[name]
    return merged


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
    device = _device(runtime)
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
    return _bundle(model), _json_safe(info), info


def evaluate_method(model: dict, info: dict, splits: Splits, training_set: TrainingSet,
                    forget_set: pd.DataFrame, scenario: dict, runtime: dict, retrain_row: dict | None = None,
                    retrain_info: dict | None = None, *, scenario_name: str, method: str,
                    seed: int) -> tuple[dict, dict]:
    """One table row for (scenario, method) and its MLflow metrics. Gaps, tug-of-war and scale-up compare with
    Retrain's row; a failed method's metrics are NaN and its reason is kept."""
    application = scenario["application"]
    row = {"scenario": scenario_name, "application": application, "model": method, "seed": seed,
           "status": info.get("status", "ok"), "failure": info.get("failure", "")}
    if not model.get("weights"):
        row.update({m: math.nan for m in (*BASE_METRICS, *APPLICATION_METRICS[application])})
    else:
        device = _device(runtime)
        task = make_task(splits, training_set, forget_set, application, seed)
        network = load_model(model["spec"], model["weights"])
        row.update(evaluate_model(network, task, splits.x["test"], splits.y["test"], device, seed))
    if retrain_row is not None:
        if not model.get("weights") or retrain_row["status"] != "ok":
            row.update({f"{m}_gap": math.nan for m in gap_metrics(application)}, tow=math.nan)
        else:
            row.update(compare_to_retrain(row, retrain_row, application))
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


def _isnan(value) -> bool:
    return isinstance(value, float) and math.isnan(value)


def build_scenario_table(**rows: dict) -> pd.DataFrame:
    """The scenario's rows, Original and Retrain first."""
    return pd.DataFrame(list(rows.values()))


def build_run_table(seeds: list, **scenario_tables: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str]:
    """The run-wide table (one row per scenario and model), printed, with its Markdown."""
    table = pd.concat(list(scenario_tables.values()), ignore_index=True)
    table["failure"] = table["failure"].fillna("")  # CSV reads an empty reason back as NaN
    markdown = table.to_markdown(index=False, floatfmt=".2f")
    print(f"\nRun-wide table (seeds {seeds}):\n{markdown}\n")
    return table, table, markdown
