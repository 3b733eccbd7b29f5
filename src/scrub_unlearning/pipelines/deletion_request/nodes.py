"""Deletion-request nodes, one job each: read the request -> build its task -> unlearn -> evaluate (and audit with
U-LiRA when enabled) -> gates -> register -> record in the ledger -> report. A request the ledger already holds is a
no-op that every node passes through.

Every output between these nodes is a file (JSON, or a model folder; `request_*` in conf/base/catalog.yml), so each
node can run in its own process (one Airflow task per node). Nothing between them holds tensors: a node that needs
the request's retain/forget tensors rebuilds them from the splits with `request_task` (the one place that does)."""

from __future__ import annotations

import logging
import math

import pandas as pd
import torch

from ...data import Splits, TrainingSet, UnlearningTask, build_training_set, make_task
from ...evaluation import basic_mia, per_example_loss
from ...evaluation.attack import prepare_shadows, ulira_attack
from ...evaluation.shadows import ShadowStore
from ...methods import method_parameters, run_order
from ...methods.runner import run_with_rewound, unlearner
from ...mlflow_edge import model_registry
from ...models import ModelBundle
from ...reporting import request_report
from ...serving import DeletionRequest, Ledger, read_request, set_hash, validate_request
from ...serving.ledger import ledger_key
from ...training import configure_runtime, error_percent, model_error, predict_logits

log = logging.getLogger(__name__)


def request_ledger(request: dict) -> Ledger:
    """The ledger the `deletion_request` parameters name (its key from SCRUB_LEDGER_KEY or the key file)."""
    return Ledger(request["ledger_path"], ledger_key(key_file=request.get("ledger_key_file")))


def _skipped(request_id: str) -> dict:
    return {"request_id": request_id, "skip": True}


def _same_request(*parts: dict) -> str:
    """The request id these node outputs share; an error when a file left by another request is read (a stage run
    by hand, or a stale output)."""
    ids = {part["request_id"] for part in parts}
    if len(ids) != 1:
        raise ValueError(f"the deletion-request stages' outputs belong to different requests {sorted(ids)}: rerun "
                         f"the request from prepare_request")
    return ids.pop()


def _params_of(request: dict, method_params: dict, training: dict):
    """Each method's parameters for requests: its block with the request's overrides on top."""
    scenario = {"application": "up", "method_params": request.get("method_params") or {}}
    return lambda name: method_parameters(name, method_params, scenario, training)


def _forgotten_before(ledger: Ledger, splits: Splits) -> list[int]:
    return sorted(ledger.forgotten_ids(splits.ids["train"].tolist()))


def request_task(splits: Splits, task: dict, request: dict) -> tuple[TrainingSet, UnlearningTask]:
    """The request's tensors, rebuilt from the splits: the clean training set without every id forgotten before
    this request (retain), and the request's ids (forget). Checks that the ledger still holds what it held when
    the task was built (its count and keyed set hash; the ids are never written in clear), so every stage sees the
    same retain set even when it runs in another process later."""
    ledger = request_ledger(request)
    forgotten = _forgotten_before(ledger, splits)
    pinned = task["forgotten_before"]
    if len(forgotten) != pinned["count"] or set_hash(ledger.key, forgotten) != pinned["set_hash"]:
        raise RuntimeError(
            f"request {task['request_id']}: the ledger changed since its task was built ({pinned['count']} ids "
            f"forgotten then, {len(forgotten)} now): another request was served in between; rerun this request "
            f"from prepare_request")
    seed = int(request.get("seed", 1))
    training_set = build_training_set(splits, "clean", None, seed)
    keep = ~torch.isin(training_set.ids, torch.tensor(forgotten, dtype=torch.int64))
    training_set = TrainingSet("clean", training_set.ids[keep], training_set.x[keep], training_set.labels[keep],
                               training_set.true_labels[keep])
    ids = torch.tensor(task["ids"], dtype=torch.int64)
    position = torch.searchsorted(training_set.ids, ids)
    table = pd.DataFrame({"id": ids.numpy(), "label": training_set.labels[position].numpy(),
                          "true_label": training_set.true_labels[position].numpy()})
    return training_set, make_task(splits, training_set, table, "up", seed)


def screen_request(path, ledger: Ledger, training_ids) -> tuple[DeletionRequest, dict | None]:
    """Read a request and, unless the ledger already holds it (then its earlier entry is returned), validate it
    against the training ids and what was forgotten so far: the one check the pipeline and the operators'
    command (`serve_requests`) both make before anything trains."""
    deletion = read_request(path)
    earlier = ledger.find(deletion.request_id, deletion.ids)
    if earlier is None:
        validate_request(deletion, training_ids, ledger.forgotten_ids(deletion.ids))
    return deletion, earlier


