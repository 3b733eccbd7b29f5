"""Serving deletion requests: register the Original, then `kedro run --pipelines=deletion_request` takes a request
(a CSV of example ids), unlearns them from the serving version, compares the result with the version it would
replace, applies the quality gates, registers the result (promoted only when the gates pass) and records the request
in the HMAC ledger. A request already in the ledger is a no-op."""

from __future__ import annotations

import logging
import math
import time
from html import escape

import pandas as pd
import torch
from kedro.pipeline import Pipeline, node

from ..data import Splits, TrainingSet, UnlearningTask, build_training_set, make_task
from ..evaluation import basic_mia, per_example_loss
from ..methods import get_method, method_parameters
from ..models import load_model
from ..reporting import html_report
from ..serving import Ledger, read_request, validate_request
from ..serving.ledger import ledger_key
from ..training import error_percent, model_error, predict_logits
from . import nodes, registry

log = logging.getLogger(__name__)


def _ledger(config: dict) -> Ledger:
    key = ledger_key(key_file=config.get("ledger_key_file"))
    return Ledger(config["ledger_path"], key)


def register_original(original: dict, splits: Splits, split_table: pd.DataFrame, dataset: dict, training: dict,
                      registry_config: dict) -> dict:
    """Register the clean training set's Original (data version, parameters, validation/test error as version
    tags) and make it the serving version when the registry has none (`serve_original: if_none`) or always."""
    model = load_model(original["spec"], original["weights"])
    metrics = {"val_error": model_error(model, splits.x["val"], splits.y["val"]),
               "test_error": model_error(model, splits.x["test"], splits.y["test"])}
    data_version = pd.util.hash_pandas_object(split_table, index=False).sum()
    tags = {"role": "original", "dataset": dataset.get("source"),
            "data_version": f"{int(data_version) & (2**63 - 1):x}", "training": str(training)}
    name, alias = registry_config["model_name"], registry_config.get("alias", "serving")
    version = registry.register_model(original, name, tags, metrics)
    rule = registry_config.get("serve_original", "if_none")
    if rule == "always" or (rule == "if_none" and registry.serving_version(name, alias) is None):
        registry.promote(name, version, alias)
    log.info("registered %s version %s (serving: %s)", name, version, registry.serving_version(name, alias))
    return {"model_name": name, "version": version, "serving": registry.serving_version(name, alias), **metrics}


def prepare_request(splits: Splits, request: dict) -> dict:
    """Read and validate the request before anything trains: unknown ids, duplicates, an empty request or ids
    already forgotten fail with a clear error; a request already processed is recorded as a no-op."""
    deletion = read_request(request["path"])
    ledger = _ledger(request)
    earlier = ledger.find(deletion.request_id, deletion.ids)
    if earlier is not None:
        log.info("request %s was processed at %s: nothing to do", deletion.request_id, earlier["time"])
        return {"request_id": deletion.request_id, "skip": True, "earlier": earlier}
    validate_request(deletion, splits.ids["train"], ledger.forgotten_ids(splits.ids["train"].tolist()))
    return {"request_id": deletion.request_id, "skip": False, "ids": deletion.ids.tolist()}


def _request_task(splits: Splits, request: dict, forgotten: set[int], seed: int) -> tuple[TrainingSet, UnlearningTask]:
    """Retain = the clean training set without every id forgotten so far; forget = this request's ids."""
    training_set = build_training_set(splits, "clean", None, seed)
    keep = ~torch.isin(training_set.ids, torch.tensor(sorted(forgotten), dtype=torch.int64))
    training_set = TrainingSet("clean", training_set.ids[keep], training_set.x[keep], training_set.labels[keep],
                               training_set.true_labels[keep])
    ids = torch.tensor(request["ids"], dtype=torch.int64)
    position = torch.searchsorted(training_set.ids, ids)
    table = pd.DataFrame({"id": ids.numpy(), "label": training_set.labels[position].numpy(),
                          "true_label": training_set.true_labels[position].numpy()})
    return training_set, make_task(splits, training_set, table, "up", seed)


