"""Deletion-request nodes, one job each: read the request -> build its task -> unlearn -> evaluate -> audit (the
registered version's shadows unlearn the request; docs/design.md §7) -> gates -> register -> record (and promote)
-> report. A request the ledger already holds is a no-op that every node passes through.

The ledger follows the request step by step (serving/ledger.py): `register_candidate` writes `intent` before the
new version is registered and `registered` after; `record_request` writes `recorded` (the full record), moves the
serving alias only when the gates passed, then writes `promoted`. Each line is durable before the next action. A
rerun of an interrupted request resumes it: the version its attempt registered (found by its tags) is adopted, not
trained and registered again, and a step already in the ledger is not written twice.

Every output between these nodes is a file (JSON, or a model folder; `request_*` in conf/base/catalog.yml), so each
node can run in its own process (one Airflow task per node). Nothing between them holds tensors: a node that needs
the request's retain/forget tensors rebuilds them from the splits with `request_task` (the one place that does)."""

from __future__ import annotations

import hashlib
import logging
import math
from dataclasses import replace
from functools import partial

import pandas as pd
import torch
from safetensors.torch import save as safetensors_bytes

from ...data import Splits, TrainingSet, UnlearningTask, build_training_set, make_task
from ...evaluation import basic_mia, per_example_loss
from ...evaluation.mia import basic_mia_not_applicable
from ...evaluation.request_audit import (
    audit_statistics,
    chance_sample,
    plan_audit_shadows,
    plan_digest,
    unlearn_audit_shadows,
)
from ...evaluation.served_audit import flag_gate
from ...evaluation.ulira import logit_margin
from ...methods import method_parameters, run_order
from ...methods.runner import run_method, run_with_rewound
from ...mlflow_edge import model_registry
from ...models import ModelBundle
from ...models.store import WeightStore
from ...reporting import request_report
from ...serving import (
    ORPHAN_TAG,
    Attempt,
    DeletionRequest,
    Ledger,
    LedgerError,
    RequestInFlight,
    read_request,
    set_hash,
    validate_request,
)
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


def request_task(splits: Splits, task: dict, request: dict, backbone: ModelBundle | None = None,
                 backbone_info: dict | None = None) -> tuple[TrainingSet, UnlearningTask]:
    """The request's tensors, rebuilt from the splits: the clean training set without every id forgotten before
    this request (retain), and the request's ids (forget). Checks that the ledger still holds what it held when
    the task was built (its count and keyed set hash; the ids are never written in clear), so every stage sees the
    same retain set even when it runs in another process later. With the pre-trained backbone, models trained
    from it (Retrain, the audit's shadows) start from it, as the Original did."""
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
    if backbone is not None and backbone.present:
        training_set = replace(training_set, backbone=backbone.weights, backbone_key=(backbone_info or {}).get("key"))
    ids = torch.tensor(task["ids"], dtype=torch.int64)
    position = torch.searchsorted(training_set.ids, ids)
    table = pd.DataFrame({"id": ids.numpy(), "label": training_set.labels[position].numpy(),
                          "true_label": training_set.true_labels[position].numpy()})
    return training_set, make_task(splits, training_set, table, "up", seed)


def screen_request(path, ledger: Ledger, training_ids) -> tuple[DeletionRequest, dict | None]:
    """Read a request and, unless the ledger already holds it promoted (then that record is returned), validate it
    against the training ids and what was forgotten so far: the one check the pipeline and the operators'
    command (`serve_requests`) both make before anything trains. Reading the ledger verifies it (`LedgerError`
    when it is broken); `RequestInFlight` when another request is unfinished (it must be served again first)."""
    deletion = read_request(path)
    earlier = ledger.find(deletion.request_id, deletion.ids)
    if earlier is None:
        busy = ledger.in_flight()
        if busy is not None and (busy.request_id, busy.set_hash) != (deletion.request_id,
                                                                     set_hash(ledger.key, deletion.ids)):
            raise RequestInFlight(
                f"request {busy.request_id} is unfinished (last step '{busy.step}' at ledger line "
                f"{busy.lines[busy.step]}): serve it again to finish it before request {deletion.request_id}; "
                f"nothing was processed")
        validate_request(deletion, training_ids, ledger.forgotten_ids(deletion.ids))
    return deletion, earlier


