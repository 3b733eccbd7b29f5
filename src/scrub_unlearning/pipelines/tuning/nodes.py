"""Tuning nodes: unpack parameters, run one study through the library (`tuning/study.py`), and write the best
settings with their provenance to the environment's tuned settings file."""

from __future__ import annotations

import datetime
import hashlib
import json
import logging
from dataclasses import asdict

from ...data import Splits, TrainingSet, make_task
from ...methods import get_method, method_parameters
from ...models.store import WeightStore, weights_digest
from ...training import configure_runtime
from ...tuning.objectives import OBJECTIVE_VERSION, objective_kind
from ...tuning.settings_file import updated_tuned_settings
from ...tuning.space import configured_point, describe_space, parse_space
from ...tuning.study import (
    StudyOutcome,
    TuningTask,
    method_objective,
    open_study,
    original_objective,
    rewound_result,
    run_study,
)
from ...validation import ORIGINAL_TUNABLE_PARAMETERS, tuning_seeds
from ..common import reuse_store
from ..originals.nodes import _spec

log = logging.getLogger(__name__)


def _study_name(what: str, inputs: dict) -> str:
    """`<scenario>/<method>/<digest>`: a study continues only while its space, base settings and data are the same
    (changing any of them starts a new study in the same storage)."""
    digest = hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:10]
    return f"{what}/{digest}"


def method_study_name(application: str, method: str, inputs: dict) -> str:
    """`<objective>/<method>/<digest>`: named by what the study computes, not by the scenario, so two scenarios
    scored by the same objective on the same forget set, Original and settings (RB selective and UP by default)
    share one study instead of running the same trials twice."""
    return _study_name(f"{objective_kind(application)}/{method}", inputs)


def _result(outcome: StudyOutcome, scenario: str | None, method: str, tuning: dict, space: dict) -> dict:
    provenance = {
        "study": outcome.study, "storage": outcome.storage.rsplit("/", 1)[-1], "trials": outcome.finished,
        "complete": outcome.complete, "pruned": outcome.pruned, "failed": outcome.failed,
        "objective": outcome.best_value, "parts": outcome.best_parts,
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "tuning_seed": int(tuning["seed"]), **({"tuning_seeds": tuning_seeds(tuning)} if scenario else {}),
        "sampler": f"TPE seed {int(tuning.get('sampler_seed', 0))}",
        "space": describe_space(space),
    }
    return {"scenario": scenario, "method": method, "settings": outcome.best_params, "provenance": provenance,
            "seconds": outcome.seconds, "trials": [asdict(t) for t in outcome.trials]}


def tune_method(splits: Splits, scenario: dict, method_params: dict, training: dict, runtime: dict, tuning: dict,
                storage: str, store: WeightStore | None, *per_seed, scenario_name: str, method: str,
                seeds: list[int]) -> dict:
    """One study: `method` on the scenario's tuning forget sets (one per tuning seed, `per_seed` = Original,
    training set, forget set of each seed in turn), `tuning.n_trials` finished trials, objective of the scenario's
    application combined over the seeds. Returns the best settings with their provenance and this call's trials
    (the run layout hook logs each as an MLflow child run)."""
    if len(per_seed) != 3 * len(seeds):
        raise ValueError(f"tune_method needs an Original, a training set and a forget set per tuning seed {seeds}, "
                         f"got {len(per_seed)} inputs")
    device = configure_runtime(runtime)
    space = parse_space(method, (tuning.get("space") or {}).get(method), get_method(method).parameters,
                        f"tuning.space.{method}")

    def params_of(name: str) -> dict:
        return method_parameters(name, method_params, scenario, training)

    tasks, originals, forget_sets = [], [], []
    for k, seed in enumerate(seeds):
        original, training_set, forget_set = per_seed[3 * k: 3 * k + 3]
        task = make_task(splits, training_set, forget_set, scenario["application"], seed)
        model = original.load()
        rewound = rewound_result(method, model, task, params_of, device, reuse_store(runtime, store))
        tasks.append(TuningTask(model, task, seed, rewound))
        originals.append(weights_digest(original.weights))
        forget_sets.append(forget_set["id"].tolist())
    objective = method_objective(method, params_of(method), space, tasks, device,
                                 max_utility_drop=float(tuning["max_utility_drop"]),
                                 pruning=bool(tuning.get("pruning", True)))
    one = len(seeds) == 1  # one tuning seed: the name it always had, so existing studies continue
    name = method_study_name(scenario["application"], method, {
        # the base settings without the searched keys (every trial overrides those): a run that reads the tuned
        # file continues the same studies
        "space": describe_space(space), "base": {k: v for k, v in params_of(method).items() if k not in space},
        "seed": seeds[0] if one else seeds,
        "budget": tuning["max_utility_drop"], "objective": OBJECTIVE_VERSION,
        "original": originals[0] if one else originals,
        "forget": forget_sets[0] if one else forget_sets})
    study = open_study(name, storage, int(tuning.get("sampler_seed", 0)), bool(tuning.get("pruning", True)))
    if not study.trials:  # trial 0 = the configured settings: tuning never ends worse than them on the objective
        study.enqueue_trial(configured_point(space, params_of(method)))
    elif study.user_attrs.get("scenario", scenario_name) != scenario_name:
        log.info("%s on %s computes the same trials as on %s (same objective, forget sets, Originals and settings): "
                 "it shares study %s", method, scenario_name, study.user_attrs["scenario"], name)
    if "scenario" not in study.user_attrs:
        study.set_user_attr("scenario", scenario_name)
    log.info("tuning %s on %s (%s): %d trials on %d tuning seed(s) %s, space %s", method, scenario_name,
             scenario["application"], int(tuning["n_trials"]), len(seeds), seeds, describe_space(space))
    outcome = run_study(study, int(tuning["n_trials"]), objective, storage, progress=log.info)
    return _result(outcome, scenario_name, method, tuning, space)