def unlearn_request(splits: Splits, prepared: dict, request: dict, registry_config: dict, method_params: dict,
                    training: dict, runtime: dict) -> dict:
    """Unlearn the request's ids from the serving version with the configured method (a method that rewinds runs
    the method it rewinds first: SCRUB+R runs SCRUB)."""
    if prepared["skip"]:
        return {"skip": True}
    name, alias = registry_config["model_name"], registry_config.get("alias", "serving")
    before = registry.serving_version(name, alias)
    if before is None:
        raise ValueError(f"no version of '{name}' carries the alias '{alias}': run `kedro run` first")
    serving = registry.load_registered(name, before)
    forgotten = _ledger(request).forgotten_ids(splits.ids["train"].tolist())
    _, task = _request_task(splits, prepared, forgotten, int(request.get("seed", 1)))
    device = nodes.device_for(runtime)
    method = request.get("method", "scrub_r")
    scenario = {"application": "up", "method_params": request.get("method_params") or {}}
    registered = get_method(method)
    start = time.perf_counter()
    extra = ()
    if registered.rewinds:
        params = method_parameters(registered.rewinds, method_params, scenario, training)
        _, rewound_info = get_method(registered.rewinds).unlearn(load_model(serving["spec"], serving["weights"]),
                                                                 task, params, device)
        extra = (rewound_info,)
    params = method_parameters(method, method_params, scenario, training)
    model, info = registered.unlearn(load_model(serving["spec"], serving["weights"]), task, params, device, *extra)
    log.info("request %s: %s unlearned %d ids in %.1f s", prepared["request_id"], method, len(task.forget_y),
             time.perf_counter() - start)
    return {"skip": False, "version_before": before, "before": serving, "after": nodes.model_bundle(model),
            "method": method, "seconds": time.perf_counter() - start,
            "guard_fired": bool(info.get("guard_fired", False)), "forgotten_before": sorted(forgotten)}


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


def request_ulira(splits: Splits, prepared: dict, result: dict, request: dict, method_params: dict, training: dict,
                  runtime: dict) -> dict:
    """U-LiRA for the request (`deletion_request.ulira.enabled`): shadows of the serving model's architecture
    trained with the Original's recipe on the same retain data, a pool of 2x the request from its classes, the
    request's method unlearning F_k from every shadow; returns ulira_auc with its interval and ulira_acc."""
    from ..evaluation.shadows import ShadowStore, plan_shadows, train_shadows, unlearned_margins
    from ..evaluation.ulira import ulira

    config = request.get("ulira") or {}
    seed = int(request.get("seed", 1))
    device = nodes.device_for(runtime)
    training_set, task = _request_task(splits, prepared, set(result["forgotten_before"]), seed)
    plan = plan_shadows(training_set, torch.tensor(prepared["ids"]), task.forget_classes,
                        int(config.get("num_shadows", 16)), seed)
    store = ShadowStore(config["shadow_store"])
    states, _ = train_shadows(training_set, plan, result["before"]["spec"], training, store, device,
                              int(config.get("workers") or 0), progress=log.info)
    method = get_method(result["method"])
    extras = None
    if method.rewinds:
        params = method_parameters(method.rewinds, method_params, {"method_params": {}}, training)
        _, infos = unlearned_margins(get_method(method.rewinds).unlearn, params, states, result["before"]["spec"],
                                     training_set, plan, task, device, int(config.get("workers") or 0))
        extras = [(info,) for info in infos]
    params = method_parameters(result["method"], method_params,
                                     {"method_params": request.get("method_params") or {}}, training)
    phi, _ = unlearned_margins(method.unlearn, params, states, result["before"]["spec"], training_set, plan, task,
                               device, int(config.get("workers") or 0), extras)
    member, nonmember = plan.masks()
    return ulira(phi, member, nonmember, seed, int(config.get("bootstrap", 1000))).as_metrics()


def check_gates(before: dict, after: dict, gates: dict) -> dict:
    """Each configured gate: passed or not, with the numbers. Off (`enabled: false`) = every gate passes."""
    results = {}
    if not gates.get("enabled", False):
        return {"enabled": False, "passed": True, "checks": results}
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