def _resume_point(attempt: Attempt | None) -> dict | None:
    """What a rerun needs to know of an unfinished attempt of this request (None when there is none)."""
    if attempt is None or attempt.finished:
        return None
    return {"attempt": attempt.attempt, "step": attempt.step, "version_before": attempt.version_before,
            "version": attempt.version, "method": attempt.method, "line": attempt.lines[attempt.step]}


def prepare_request(splits: Splits, request: dict) -> dict:
    """Read and validate the request before anything trains: unknown ids, duplicates, an empty request or ids
    already forgotten fail with a clear error, and so does a broken ledger; a request already promoted is a
    no-op; an unfinished attempt of this request (interrupted) is resumed."""
    ledger = request_ledger(request)
    deletion, earlier = screen_request(request["path"], ledger, splits.ids["train"])
    if earlier is not None:
        log.info("request %s was processed at %s: nothing to do", deletion.request_id, earlier["time"])
        return {"request_id": deletion.request_id, "skip": True, "earlier": earlier}
    resume = _resume_point(ledger.state(deletion.request_id, deletion.ids))
    if resume is not None:
        log.warning("request %s was interrupted after its '%s' line (ledger line %d): resuming it",
                    deletion.request_id, resume["step"], resume["line"])
    return {"request_id": deletion.request_id, "skip": False, "ids": deletion.ids.tolist(), "resume": resume}


def build_request_task(splits: Splits, prepared: dict, request: dict) -> dict:
    """The request's task as JSON: its ids, and the ids forgotten before it pinned by count and keyed set hash
    (`request_task` rebuilds the tensors from these wherever they are needed)."""
    if prepared["skip"]:
        return _skipped(prepared["request_id"])
    ledger = request_ledger(request)
    forgotten = _forgotten_before(ledger, splits)
    task = {"request_id": prepared["request_id"], "skip": False, "ids": prepared["ids"],
            "forgotten_before": {"count": len(forgotten), "set_hash": set_hash(ledger.key, forgotten)},
            "resume": prepared.get("resume")}
    _, built = request_task(splits, task, request)  # fails here, not three stages later
    log.info("request %s: forget %d ids, retain %d (%d forgotten by earlier requests)", task["request_id"],
             len(built.forget_y), len(built.retain_y), len(forgotten))
    return task


def weights_digest(bundle: ModelBundle) -> str:
    """SHA-256 of the model's weights as safetensors bytes: the same weights give the same digest."""
    return hashlib.sha256(safetensors_bytes(dict(sorted(bundle.weights.items())))).hexdigest()


def _attempt_versions(name: str, request_id: str, attempt: str) -> list[dict]:
    """The registry versions an attempt registered (by their tags), oldest first, orphans excepted."""
    return [v for v in model_registry.versions(name, request_id)
            if v["tags"].get("ledger_attempt") == attempt and v["tags"].get(ORPHAN_TAG) != "orphan"]


