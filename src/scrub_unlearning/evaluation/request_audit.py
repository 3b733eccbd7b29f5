"""The per-request audit's shadows (docs/design.md §7, "Per-request audit"): K shadow models trained once, when a
version is registered as the serving Original, and unlearned in turn by every deletion request served from it.

At registration the training set is cut into K/2 seeded random halves and their complements (shadow 2j trains on
H_2j, shadow 2j+1 on the rest), so every training example is IN for exactly half of the shadows; each shadow is
trained with the Original's procedure (same architecture, recipe and pre-trained backbone) and stored by content
address. A request R is then audited without training anything: shadow k unlearns R ∩ H_k with the request's method
and settings (retaining H_k minus everything forgotten so far), and the margins of R's examples and of a chance
sample (never-seen validation examples) are read from every unlearned shadow. Those states are stored by content
address (their parent's key, the method and its parameters, the ids they retain and forget) and become the shadows
of the version the request produces, so a later request against it starts from shadows that have unlearned every
earlier request too.

The statistics on the margins are `evaluation.ulira.ulira` (method level: IN = shadows that held the example and
unlearned it, OUT = shadows that never held it) and `evaluation.served_audit` (the served model's margins against
the OUT shadows). Like `evaluation.shadows`, this module never imports `methods/`: the unlearning is a callable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from ..data import TrainingSet, UnlearningTask
from ..models import load_model, state_dict_for_saving
from ..models.store import WeightStore, content_key
from ..training import predict_logits
from .served_audit import calibration, flag_summary, served_p_values, served_z_scores
from .shadows import ShadowPlan, map_jobs, task_of_rows, train_shadows
from .ulira import logit_margin, ulira

MIN_AUDIT_SHADOWS = 4
"""Complementary pairs, and leave-one-shadow-out needs IN and OUT observations among the other shadows."""


def plan_audit_shadows(train_ids: torch.Tensor, num_shadows: int, seed: int) -> ShadowPlan:
    """K seeded halves of the training ids in complementary pairs (every id IN for exactly K/2 shadows), as a
    `ShadowPlan` whose pool is the whole training set (no per-shadow forget set: each request brings its own)."""
    if num_shadows < MIN_AUDIT_SHADOWS or num_shadows % 2:
        raise ValueError(f"registry.audit.num_shadows={num_shadows}: give an even number, at least "
                         f"{MIN_AUDIT_SHADOWS} (the shadows come in complementary halves)")
    ids = torch.as_tensor(train_ids, dtype=torch.int64).sort().values
    generator = torch.Generator().manual_seed(int(seed) * 7919 + 29)
    halves, seeds = [], []
    for k in range(num_shadows):
        if k % 2 == 0:
            order = torch.randperm(len(ids), generator=generator)
            chosen = order[: len(ids) // 2]
        else:
            chosen = order[len(ids) // 2:]
        halves.append(ids[chosen].sort().values)
        seeds.append(int(seed) * 1000 + k)
    empty = [torch.empty(0, dtype=torch.int64) for _ in halves]
    return ShadowPlan(ids, halves, empty, seeds)


def plan_digest(plan: ShadowPlan) -> str:
    """Identifies the halves: a request checks that it rebuilds the plan its version's shadows were trained on."""
    return content_key({"seeds": plan.seeds}, *plan.halves)


def train_audit_shadows(training_set: TrainingSet, plan: ShadowPlan, spec: dict, recipe: dict, store: WeightStore,
                        device: torch.device, workers: int = 0,
                        progress: Callable[[str], None] | None = None) -> dict:
    """Train (or reuse from the store) every shadow of the plan with the Original's procedure; returns the
    manifest a registered version carries: keys, plan digest, counts and seconds."""
    _, manifest = train_shadows(training_set, plan, spec, recipe, store, device, workers, progress)
    return {**manifest, "num_shadows": plan.num_shadows, "plan": plan_digest(plan), "earlier_requests": 0}


