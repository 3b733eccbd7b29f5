"""Thin Kedro nodes: each unpacks parameters, calls the library, and packs catalog-ready outputs."""

from __future__ import annotations

import logging
import math

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
from ..evaluation import evaluate_model
from ..methods import get_method
from ..models import load_model, model_spec, state_dict_for_saving
from ..training import seed_everything, select_device, train_model
from ..validation import check_scenarios

log = logging.getLogger(__name__)


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
                   seed: int) -> tuple[dict, dict, dict]:
    """Train the Original on the training set (labels as given, RC-confused where configured)."""
    device = _device(runtime)
    options = {k: v for k, v in model.items() if k != "architecture"}
    spec = model_spec(model["architecture"], splits.num_classes, splits.image_shape, splits.mean, splits.std,
                      **options)
    seed_everything(seed)
    from ..models import build_model

    network = build_model(spec)
    info = train_model(network, training_set.x, training_set.labels, training, device, seed,
                       what=f"original[{training_set.name}]", progress=log.info)
    return state_dict_for_saving(network), spec, {"seconds": info["seconds"], "epoch_losses": info["epoch_losses"]}


def make_forget_set(splits: Splits, training_set: TrainingSet, scenario: dict, seed: int) -> pd.DataFrame:
    """The scenario's forget set, as ids with trained and true labels."""
    return build_forget_set(training_set, scenario, splits.num_classes, seed)


def method_parameters(method: str, method_params: dict, scenario: dict) -> dict:
    """The method's parameter block, with the scenario's overrides (`scenario.method_params.<method>`) on top."""
    merged = dict(method_params.get(method) or {})
    merged.update((scenario.get("method_params") or {}).get(method) or {})
    return merged


def run_method(original_weights: dict, original_spec: dict, splits: Splits, training_set: TrainingSet,
               forget_set: pd.DataFrame, scenario: dict, method_params: dict, training: dict, runtime: dict,
               *, method: str, seed: int) -> tuple[dict, dict, dict]:
    """Unlearn the scenario's forget set from the Original with one registered method."""
    device = _device(runtime)
    task = make_task(splits, training_set, forget_set, scenario["application"], seed)
    params = training if method == "retrain" else method_parameters(method, method_params, scenario)
    original = load_model(original_spec, original_weights)
    log.info("%s: unlearning %d examples (%s) on %s", method, len(task.forget_y), scenario["application"], device)
    model, info = get_method(method)(original, task, params, device)
    summary = {k: v for k, v in info.items() if k != "checkpoints"}
    return state_dict_for_saving(model), original_spec, summary


def evaluate_scenario(splits: Splits, training_set: TrainingSet, forget_set: pd.DataFrame, scenario: dict,
                      runtime: dict, *, scenario_name: str, seed: int, **models) -> pd.DataFrame:
    """One row per model of the scenario (`<model>_weights`, `<model>_spec`, `<model>_info` keyword inputs)."""
    device = _device(runtime)
    task = make_task(splits, training_set, forget_set, scenario["application"], seed)
    names = [key[: -len("_weights")] for key in models if key.endswith("_weights")]
    retrain_seconds = models.get("retrain_info", {}).get("seconds", float("nan"))
    rows = []
    for name in names:
        model = load_model(models[f"{name}_spec"], models[f"{name}_weights"])
        info = models[f"{name}_info"]
        row = {"scenario": scenario_name, "application": scenario["application"], "model": name, "seed": seed}
        row.update(evaluate_model(model, task, splits.x["test"], splits.y["test"], device, seed))
        row["seconds"] = info.get("seconds", float("nan"))
        row["scale_up"] = (retrain_seconds / row["seconds"]) if name != "original" and row["seconds"] else math.nan
        row["guard_fired"] = info.get("guard_fired", False)
        row["guard_epoch"] = info.get("guard_epoch")
        rows.append(row)
    return pd.DataFrame(rows)


def build_run_table(seeds: list, **scenario_tables: pd.DataFrame) -> tuple[pd.DataFrame, pd.DataFrame, str, dict]:
    """The run-wide table (one row per scenario and model), its Markdown, and the MLflow metrics
    `<scenario>.<model>.<metric>` (step = seed)."""
    table = pd.concat(list(scenario_tables.values()), ignore_index=True)
    metrics = {}
    skip = {"scenario", "application", "model", "seed", "guard_epoch"}
    for record in table.to_dict("records"):
        for column, value in record.items():
            if column in skip or value is None or isinstance(value, str):
                continue
            if isinstance(value, float) and math.isnan(value):
                continue
            metrics[f"{record['scenario']}.{record['model']}.{column}"] = {
                "value": float(value), "step": int(record["seed"]),
            }
    markdown = table.to_markdown(index=False, floatfmt=".2f")
    print(f"\nRun-wide table (seeds {seeds}):\n{markdown}\n")
    return table, table, markdown, metrics