def unlearn_request(splits: Splits, task: dict, request: dict, registry_config: dict, method_params: dict,
                    training: dict, runtime: dict, backbone: ModelBundle | None = None,
                    backbone_info: dict | None = None) -> tuple[dict, ModelBundle, ModelBundle]:
    """Unlearn the request's ids from the serving version with the configured method (a method that rewinds runs
    the method it rewinds first: SCRUB+R runs SCRUB). Returns the outcome and the models before and after. A failed
    method stops here: nothing is registered. An interrupted request whose attempt already registered its version
    trains nothing: that version is the model after (it is adopted, never registered twice)."""
    if task["skip"]:
        return _skipped(task["request_id"]), ModelBundle(), ModelBundle()
    name, alias = registry_config["model_name"], registry_config.get("alias", "serving")
    resume = task.get("resume")
    if resume:
        before, method = resume["version_before"], resume["method"]
        found = resume["version"] or next(
            (v["version"] for v in _attempt_versions(name, task["request_id"], resume["attempt"])), None)
        if found is not None:
            serving, after = model_registry.load_registered(name, before), model_registry.load_registered(name, found)
            log.info("request %s: version %s was registered before the interruption: adopted, nothing to train",
                     task["request_id"], found)
            return ({"request_id": task["request_id"], "skip": False, "version_before": before, "method": method,
                     "seconds": 0.0, "row_fields": {}, "weights_sha256": weights_digest(after),
                     "resumed": {"attempt": resume["attempt"], "version": found}}, serving, after)
        current = model_registry.serving_version(name, alias)
        if current != before:
            raise RuntimeError(f"request {task['request_id']}: its interrupted attempt started from version {before}, "
                               f"but '{alias}' now points to {current}; nothing was done")
    else:
        before, method = model_registry.serving_version(name, alias), request.get("method", "scrub_r")
        if before is None:
            raise ValueError(f"no version of '{name}' carries the alias '{alias}': run `kedro run` first")
        _explain_versions(request_ledger(request), name, task["request_id"])  # a ledger that lost lines: refuse now
    serving = model_registry.load_registered(name, before)
    _, built = request_task(splits, task, request, backbone, backbone_info)
    result = run_with_rewound(method, serving.load(), built, _params_of(request, method_params, training),
                              configure_runtime(runtime))
    if not result.ok:
        raise RuntimeError(f"request {task['request_id']}: {method} failed, nothing registered: {result.failure}")
    log.info("request %s: %s unlearned %d ids in %.1f s", task["request_id"], method, len(built.forget_y),
             result.seconds)
    after = ModelBundle.of(result.model)
    outcome = {"request_id": task["request_id"], "skip": False, "version_before": before, "method": method,
               "seconds": result.seconds, "row_fields": result.row_fields(), "weights_sha256": weights_digest(after),
               "resumed": None}
    return outcome, serving, after


def _compare(model, task: UnlearningTask, splits: Splits, seed: int) -> tuple[dict, dict]:
    """The request's metrics for one model, and {metric: reason} for those not applicable to it (the basic MIA on
    fewer than 4 forgotten examples: NaN, never a crash)."""
    forget_classes = torch.isin(splits.y["test"], torch.tensor(task.forget_classes))
    forget_logits = predict_logits(model, task.forget_x)
    test_logits = predict_logits(model, splits.x["test"])
    members = per_example_loss(forget_logits, task.forget_y)
    nonmembers = per_example_loss(test_logits[forget_classes], splits.y["test"][forget_classes])
    reason = basic_mia_not_applicable(len(members), len(nonmembers))
    mia = math.nan if reason else basic_mia(members, nonmembers, seed)[0]
    return {
        "forget_error": error_percent(forget_logits, task.forget_y),
        "held_out_error_same_classes": error_percent(test_logits[forget_classes], splits.y["test"][forget_classes]),
        "retain_error": model_error(model, task.retain_x, task.retain_y),
        "test_error": error_percent(test_logits, splits.y["test"]),
        "mia_basic": mia,
    }, ({"mia_basic": reason} if reason else {})


def evaluate_request(splits: Splits, task: dict, result: dict, before: ModelBundle, after: ModelBundle,
                     request: dict) -> dict:
    """The unlearned model against the version it replaces: forget error vs held-out error of the same classes,
    retain and test error, basic MIA; `not_applicable` gives the reason of every metric reported as NaN."""
    if result["skip"]:
        return _skipped(result["request_id"])
    _same_request(task, result)
    seed = int(request.get("seed", 1))
    _, built = request_task(splits, task, request)
    old, old_na = _compare(before.load(), built, splits, seed)
    new, new_na = _compare(after.load(), built, splits, seed)
    not_applicable = {**old_na, **new_na}
    for metric, reason in not_applicable.items():
        log.info("request %s: %s not applicable: %s", task["request_id"], metric, reason)
    return {"request_id": task["request_id"], "skip": False, "before": old, "after": new,
            "not_applicable": not_applicable}


def _unlearn_in_order(order: list[str], params: dict[str, dict], model, task: UnlearningTask,
                      device: torch.device):
    """The request's method on one audit shadow (the method it rewinds first); module level, so a worker process
    can receive it as a partial."""
    result = None
    for name in order:
        result = run_method(name, model, task, params[name], device, result)
    return result


