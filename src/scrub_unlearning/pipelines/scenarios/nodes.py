"""Scenario nodes: the forget set, every method through the runner, U-LiRA through the attack orchestrator, one
evaluation per model and the scenario's table. Each node unpacks parameters, calls the library and packs what the
catalog stores."""

from __future__ import annotations

import logging
import math

import pandas as pd
import torch

from ...data import Splits, TrainingSet, build_forget_set, make_task
from ...evaluation import APPLICATION_METRICS, BASE_METRICS, compare_to_retrain, evaluate_model, gap_metrics, scale_up
from ...evaluation.attack import (
    AttackResult,
    Shadows,
    attack_row_metrics,
    compare_attacks,
    prepare_shadows,
    ulira_attack,
)
from ...evaluation.shadows import ShadowStore
from ...methods import get_method, method_parameters
from ...methods.runner import MethodResult, info_row_fields, unlearner
from ...methods.runner import run_method as run_registered_method
from ...models import ModelBundle
from ...models.store import WeightStore
from ...training import configure_runtime
from ..common import reuse_store

log = logging.getLogger(__name__)


def make_forget_set(splits: Splits, training_set: TrainingSet, scenario: dict, seed: int) -> pd.DataFrame:
    """The scenario's forget set, as ids with trained and true labels."""
    return build_forget_set(training_set, scenario, splits.num_classes, seed)


def run_method(original: ModelBundle, splits: Splits, training_set: TrainingSet, forget_set: pd.DataFrame,
               scenario: dict, method_params: dict, training: dict, runtime: dict,
               store: WeightStore | None = None, rewound: MethodResult | None = None, *, method: str, seed: int,
               hand_over: bool = False):
    """Unlearn the scenario's forget set from the Original with one registered method. Returns the model (empty
    when the method failed: nothing is saved, the run goes on) and its info (with the parameters it ran with); with
    `hand_over`, also the result itself, for the method that rewinds this one. A result whose inputs did not change
    comes from the run's model store (`runtime.reuse_models`)."""
    device = configure_runtime(runtime)
    task = make_task(splits, training_set, forget_set, scenario["application"], seed)
    params = method_parameters(method, method_params, scenario, training)
    log.info("%s: unlearning %d examples (%s) on %s", method, len(task.forget_y), scenario["application"], device)
    result = run_registered_method(method, original.load(), task, params, device, rewound, reuse_store(runtime, store))
    if result.info.get("reused"):
        log.info("%s: reused from the model store (computed in %.1f s)", method, result.seconds)
    elif result.ok:
        log.info("%s: done in %.1f s", method, result.seconds)
    else:
        log.warning("%s failed: %s", method, result.failure)
    outputs = (ModelBundle.of(result.model), {**result.info, "parameters": params})
    return (*outputs, result) if hand_over else outputs


def train_shadow_models(original: ModelBundle, splits: Splits, training_set: TrainingSet, forget_set: pd.DataFrame,
                        scenario: dict, ulira: dict, training: dict, runtime: dict, store: ShadowStore, *,
                        seed: int) -> tuple[Shadows, dict]:
    """U-LiRA's K shadows for this scenario, trained once: a shadow whose inputs did not change comes from the
    store. Returns the shadows (in memory) and a manifest (how many were trained and reused)."""
    device = configure_runtime(runtime)
    task = make_task(splits, training_set, forget_set, scenario["application"], seed)
    forget_ids = torch.as_tensor(forget_set["id"].to_numpy().copy())
    shadows, manifest = prepare_shadows(
        training_set, forget_ids, task.forget_classes, original.spec, training, store, device,
        num_shadows=int(ulira["num_shadows"]), seed=seed, pool_size=ulira.get("pool_size"),
        workers=int(ulira.get("workers") or 0), progress=log.info)
    log.info("U-LiRA shadows: %d trained, %d reused (%.1f s)", manifest["trained"], manifest["reused"],
             manifest["seconds"])
    return shadows, manifest