def prepare_request(splits: Splits, request: dict) -> dict:
    """Read and validate the request before anything trains: unknown ids, duplicates, an empty request or ids
    already forgotten fail with a clear error; a request already processed is recorded as a no-op."""
    deletion, earlier = screen_request(request["path"], request_ledger(request), splits.ids["train"])
    if earlier is not None:
        log.info("request %s was processed at %s: nothing to do", deletion.request_id, earlier["time"])
        return {"request_id": deletion.request_id, "skip": True, "earlier": earlier}
    return {"request_id": deletion.request_id, "skip": False, "ids": deletion.ids.tolist()}


def build_request_task(splits: Splits, prepared: dict, request: dict) -> dict:
    """The request's task as JSON: its ids, and the ids forgotten before it pinned by count and keyed set hash
    (`request_task` rebuilds the tensors from these wherever they are needed)."""
    if prepared["skip"]:
        return _skipped(prepared["request_id"])
    ledger = request_ledger(request)
    forgotten = _forgotten_before(ledger, splits)
    task = {"request_id": prepared["request_id"], "skip": False, "ids": prepared["ids"],
            "forgotten_before": {"count": len(forgotten), "set_hash": set_hash(ledger.key, forgotten)}}
    _, built = request_task(splits, task, request)  # fails here, not three stages later
    log.info("request %s: forget %d ids, retain %d (%d forgotten by earlier requests)", task["request_id"],
             len(built.forget_y), len(built.retain_y), len(forgotten))
    return task


def unlearn_request(splits: Splits, task: dict, request: dict, registry_config: dict, method_params: dict,
                    training: dict, runtime: dict) -> tuple[dict, ModelBundle, ModelBundle]:
    """Unlearn the request's ids from the serving version with the configured method (a method that rewinds runs
    the method it rewinds first: SCRUB+R runs SCRUB). Returns the outcome and the models before and after. A failed
    method stops here: nothing is registered."""
    if task["skip"]:
        return _skipped(task["request_id"]), ModelBundle(), ModelBundle()
    name, alias = registry_config["model_name"], registry_config.get("alias", "serving")
    before = model_registry.serving_version(name, alias)
    if before is None:
        raise ValueError(f"no version of '{name}' carries the alias '{alias}': run `kedro run` first")
    serving = model_registry.load_registered(name, before)
    method = request.get("method", "scrub_r")
    _, built = request_task(splits, task, request)
    result = run_with_rewound(method, serving.load(), built, _params_of(request, method_params, training),
                              configure_runtime(runtime))
    if not result.ok:
        raise RuntimeError(f"request {task['request_id']}: {method} failed, nothing registered: {result.failure}")
    log.info("request %s: %s unlearned %d ids in %.1f s", task["request_id"], method, len(built.forget_y),
             result.seconds)
    outcome = {"request_id": task["request_id"], "skip": False, "version_before": before, "method": method,
               "seconds": result.seconds, "row_fields": result.row_fields()}
    return outcome, serving, ModelBundle.of(result.model)


def _compare(model, task: UnlearningTask, splits: Splits, seed: int) -> dict:
    forget_classes = torch.isin(splits.y["test"], torch.tensor(task.forget_classes))
    forget_logits = predict_logits(model, task.forget_x)
    test_logits = predict_logits(model, splits.x["test"])
    mia, _ = basic_mia(per_example_loss(forget_logits, task.forget_y),
                       per_example_loss(test_logits[forget_classes], splits.y["test"][forget_classes]), seed)
    return {
        "forget_error": error_percent(forget_logits, task.forget_y),
        "held_out_error_same_classes": error_percent(test_logits[forget_classes], splits.y["test"][forget_classes]),
        "retain_error": model_error(model, task.retain_x, task.retain_y),
        "test_error": error_percent(test_logits, splits.y["test"]),
        "mia_basic": mia,
    }


def evaluate_request(splits: Splits, task: dict, result: dict, before: ModelBundle, after: ModelBundle,
                     request: dict) -> dict:
    """The unlearned model against the version it replaces: forget error vs held-out error of the same classes,
    retain and test error, basic MIA."""
    if result["skip"]:
        return _skipped(result["request_id"])
    _same_request(task, result)
    seed = int(request.get("seed", 1))
    _, built = request_task(splits, task, request)
    return {"request_id": task["request_id"], "skip": False, "before": _compare(before.load(), built, splits, seed),
            "after": _compare(after.load(), built, splits, seed)}