def tune_original(splits: Splits, training_set: TrainingSet, model: dict, training: dict, runtime: dict,
                  tuning: dict, storage: str, *, seed: int) -> dict:
    """The Original's recipe (and width) on validation error, from the backbone when the run pre-trains."""
    device = configure_runtime(runtime)
    space = parse_space("original", (tuning.get("space") or {}).get("original"), ORIGINAL_TUNABLE_PARAMETERS,
                        "tuning.space.original")
    original = tuning.get("original") or {}
    n_trials = int(original.get("n_trials") or tuning["n_trials"])
    objective = original_objective(training_set, splits.x["val"], splits.y["val"], training, space,
                                   lambda model_keys: _spec(splits, {**model, **model_keys}), device, seed=seed,
                                   pruning=bool(tuning.get("pruning", True)))
    name = _study_name("original", {"space": describe_space(space),
                                    "base": {k: v for k, v in training.items() if k not in space},
                                    "model": {k: v for k, v in model.items() if k not in space},
                                    "seed": seed, "data": training_set.ids.tolist()[:50] + [len(training_set.ids)],
                                    "backbone": training_set.backbone_key})
    study = open_study(name, storage, int(tuning.get("sampler_seed", 0)), bool(tuning.get("pruning", True)))
    if not study.trials:
        study.enqueue_trial(configured_point(space, {**model, **training}))
    log.info("tuning the Original: %d trials, space %s", n_trials, describe_space(space))
    return _result(run_study(study, n_trials, objective, storage, progress=log.info), None, "original", tuning,
                   space)


def _infeasible_reason(trials: int, parts: dict) -> str:
    """Why the best of `trials` trials is over the utility budget: its final model, an epoch its guard rolled back
    (the final model is then inside the budget only because the guard caught it), or an epoch over the budget the
    guard let pass."""
    nan = float("nan")
    budget = (f"the Original's {parts.get('original_kept_val_error', nan):.2f}% + "
              f"{parts.get('max_utility_drop', nan):g} points")
    if parts.get("tasks", 1.0) > 1:
        return (f"no trial of {trials} stayed inside the kept-class validation budget on every tuning seed: the "
                f"best went to {parts.get('kept_val_error_worst', nan):.2f}% on one of them (worst epoch of any "
                f"seed {parts.get('peak_kept_val_error', nan):.2f}%) against the Original's "
                f"{parts.get('original_kept_val_error', nan):.2f}% (mean over the seeds) + "
                f"{parts.get('max_utility_drop', nan):g} points")
    if parts.get("guard_fired") == 1.0 and parts.get("utility_penalty", 0.0) == 0.0:
        epoch = parts.get("guard_epoch", nan)
        return (f"every trial of {trials} either ended over the kept-class validation budget or needed the guard: "
                f"the best ended at {parts.get('kept_val_error', nan):.2f}% against {budget}, but only after the "
                f"guard rolled back epoch {epoch:g}, which went to {parts.get('peak_kept_val_error', nan):.2f}%")
    if parts.get("passed_over_budget") == 1.0 and parts.get("utility_penalty", 0.0) == 0.0:
        return (f"every trial of {trials} ended over the kept-class validation budget or went over it on the way: "
                f"the best ended at {parts.get('kept_val_error', nan):.2f}% against {budget}, but an epoch the "
                f"guard let pass went to {parts.get('peak_kept_val_error', nan):.2f}%")
    return (f"no trial of {trials} kept the kept-class validation error within the budget: the best was "
            f"{parts.get('kept_val_error', nan):.2f}% against {budget}")


def write_tuned_settings(current: dict, *results: dict) -> dict:
    """The new `tuned` block: every study's best settings with provenance over the previous file's (version + 1).
    A study with no complete trial changes nothing. A study whose best trial is over the utility budget writes no
    settings (the method keeps its configured ones) but records the finding: `applied: false` and why."""
    entries = []
    for r in results:
        where = f"{r['method']}" + (f" on {r['scenario']}" if r.get("scenario") else "")
        if not r.get("settings"):
            log.warning("tuning %s: no trial completed, settings unchanged", where)
            continue
        parts = r["provenance"].get("parts") or {}
        if parts.get("feasible", 1.0) == 0.0:
            reason = _infeasible_reason(r['provenance']['trials'], parts)
            log.warning("tuning %s: %s; its configured settings stay", where, reason)
            entries.append({**r, "settings": {}, "provenance": {**r["provenance"], "applied": False,
                                                                "reason": reason, "best_settings": r["settings"]}})
        else:
            entries.append({**r, "provenance": {**r["provenance"], "applied": True}})
    entries = [{k: e[k] for k in ("scenario", "method", "settings", "provenance")} for e in entries]
    tuned = updated_tuned_settings(current.get("tuned"), entries, current["environment"],
                                   datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"))
    log.info("tuned settings version %s: %d studies written (%s)", tuned.get("version"), len(entries),
             ", ".join(f"{e['scenario']}/{e['method']}" if e["scenario"] else e["method"] for e in entries))
    return tuned