def attack_method(shadows: Shadows, splits: Splits, training_set: TrainingSet, forget_set: pd.DataFrame,
                  scenario: dict, method_params: dict, training: dict, ulira: dict, runtime: dict,
                  rewound: list | None = None, reference_scores: pd.DataFrame | None = None,
                  rewound_scores: pd.DataFrame | None = None, store: WeightStore | None = None, *, method: str,
                  seed: int, hand_over: bool = False):
    """U-LiRA against one model: every shadow unlearns its F_k with the method (Original: none), then the
    leave-one-shadow-out attack. Returns the metrics and the per-example scores (the model's MLflow child run draws
    its ROC from them); with `hand_over`, also the per-shadow results, for the method that rewinds this one.
    `reference_scores` (Retrain's scores on the same shadows) adds KLoM and the paired interval of the AUC gap to
    Retrain; `rewound_scores` (the rewound method's) adds the paired AUC difference to it (`compare_attacks`)."""
    device = configure_runtime(runtime)
    template = make_task(splits, training_set, forget_set, scenario["application"], seed)
    unlearn = None
    if method != "original":
        unlearn = unlearner(method, method_parameters(method, method_params, scenario, training),
                            reuse_store(runtime, store))
    result: AttackResult = ulira_attack(
        shadows, training_set, template, unlearn, device, seed=seed, bootstrap=int(ulira.get("bootstrap", 1000)),
        workers=int(ulira.get("workers") or 0), rewound=rewound, name=method)
    if result.ok:
        metrics = result.metrics
        log.info("U-LiRA %s: AUC %.3f [%.3f, %.3f]", method, metrics["ulira_auc"], metrics["ulira_auc_ci_low"],
                 metrics["ulira_auc_ci_high"])
    else:
        log.warning("U-LiRA for %s failed: %s", method, result.failure)
    if method != "retrain":
        rewound_name = get_method(method).rewinds if method != "original" else None
        try:
            result.metrics.update(compare_attacks(
                result.scores, reference_scores, seed=seed, bootstrap=int(ulira.get("bootstrap", 1000)),
                rewound_scores=rewound_scores, name=method, rewound_name=rewound_name))
        except ValueError as error:  # not the same shadows: no comparison, the run goes on
            log.warning("U-LiRA comparisons for %s skipped: %s", method, error)
    outputs = (result.metrics, result.scores)
    return (*outputs, result.per_shadow) if hand_over else outputs


def collect_ulira_scores(**scores: pd.DataFrame) -> pd.DataFrame:
    """Every model's per-example U-LiRA scores of this scenario and seed in one table (column `model`), for the
    report."""
    frames = [frame.assign(model=model) for model, frame in scores.items() if len(frame)]
    return pd.concat(frames, ignore_index=True) if frames else pd.DataFrame(columns=["model", "member", "score"])


def evaluate_method(model: ModelBundle, info: dict, splits: Splits, training_set: TrainingSet,
                    forget_set: pd.DataFrame, scenario: dict, runtime: dict, retrain_row: dict | None = None,
                    retrain_info: dict | None = None, ulira: dict | None = None, *, scenario_name: str, method: str,
                    seed: int) -> dict:
    """One table row for (scenario, model); the model's MLflow child run is made from it. Gaps, tug-of-war and
    scale-up compare with Retrain's row; a failed method's metrics are NaN and its reason is kept. `ulira`: the
    model's U-LiRA metrics (UP scenarios with `ulira.enabled`)."""
    application = scenario["application"]
    row = {"scenario": scenario_name, "application": application, "model": method, "seed": seed,
           "status": info.get("status", "ok"), "failure": info.get("failure", "")}
    if not model.present:
        row.update({m: math.nan for m in (*BASE_METRICS, *APPLICATION_METRICS[application])})
    else:
        device = configure_runtime(runtime)
        task = make_task(splits, training_set, forget_set, application, seed)
        row.update(evaluate_model(model.load(), task, splits.x["test"], splits.y["test"], device, seed))
    if ulira is not None:
        row.update(attack_row_metrics(ulira))
    if retrain_row is not None:
        if not model.present or retrain_row["status"] != "ok":
            row.update({f"{m}_gap": math.nan for m in gap_metrics(application)}, tow=math.nan)
        else:
            row.update(compare_to_retrain(row, retrain_row, application))
        if ulira is not None and "ulira_auc" in retrain_row:
            row["ulira_auc_gap"] = row["ulira_auc"] - retrain_row["ulira_auc"]
    row["seconds"] = float(info.get("seconds", math.nan))
    retrain_seconds = (retrain_info or info).get("seconds", math.nan)
    row["scale_up"] = math.nan if method == "original" else scale_up(retrain_seconds, row["seconds"])
    row.update(info_row_fields(method, info))
    return row


def build_scenario_table(**rows: dict) -> pd.DataFrame:
    """The scenario's rows (one per model and seed), in the order given: Original and Retrain first."""
    return pd.DataFrame(list(rows.values()))