def shadow_request_task(training_set: TrainingSet, half: torch.Tensor, request_ids: torch.Tensor,
                        template: UnlearningTask, seed: int) -> UnlearningTask | None:
    """What one shadow unlearns for a request: forget R ∩ H_k, retain the rest of H_k still in `training_set`
    (everything forgotten before was removed from it); None when the shadow holds none of the request."""
    in_half = torch.isin(training_set.ids, half)
    is_forget = in_half & torch.isin(training_set.ids, request_ids)
    if not bool(is_forget.any()):
        return None
    return task_of_rows(training_set, in_half & ~is_forget, is_forget, template, seed)


def _unlearn_and_score(unlearn: Callable | None, spec: dict, state: dict, task: UnlearningTask | None, device: str,
                       request_x: torch.Tensor, request_y: torch.Tensor, never_seen_x: torch.Tensor,
                       never_seen_y: torch.Tensor) -> tuple[dict | None, np.ndarray, np.ndarray, str | None]:
    """One shadow: unlearn its part of the request (nothing when it holds none) and return its new weights (None
    when unchanged), the margins of the request's and the never-seen examples, and a failure reason."""
    model = load_model(spec, state)
    changed = None
    if task is not None:
        result = unlearn(model, task, torch.device(device))
        if result.model is None:
            nan_request, nan_never_seen = np.full(len(request_y), np.nan), np.full(len(never_seen_y), np.nan)
            return None, nan_request, nan_never_seen, result.failure or "the method returned no model"
        model = result.model
        changed = state_dict_for_saving(model)
    phi_request = logit_margin(predict_logits(model, request_x, torch.device(device)), request_y)
    phi_never_seen = logit_margin(predict_logits(model, never_seen_x, torch.device(device)), never_seen_y)
    return changed, phi_request, phi_never_seen, None


@dataclass
class ShadowMargins:
    """Margins of every (unlearned) shadow: `request` (K, n) and `never_seen` (K, m), validation examples no model
    trained on; `held` (K, n) = shadow k trained on request example i (and has now unlearned it); `keys` = the
    unlearned shadows' store keys."""

    request: np.ndarray
    never_seen: np.ndarray
    held: np.ndarray
    keys: list[str]
    seconds: float


def unlearn_audit_shadows(unlearn: Callable, describe: dict, keys: list[str], plan: ShadowPlan, spec: dict,
                          store: WeightStore, training_set: TrainingSet, request_ids: torch.Tensor,
                          template: UnlearningTask, never_seen_x: torch.Tensor, never_seen_y: torch.Tensor,
                          device: torch.device, seed: int, workers: int = 0,
                          progress: Callable[[str], None] | None = None) -> ShadowMargins:
    """Every shadow unlearns the part of the request it holds with `unlearn(model, task, device)` (a result with
    `model` and `failure`, as `methods.runner.run_method`'s), and is scored on the request's examples and the
    never-seen ones. `describe` (the method and its parameters) enters the unlearned shadows' content addresses
    with their parent's key and their retain and forget ids: a rerun after a kill unlearns only the shadows not yet
    stored. A failed shadow stops the audit."""
    start = time.perf_counter()
    request_ids = torch.as_tensor(request_ids, dtype=torch.int64)
    position = torch.searchsorted(training_set.ids, request_ids).clamp(max=len(training_set.ids) - 1)
    if not torch.equal(training_set.ids[position], request_ids):
        raise ValueError("every requested id must be in the training set the shadows unlearn from")
    request_x, request_y = training_set.x[position], training_set.labels[position]
    jobs, held, new_keys = [], [], []
    reused = 0
    for k in range(plan.num_shadows):
        task = shadow_request_task(training_set, plan.halves[k], request_ids, template, seed * 1000 + k)
        held.append(torch.isin(request_ids, plan.halves[k]).numpy())
        key = keys[k]
        if task is not None:
            in_half = torch.isin(training_set.ids, plan.halves[k])
            key = content_key({"parent": keys[k], "unlearning": describe, "seed": task.seed},
                              training_set.ids[in_half], torch.isin(training_set.ids[in_half], request_ids))
            if store.path(key).is_file():
                task, reused = None, reused + 1  # unlearned before a kill: only scored again
        state = store.get(key) if task is None else store.get(keys[k])
        if state is None:
            raise FileNotFoundError(f"audit shadow {key if task is None else keys[k]} is not in {store.folder}")
        new_keys.append(key)
        jobs.append((unlearn, spec, state, task, str(device), request_x, request_y, never_seen_x, never_seen_y))
    if progress:
        progress(f"audit: {plan.num_shadows} shadows, {sum(int(h.any()) for h in held)} hold part of the request, "
                 f"{reused} already unlearned")
    phi_request, phi_never_seen = [], []
    for k, (state, request_margins, never_seen_margins, failure) in enumerate(
            map_jobs(_unlearn_and_score, jobs, workers, "audit shadows unlearned")):
        if failure is not None:
            raise RuntimeError(f"audit shadow {k}: the request's method failed: {failure}")
        if state is not None:
            store.put(new_keys[k], state, {"parent": keys[k], "shadow": k, "unlearning": describe})
        phi_request.append(request_margins)
        phi_never_seen.append(never_seen_margins)
    return ShadowMargins(np.stack(phi_request), np.stack(phi_never_seen), np.stack(held), new_keys,
                         time.perf_counter() - start)