def evaluate_and_register(splits: Splits, prepared: dict, result: dict, request: dict, registry_config: dict,
                          method_params: dict, training: dict, runtime: dict) -> tuple[dict, str, str, dict]:
    """Compare the unlearned model with the version it replaces (and U-LiRA when enabled), apply the gates, register
    it (promoted only when the gates pass), record the request in the ledger, and write the report."""
    if prepared["skip"]:
        earlier = prepared["earlier"]
        summary = {"request_id": prepared["request_id"], "skipped": True,
                   "reason": f"already processed at {earlier['time']}", **earlier}
        section = (f"<p>Request {escape(prepared['request_id'])} was processed at {escape(str(earlier['time']))}: "
                   f"version {escape(str(earlier['version_before']))} → {escape(str(earlier['version_after']))} "
                   f"({'promoted' if earlier['promoted'] else 'not promoted'}). Nothing was done this time.</p>")
        empty = pd.DataFrame(columns=["scenario", "application", "model", "seed", "status", "failure"])
        html = html_report(empty, f"Deletion request {prepared['request_id']}", extra_sections=[("No-op", section)])
        return summary, html, html, {}
    seed = int(request.get("seed", 1))
    _, task = _request_task(splits, prepared, set(result["forgotten_before"]), seed)
    before = _compare(load_model(result["before"]["spec"], result["before"]["weights"]), task, splits, seed)
    after = _compare(load_model(result["after"]["spec"], result["after"]["weights"]), task, splits, seed)
    if (request.get("ulira") or {}).get("enabled"):
        after.update(request_ulira(splits, prepared, result, request, method_params, training, runtime))
    gates = check_gates(before, after, request.get("gates") or {})
    name, alias = registry_config["model_name"], registry_config.get("alias", "serving")
    tags = {"role": "unlearned", "request_id": prepared["request_id"], "method": result["method"],
            "replaces_version": result["version_before"], "gates_passed": gates["passed"],
            "guard_fired": result["guard_fired"]}
    version = registry.register_model(result["after"], name, tags, after)
    if gates["passed"]:
        registry.promote(name, version, alias)
        log.info("request %s: version %s passed the gates and now serves", prepared["request_id"], version)
    else:
        failed = [k for k, v in gates["checks"].items() if not v["passed"]]
        log.warning("request %s: version %s registered but NOT promoted; failed gates: %s",
                    prepared["request_id"], version, failed)
    entry = _ledger(request).record(prepared["request_id"], prepared["ids"], result["version_before"], version,
                                    gates, gates["passed"], result["method"])
    summary = {"request_id": prepared["request_id"], "skipped": False, "count": len(prepared["ids"]),
               "method": result["method"], "version_before": result["version_before"], "version_after": version,
               "promoted": gates["passed"], "gates": gates, "before": before, "after": after,
               "seconds": result["seconds"], "ledger_time": entry["time"]}
    table = pd.DataFrame([
        {"scenario": f"request {prepared['request_id']}", "application": "up", "model": f"v{version} (after)",
         "seed": seed, "status": "ok", "failure": "", **after},
        {"scenario": f"request {prepared['request_id']}", "application": "up",
         "model": f"v{result['version_before']} (before)", "seed": seed, "status": "ok", "failure": "", **before},
    ])
    gate_rows = "".join(
        f"<tr><td>{k}</td><td>{v['value']:.2f}</td><td>{v['limit']}</td><td>{'pass' if v['passed'] else 'FAIL'}</td>"
        "</tr>" for k, v in gates["checks"].items()) or "<tr><td colspan=4>gates off</td></tr>"
    section = (f"<p>Version {version} {'promoted to' if gates['passed'] else 'registered, NOT promoted to'} "
               f"'{alias}'.</p><table><tr><th>gate</th><th>value</th><th>limit</th><th>result</th></tr>{gate_rows}"
               "</table>")
    html = html_report(table, f"Deletion request {prepared['request_id']}", extra_sections=[("Quality gates", section)])

    metrics = {f"request.{side}.{k}": {"value": float(v), "step": 0}
               for side, values in (("before", before), ("after", after)) for k, v in values.items()
               if not (isinstance(v, float) and math.isnan(v))}
    return summary, html, html, metrics


def deletion_request_pipeline(ingestion: Pipeline) -> Pipeline:
    """`kedro run --pipelines=deletion_request`."""
    return ingestion + Pipeline([
        node(prepare_request, ["splits", "params:deletion_request"], "request_prepared", name="prepare_request"),
        node(unlearn_request, ["splits", "request_prepared", "params:deletion_request", "params:registry",
                               "params:method_params", "params:training", "params:runtime"],
             "request_result", name="unlearn_request"),
        node(evaluate_and_register, ["splits", "request_prepared", "request_result", "params:deletion_request",
                                     "params:registry", "params:method_params", "params:training", "params:runtime"],
             ["request_summary", "request_report", "request_report_mlflow", "request_metrics"],
             name="evaluate_and_register"),
    ], tags=["deletion_request"])


def registration_pipeline(first_seed: int) -> Pipeline:
    """Register the clean Original of the first seed (part of the training pipeline when `registry.enabled`)."""
    return Pipeline([node(register_original,
                          [f"clean.seed_{first_seed}.original_model", "splits", "split_table", "params:dataset",
                           "params:training", "params:registry"],
                          "registered_original", name="register_original", tags=["registry"])])