def audit_request(splits: Splits, task: dict, result: dict, before: ModelBundle, request: dict, method_params: dict,
                  training: dict, runtime: dict) -> dict:
    """U-LiRA for the request (`deletion_request.ulira.enabled`; {} when off): shadows of the serving model's
    architecture trained with the Original's recipe on the same retain data, a pool of 2x the request from its
    classes, the request's method unlearning F_k from every shadow."""
    config = request.get("ulira") or {}
    if result["skip"] or not config.get("enabled"):
        return {}
    _same_request(task, result)
    seed, workers = int(request.get("seed", 1)), int(config.get("workers") or 0)
    device = configure_runtime(runtime)
    training_set, built = request_task(splits, task, request)
    shadows, _ = prepare_shadows(training_set, torch.tensor(task["ids"]), built.forget_classes, before.spec,
                                 training, ShadowStore(config["shadow_store"]), device,
                                 num_shadows=int(config.get("num_shadows", 16)), seed=seed, workers=workers,
                                 progress=log.info)
    params_of = _params_of(request, method_params, training)
    outcome = None
    for name in run_order(result["method"]):  # SCRUB+R rewinds the shadows' SCRUB runs
        outcome = ulira_attack(shadows, training_set, built, unlearner(name, params_of(name)), device, seed=seed,
                               bootstrap=int(config.get("bootstrap", 1000)), workers=workers,
                               rewound=outcome.per_shadow if outcome else None, name=name)
    return {k: v for k, v in outcome.metrics.items() if k != "ulira_seconds"}


def check_gates(comparison: dict, audit: dict, request: dict) -> dict:
    """Each configured gate: passed or not, with the numbers. Off (`enabled: false`) = every gate passes."""
    gates = request.get("gates") or {}
    results = {}
    if comparison["skip"] or not gates.get("enabled", False):
        return {"enabled": False, "passed": True, "checks": results}
    before, after = comparison["before"], {**comparison["after"], **audit}
    if gates.get("max_test_error_increase") is not None:
        rise = after["test_error"] - before["test_error"]
        results["test_error_increase"] = {"value": rise, "limit": gates["max_test_error_increase"],
                                          "passed": rise <= gates["max_test_error_increase"]}
    if gates.get("max_ulira_auc") is not None and "ulira_auc" in after:
        results["ulira_auc"] = {"value": after["ulira_auc"], "limit": gates["max_ulira_auc"],
                                "passed": after["ulira_auc"] <= gates["max_ulira_auc"]}
    if gates.get("mia_band") is not None:
        low, high = gates["mia_band"]
        results["mia_basic_in_band"] = {"value": after["mia_basic"], "limit": [low, high],
                                        "passed": low <= after["mia_basic"] <= high}
    return {"enabled": True, "passed": all(r["passed"] for r in results.values()), "checks": results}


def register_candidate(result: dict, after: ModelBundle, comparison: dict, audit: dict, gates: dict,
                       registry_config: dict) -> dict:
    """Register the unlearned model (tags: request, method, the version it replaces, gates; metrics as tags) and
    move the serving alias to it only when the gates passed."""
    if result["skip"]:
        return _skipped(result["request_id"])
    request_id = _same_request(result, comparison)
    name, alias = registry_config["model_name"], registry_config.get("alias", "serving")
    tags = {"role": "unlearned", "request_id": request_id, "method": result["method"],
            "replaces_version": result["version_before"], "gates_passed": gates["passed"],
            **{k: v for k, v in result["row_fields"].items() if k not in ("status", "failure", "seconds")}}
    example = model_registry.input_example_of(name, result["version_before"])  # the version it replaces: test images
    version = model_registry.register_model(after, name, tags, {**comparison["after"], **audit}, input_example=example)
    if gates["passed"]:
        model_registry.promote(name, version, alias)
        log.info("request %s: version %s passed the gates and now serves", request_id, version)
    else:
        failed = [k for k, v in gates["checks"].items() if not v["passed"]]
        log.warning("request %s: version %s registered but NOT promoted; failed gates: %s", request_id, version,
                    failed)
    return {"request_id": request_id, "skip": False, "version": version, "promoted": gates["passed"],
            "alias": alias}


def record_request(prepared: dict, result: dict, comparison: dict, audit: dict, gates: dict, registration: dict,
                   request: dict) -> dict:
    """Record the request in the HMAC ledger (keyed hashes of the ids, never the ids) and return its summary; a
    no-op request's summary points to the earlier processing."""
    if prepared["skip"]:
        earlier = prepared["earlier"]
        return {"request_id": prepared["request_id"], "skipped": True,
                "reason": f"already processed at {earlier['time']}", **earlier}
    _same_request(prepared, result, comparison, registration)
    entry = request_ledger(request).record(prepared["request_id"], prepared["ids"], result["version_before"],
                                           registration["version"], gates, registration["promoted"],
                                           result["method"])
    return {"request_id": prepared["request_id"], "skipped": False, "count": len(prepared["ids"]),
            "method": result["method"], "version_before": result["version_before"],
            "version_after": registration["version"], "promoted": registration["promoted"], "gates": gates,
            "before": comparison["before"], "after": {**comparison["after"], **audit},
            "seconds": result["seconds"], "ledger_time": entry["time"]}


def build_request_report(summary: dict) -> tuple[str, str, dict]:
    """The request's HTML report (local copy and MLflow copy) and its MLflow metrics `request.<side>.<metric>`."""
    html = request_report(summary)
    metrics = {} if summary["skipped"] else {
        f"request.{side}.{k}": {"value": float(v), "step": 0}
        for side in ("before", "after") for k, v in summary[side].items()
        if not (isinstance(v, float) and math.isnan(v))}
    return html, html, metrics