def audit_request(splits: Splits, task: dict, result: dict, before: ModelBundle, after: ModelBundle, request: dict,
                  registry_config: dict, method_params: dict, training: dict, runtime: dict,
                  backbone: ModelBundle | None = None, backbone_info: dict | None = None) -> dict:
    """The per-request audit (`registry.audit`; docs/design.md §7): the shadows the serving version carries (trained
    at registration, unlearned by every earlier request since) unlearn the part of this request each holds, with
    the request's method and settings; then method-level U-LiRA on the request's examples, and the served-model
    test of the candidate against the shadows that never held each example, next to the same test on as many
    never-seen validation examples. Returns {"metrics", "evidence", "manifest"} ({} when the audit is off); the
    manifest is what the candidate version will carry, so the next request starts from these shadows."""
    config = registry_config.get("audit") or {}
    if result["skip"] or not config.get("enabled"):
        return {}
    _same_request(task, result)
    name = registry_config["model_name"]
    manifest = model_registry.audit_manifest(name, result["version_before"])
    if manifest is None:
        raise RuntimeError(f"request {task['request_id']}: version {result['version_before']} of '{name}' has no "
                           f"audit shadows (they are trained when a version is registered with registry.audit on; "
                           f"this one was registered before that, or with it off): serve the request with --params "
                           f"registry.audit.enabled=false, and it is not audited")
    seed, workers = int(request.get("seed", 1)), int(config.get("workers") or 0)
    store = WeightStore(config["shadow_store"])
    fetched = model_registry.fetch_audit_shadows(manifest, store)
    if fetched:
        log.info("request %s: %d audit shadows fetched from MLflow", task["request_id"], fetched)
    full_ids = build_training_set(splits, "clean", None, seed).ids
    plan = plan_audit_shadows(full_ids, int(manifest["num_shadows"]), int(manifest["seed"]))
    if plan_digest(plan) != manifest["plan"]:
        raise RuntimeError(f"request {task['request_id']}: the training set is not the one version "
                           f"{manifest['registration_version']}'s audit shadows were trained on")
    training_set, built = request_task(splits, task, request, backbone, backbone_info)
    params_of = _params_of(request, method_params, training)
    order = run_order(result["method"])
    params = {method: params_of(method) for method in order}
    device = configure_runtime(runtime)
    # as many never-seen examples as requested ones, at most half the validation split (the rest calibrates)
    chance = chance_sample(splits.y["val"], built.forget_classes, min(len(task["ids"]), len(splits.y["val"]) // 2),
                           seed)
    margins = unlearn_audit_shadows(partial(_unlearn_in_order, order, params),
                                    {"method": result["method"], "params": params}, manifest["keys"], plan,
                                    before.spec, store, training_set, torch.tensor(task["ids"]), built,
                                    splits.x["val"], splits.y["val"], device, seed, workers, progress=log.info)
    candidate = after.load()
    candidate_request = logit_margin(predict_logits(candidate, built.forget_x, device), built.forget_y)
    candidate_never_seen = logit_margin(predict_logits(candidate, splits.x["val"], device), splits.y["val"])
    statistics = audit_statistics(margins, candidate_request, candidate_never_seen, chance.numpy(),
                                  float(config.get("alpha", 0.05)), seed, int(config.get("bootstrap", 1000)))
    new_manifest = {**manifest, "keys": margins.keys, "earlier_requests": int(manifest["earlier_requests"]) + 1,
                    "parent_version": result["version_before"], "request_id": task["request_id"]}
    if config.get("log_to_mlflow", True):
        new_manifest["run_id"] = model_registry.log_audit_shadows(store, margins.keys) or manifest.get("run_id")
    served, ulira_result = statistics["served"], statistics["ulira"]
    metrics = {"ulira_auc": ulira_result["auc"], "ulira_auc_ci_low": ulira_result["ci_low"],
               "ulira_auc_ci_high": ulira_result["ci_high"], "ulira_acc": ulira_result["acc"],
               "audit_flagged_share": served["request"]["share"], "audit_chance_share": served["chance"]["share"],
               "audit_flagged_excess": served["excess"], "audit_fisher_p": served["fisher_p"],
               "audit_flagged_bh": served["request"]["flagged_bh"], "audit_seconds": margins.seconds}
    evidence = {"num_shadows": plan.num_shadows, "registration_version": manifest["registration_version"],
                "registration_seconds": manifest.get("registration_seconds"),
                "earlier_requests": int(manifest["earlier_requests"]),
                "held_per_shadow": [int(h.sum()) for h in margins.held], "seconds": margins.seconds,
                "method": result["method"], **statistics}
    log.info("request %s: audit in %.1f s: U-LiRA AUC %.3f [%.3f, %.3f]; flagged %d/%d requested examples vs %d/%d "
             "never-seen (Fisher p %.3g)", task["request_id"], margins.seconds, ulira_result["auc"],
             ulira_result["ci_low"], ulira_result["ci_high"], served["request"]["flagged"], served["request"]["n"],
             served["chance"]["flagged"], served["chance"]["n"], served["fisher_p"])
    return {"metrics": metrics, "evidence": evidence, "manifest": new_manifest}


def audit_summary(evidence: dict) -> str:
    """The audit in one line, for the version's tags in the MLflow UI."""
    ulira_result, served = evidence["ulira"], evidence["served"]
    return (f"U-LiRA AUC {ulira_result['auc']:.3f} [{ulira_result['ci_low']:.3f}, {ulira_result['ci_high']:.3f}]; "
            f"flagged {served['request']['flagged']}/{served['request']['n']} requested vs "
            f"{served['chance']['flagged']}/{served['chance']['n']} never-seen (Fisher p {served['fisher_p']:.3g}); "
            f"{evidence['num_shadows']} shadows, {evidence['earlier_requests']} earlier requests")


def _measured(value) -> bool:
    try:
        return value is not None and math.isfinite(float(value))
    except (TypeError, ValueError):
        return False


def check_gates(comparison: dict, audit: dict, request: dict) -> dict:
    """Each configured gate: passed or not, with the numbers. The utility gates (test error, basic MIA band) apply
    with `enabled: true`; the audit's (U-LiRA AUC, flagged share relative to chance) wherever the audit ran, unless
    `audit: false`. No gate configured = every gate passes. A gate whose metric is not applicable (NaN: the basic
    MIA of a request of fewer than 4 ids) is skipped: it passes, with `applicable: false` and the reason, and never
    decides promotion alone."""
    gates = request.get("gates") or {}
    results = {}
    audited = bool(audit) and gates.get("audit", True)
    if comparison["skip"] or not (gates.get("enabled", False) or audited):
        return {"enabled": False, "passed": True, "checks": results}
    before, after = comparison["before"], {**comparison["after"], **(audit.get("metrics") or {})}
    reasons = comparison.get("not_applicable") or {}

    def check(name: str, metric: str, value, limit, test) -> None:
        if not _measured(value):
            results[name] = {"value": math.nan, "limit": limit, "passed": True, "applicable": False,
                             "note": f"skipped: {reasons.get(metric) or f'{metric} was not measured'}"}
        else:
            results[name] = {"value": value, "limit": limit, "passed": bool(test(value))}

    if gates.get("enabled", False):
        if gates.get("max_test_error_increase") is not None:
            limit = gates["max_test_error_increase"]
            check("test_error_increase", "test_error", after["test_error"] - before["test_error"], limit,
                  lambda rise: rise <= limit)
        if gates.get("mia_band") is not None:
            low, high = gates["mia_band"]
            check("mia_basic_in_band", "mia_basic", after["mia_basic"], [low, high], lambda mia: low <= mia <= high)
    if audited:
        if gates.get("max_ulira_auc") is not None:
            limit = gates["max_ulira_auc"]
            check("ulira_auc", "ulira_auc", after.get("ulira_auc"), limit, lambda auc: auc <= limit)
        if gates.get("max_flagged_excess") is not None:
            results["flagged_share_excess"] = flag_gate(audit["evidence"]["served"], gates["max_flagged_excess"],
                                                        float(gates.get("flag_test_alpha", 0.05)))
    return {"enabled": True, "passed": all(r["passed"] for r in results.values()), "checks": results}


def _explain_versions(ledger: Ledger, name: str, request_id: str) -> list[dict]:
    """Before a new attempt: tag this request's versions that no ledger line explains as orphans (and return
    them); refuse when a version claims an intent line the ledger does not hold (the ledger lost lines)."""
    orphans, lost, _ = ledger.explain(model_registry.versions(name, request_id), request_id)
    if lost:
        raise LedgerError(ledger.path, 0, "; ".join(item["reason"] for item in lost))
    for orphan in orphans:
        if not orphan["tagged"]:
            model_registry.set_version_tags(name, orphan["version"], {ORPHAN_TAG: "orphan",
                                                                      "ledger_note": orphan["reason"]})
        log.warning("request %s: version %s is an orphan, tagged %s=orphan: %s", request_id, orphan["version"],
                    ORPHAN_TAG, orphan["reason"])
    return orphans


def register_candidate(prepared: dict, result: dict, after: ModelBundle, comparison: dict, audit: dict,
                       gates: dict, registry_config: dict, request: dict) -> dict:
    """Register the unlearned model, between two ledger lines: `intent` (durable before anything is registered)
    and `registered` (with the version). The version is tagged, in the call that creates it, with the request, its
    ledger attempt and intent line, the weights' digest, the method, the version it replaces, the gates and the
    metrics. A rerun after an interruption adopts the version its attempt registered instead of registering
    another; versions of this request that nothing explains are tagged orphans. Promotion is `record_request`'s."""
    if result["skip"]:
        return _skipped(result["request_id"])
    request_id = _same_request(prepared, result, comparison)
    ledger, ids = request_ledger(request), prepared["ids"]
    name, alias = registry_config["model_name"], registry_config.get("alias", "serving")
    attempt, orphans = ledger.state(request_id, ids), []
    resumed = result.get("resumed") or {}
    if attempt is None or attempt.finished:
        if resumed:
            raise RuntimeError(f"request {request_id}: the stages' outputs are stale (they resume an attempt the "
                               f"ledger no longer has unfinished): rerun the request from prepare_request")
        orphans = _explain_versions(ledger, name, request_id)
        attempt = ledger.begin(request_id, ids, result["version_before"], result["method"])
        log.info("request %s: intent written (ledger line %d, attempt %s)", request_id, attempt.lines["intent"],
                 attempt.attempt)
    elif (attempt.attempt != resumed.get("attempt", attempt.attempt)
          or (attempt.step != "intent" and resumed.get("version") != attempt.version)):
        raise RuntimeError(f"request {request_id}: the stages' outputs do not match the ledger's unfinished attempt "
                           f"{attempt.attempt} (at '{attempt.step}'): rerun the request from prepare_request")
    if attempt.step == "intent":
        found = _attempt_versions(name, request_id, attempt.attempt)
        if found:
            version = found[0]["version"]
            if found[0]["tags"].get("weights_sha256") != result["weights_sha256"]:
                raise RuntimeError(f"request {request_id}: version {version}, registered for this attempt before an "
                                   f"interruption, holds other weights than this run's model; serve the request "
                                   f"again (the rerun adopts version {version})")
            log.warning("request %s: version %s was registered before the interruption: adopted", request_id,
                        version)
            for extra in found[1:]:  # a second version of one attempt (two reruns at once): explained by nothing
                reason = (f"request {request_id}: a second version of attempt {attempt.attempt}; version {version} "
                          f"was adopted")
                model_registry.set_version_tags(name, extra["version"], {ORPHAN_TAG: "orphan", "ledger_note": reason})
                orphans.append({"version": extra["version"], "request_id": request_id, "reason": reason,
                                "tagged": True})
                log.warning("request %s: version %s is an orphan, tagged %s=orphan: %s", request_id,
                            extra["version"], ORPHAN_TAG, reason)
        else:
            tags = {"role": "unlearned", "request_id": request_id, "method": result["method"],
                    "replaces_version": result["version_before"], "gates_passed": gates["passed"],
                    "ledger_attempt": attempt.attempt, "ledger_line": attempt.lines["intent"],
                    "weights_sha256": result["weights_sha256"],
                    **{k: v for k, v in result["row_fields"].items() if k not in ("status", "failure", "seconds")}}
            example = model_registry.input_example_of(name, result["version_before"])  # its test images
            if audit.get("manifest"):  # the next request against this version starts from these shadows
                tags[model_registry.AUDIT_TAG] = audit["manifest"]
                tags["audit_summary"] = audit_summary(audit["evidence"])
            version = model_registry.register_model(after, name, tags,
                                                    {**comparison["after"], **(audit.get("metrics") or {})},
                                                    input_example=example)
        attempt = ledger.mark_registered(attempt.attempt, version)
        log.info("request %s: version %s registered (ledger line %d)", request_id, version,
                 attempt.lines["registered"])
    return {"request_id": request_id, "skip": False, "attempt": attempt.attempt, "version": attempt.version,
            "alias": alias, "orphans": orphans}


def _numbers(metrics: dict | None) -> dict:
    """Metrics read back from the ledger, whose JSON holds non-finite floats as strings, as floats again."""
    out = {}
    for metric, value in (metrics or {}).items():
        out[metric] = float(value) if isinstance(value, str) and value.lower() in ("nan", "inf", "-inf") else value
    return out


def record_request(prepared: dict, result: dict, comparison: dict, audit: dict, gates: dict, registration: dict,
                   request: dict, registry_config: dict) -> dict:
    """Write the request's full record to the ledger (`recorded`: keyed hashes of the ids, never the ids; versions,
    gates, metrics), then, only when the gates passed, move the serving alias to the new version and write
    `promoted`. A step the ledger already holds is not repeated: a rerun finishes what an interruption left. Returns
    the request's summary (from the ledger's record); a no-op request's summary points to the earlier processing."""
    if prepared["skip"]:
        earlier = prepared["earlier"]
        return {"request_id": prepared["request_id"], "skipped": True,
                "reason": f"already processed at {earlier['time']}", **earlier}
    request_id = _same_request(prepared, result, comparison, registration)
    ledger = request_ledger(request)
    attempt = ledger.state(request_id, prepared["ids"])
    if attempt is None or attempt.attempt != registration["attempt"] or attempt.step == "intent":
        raise RuntimeError(f"request {request_id}: the registration does not match the ledger (attempt "
                           f"{registration['attempt']}): rerun the request from prepare_request")
    if attempt.step == "registered":
        attempt = ledger.mark_recorded(
            attempt.attempt, gates, bool(gates["passed"]),
            metrics={"before": comparison["before"], "after": {**comparison["after"], **(audit.get("metrics") or {})}},
            details={"seconds": result["seconds"], "weights_sha256": result["weights_sha256"],
                     "audit": audit.get("evidence"),
                     "chain": model_registry.version_chain(registry_config["model_name"], attempt.version_before),
                     "not_applicable": comparison.get("not_applicable") or {},
                     "orphans": [orphan["version"] for orphan in registration.get("orphans") or []]})
    name, alias = registry_config["model_name"], registry_config.get("alias", "serving")
    if attempt.step == "recorded" and attempt.promote:
        current = model_registry.serving_version(name, alias)
        if current not in (attempt.version_before, attempt.version):
            raise RuntimeError(f"request {request_id}: '{alias}' points to version {current}, not to the version "
                               f"{attempt.version_before} this request started from: not promoting {attempt.version}")
        model_registry.promote(name, attempt.version, alias)
        attempt = ledger.mark_promoted(attempt.attempt, alias)
        log.info("request %s: version %s passed the gates and now serves (ledger line %d)", request_id,
                 attempt.version, attempt.lines["promoted"])
    elif not attempt.promote:
        checks = (attempt.record.get("gates") or {}).get("checks") or {}
        log.warning("request %s: version %s registered but NOT promoted; failed gates: %s", request_id,
                    attempt.version, [k for k, v in checks.items() if not v.get("passed")])
    record = attempt.summary()
    metrics, details = record["metrics"] or {}, record["details"] or {}
    return {"request_id": request_id, "skipped": False, "count": record["count"], "method": record["method"],
            "version_before": record["version_before"], "version_after": record["version_after"],
            "promoted": record["promoted"], "gates": record["gates"], "before": _numbers(metrics.get("before")),
            "after": _numbers(metrics.get("after")), "not_applicable": details.get("not_applicable") or {},
            "seconds": details.get("seconds"), "ledger_time": record["times"]["recorded"],
            "ledger_lines": record["lines"], "attempt": record["attempt"],
            "orphans": registration.get("orphans") or [], "audit": details.get("audit"),
            "chain": details.get("chain") or []}


def build_request_report(summary: dict) -> tuple[str, str, dict]:
    """The request's HTML report (local copy and MLflow copy) and its MLflow metrics `request.<side>.<metric>`
    (not-applicable metrics, NaN, are left out)."""
    html = request_report(summary)
    metrics = {} if summary["skipped"] else {
        f"request.{side}.{k}": {"value": float(v), "step": 0}
        for side in ("before", "after") for k, v in (summary[side] or {}).items() if _measured(v)}
    return html, html, metrics