def chance_sample(val_y: torch.Tensor, classes: tuple[int, ...], size: int, seed: int) -> torch.Tensor:
    """Positions of `size` seeded validation examples, of the request's classes when there are enough of them (the
    same classes give the most comparable margins), else of any class: the served-model test's chance sample. The
    other validation examples calibrate the test (`audit_statistics`)."""
    generator = torch.Generator().manual_seed(int(seed) * 104729 + 3)
    same = torch.nonzero(torch.isin(val_y, torch.tensor(classes, dtype=val_y.dtype))).flatten()
    pool = same if len(same) >= size else torch.arange(len(val_y))
    if size > len(pool):
        raise ValueError(f"the chance sample needs {size} validation examples, the validation split has {len(pool)}")
    return pool[torch.randperm(len(pool), generator=generator)[:size]].sort().values


def audit_statistics(margins: ShadowMargins, candidate_request: np.ndarray, candidate_never_seen: np.ndarray,
                     chance: np.ndarray, alpha: float, seed: int, bootstrap: int = 1000) -> dict:
    """Method-level U-LiRA on the request's examples (IN = held and unlearned, OUT = never held; leave one shadow
    out) and the served-model test: the candidate's margins against the OUT shadows, calibrated on the never-seen
    examples outside `chance` (positions into them), then flagged at `alpha` on the request and on the chance
    sample. Returns {"ulira": ..., "served": ...} (JSON-able; p-values sorted, never tied to an id)."""
    result = ulira(margins.request, margins.held, ~margins.held, seed=seed, n_bootstrap=bootstrap)
    # each never-seen example is scored on the OUT shadows of one requested example (a seeded pairing): the same
    # number of OUT shadows on every side, since the Gaussian fit's error grows as that number shrinks
    count = margins.never_seen.shape[1]
    pairing = np.resize(np.random.default_rng(seed).permutation(margins.held.shape[1]), count)
    never_seen_out = ~margins.held[:, pairing]
    is_chance = np.zeros(count, dtype=bool)
    is_chance[np.asarray(chance)] = True
    z_never_seen = served_z_scores(candidate_never_seen, margins.never_seen, never_seen_out)
    calibrated = calibration(z_never_seen[~is_chance])
    p_request = served_p_values(candidate_request, margins.request, ~margins.held, calibrated=calibrated)
    p_chance = served_p_values(candidate_never_seen[is_chance], margins.never_seen[:, is_chance],
                               never_seen_out[:, is_chance], calibrated=calibrated)
    served = flag_summary(p_request, p_chance, alpha)
    served.update(calibration={"loc": calibrated[0], "scale": calibrated[1], "n": int((~is_chance).sum())},
                  p_request=sorted(float(p) for p in p_request if np.isfinite(p)),
                  p_chance=sorted(float(p) for p in p_chance if np.isfinite(p)))
    return {"ulira": {"auc": float(result.auc), "ci_low": float(result.ci_low), "ci_high": float(result.ci_high),
                      "acc": float(result.acc), "fpr": [float(v) for v in result.fpr],
                      "tpr": [float(v) for v in result.tpr]},
            "served": served}
