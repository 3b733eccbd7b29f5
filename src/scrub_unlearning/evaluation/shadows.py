"""Shadow models for U-LiRA (docs/design.md §5): the pool, each shadow's training data and forget set, shadow
training with
a content-addressed store (a shadow whose inputs did not change is never trained again), and the unlearning of
every shadow by a method given as a callable (evaluation/ never imports methods/; the callable returns a result
with `model` and `failure`, as `methods.runner.run_method` does). `evaluation.attack` orchestrates these.

Pool P = seeded training examples of the forget set's classes, |P| = 2·|forget| by default; base = train \\ P.
Shadow k trains on base ∪ H_k (H_k a seeded random half of P; shadows 2j and 2j+1 take complementary halves, so
every example is IN for half of the shadows); the method under test then unlearns F_k ⊆ H_k
(|F_k| = the scenario's forget size) from shadow k. For x ∈ P: IN = shadows with x ∈ F_k, OUT = shadows with
x ∉ H_k (never trained on x, but passed through the same unlearning).
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, replace
from multiprocessing import get_context

import numpy as np
import torch

from ..data import TrainingSet, UnlearningTask
from ..models import load_model, state_dict_for_saving
from ..models.store import WeightStore
from ..pretraining import initial_model
from ..progress import report
from ..training import predict_logits, train_model
from .ulira import logit_margin


@dataclass
class ShadowPlan:
    """Ids of the pool and, per shadow, its half H_k, its forget set F_k and its seed."""

    pool_ids: torch.Tensor
    halves: list[torch.Tensor]
    forgets: list[torch.Tensor]
    seeds: list[int]

    @property
    def num_shadows(self) -> int:
        return len(self.halves)

    def masks(self) -> tuple[np.ndarray, np.ndarray]:
        """(member, nonmember), each (K, |P|): x ∈ F_k, and x ∉ H_k."""
        member = np.stack([torch.isin(self.pool_ids, f).numpy() for f in self.forgets])
        nonmember = np.stack([~torch.isin(self.pool_ids, h).numpy() for h in self.halves])
        return member, nonmember


def plan_shadows(training_set: TrainingSet, forget_ids: torch.Tensor, forget_classes: tuple[int, ...],
                 num_shadows: int, seed: int, pool_size: int | None = None) -> ShadowPlan:
    """Draw the pool from the training examples of the forget classes, then each shadow's half and forget set."""
    forget_size = len(forget_ids)
    pool_size = int(pool_size or 2 * forget_size)
    if num_shadows < 3:
        raise ValueError(f"ulira: num_shadows={num_shadows}; leave-one-shadow-out needs at least 3")
    candidates = training_set.ids[torch.isin(training_set.true_labels, torch.tensor(forget_classes))]
    if pool_size > len(candidates) or pool_size < 2 * forget_size:
        raise ValueError(f"ulira: pool size {pool_size} must be between 2x the forget size ({2 * forget_size}) and "
                         f"the {len(candidates)} training examples of classes {list(forget_classes)}")
    generator = torch.Generator().manual_seed(int(seed) * 7919 + 17)
    pool = candidates[torch.randperm(len(candidates), generator=generator)[:pool_size]].sort().values
    halves, forgets, seeds = [], [], []
    for k in range(num_shadows):
        # shadows come in complementary pairs: every H_k is a random half of P, and every example is IN for half
        # of the shadows and OUT for the other half, so each Gaussian always has observations
        if k % 2 == 0:
            order = torch.randperm(pool_size, generator=generator)
            chosen = order[: pool_size // 2]
        else:
            chosen = order[pool_size // 2: 2 * (pool_size // 2)]
        half = pool[chosen].sort().values
        forget = half[torch.randperm(len(half), generator=generator)[:forget_size]].sort().values
        halves.append(half)
        forgets.append(forget)
        seeds.append(int(seed) * 1000 + k)
    return ShadowPlan(pool, halves, forgets, seeds)


def shadow_training_rows(training_set: TrainingSet, plan: ShadowPlan, k: int) -> torch.Tensor:
    """Boolean rows of the training set that shadow k trains on: base ∪ H_k."""
    left_out = plan.pool_ids[~torch.isin(plan.pool_ids, plan.halves[k])]
    return ~torch.isin(training_set.ids, left_out)


def shadow_task(training_set: TrainingSet, plan: ShadowPlan, k: int, template: UnlearningTask) -> UnlearningTask:
    """The unlearning task of shadow k: forget F_k, retain (base ∪ H_k) \\ F_k; the rest as the scenario's."""
    rows = shadow_training_rows(training_set, plan, k)
    is_forget = torch.isin(training_set.ids, plan.forgets[k])
    return task_of_rows(training_set, rows & ~is_forget, is_forget, template, plan.seeds[k])


def task_of_rows(training_set: TrainingSet, retain: torch.Tensor, forget: torch.Tensor, template: UnlearningTask,
                 seed: int) -> UnlearningTask:
    """A shadow's unlearning task: the training set's `retain` and `forget` rows (boolean masks), the rest (the
    validation split, the classes, the backbone) as the scenario's or the request's `template`."""
    return UnlearningTask(
        application=template.application,
        retain_x=training_set.x[retain], retain_y=training_set.labels[retain],
        forget_x=training_set.x[forget], forget_y=training_set.labels[forget],
        val_x=template.val_x, val_y=template.val_y, num_classes=template.num_classes,
        kept_classes=template.kept_classes, forget_classes=template.forget_classes, seed=seed,
        swap=template.swap, backbone=template.backbone,
    )


def shadow_key(spec: dict, recipe: dict, seed: int, ids: torch.Tensor, labels: torch.Tensor,
               backbone_key: str | None = None) -> str:
    """Content address of a shadow: architecture, recipe, seed, the backbone it starts from (if any) and exactly
    which (id, label) pairs it trains on."""
    digest = hashlib.sha256()
    description = {"spec": spec, "recipe": recipe, "seed": seed}
    if backbone_key is not None:  # keys of shadows trained from scratch stay what they were
        description["backbone"] = backbone_key
    digest.update(json.dumps(description, sort_keys=True).encode())
    digest.update(ids.numpy().astype(np.int64).tobytes())
    digest.update(labels.numpy().astype(np.int64).tobytes())
    return digest.hexdigest()[:32]


ShadowStore = WeightStore  # shadow weights by content address (models/store.py)


def _init_worker() -> None:
    torch.set_num_threads(1)


def map_jobs(function: Callable, jobs: list[tuple], workers: int, what: str) -> Iterator:
    """Yield `function(*job)` for every job, in order, as each finishes; with workers > 0 in a pool of
    single-threaded processes. Each finished job is reported as progress of `what`. A generator, so the caller can
    store each result before the next one is done (a killed run keeps what finished)."""
    if workers <= 0:
        for done, job in enumerate(jobs, start=1):
            result = function(*job)
            report(what, done, len(jobs))
            yield result
        return
    with ProcessPoolExecutor(workers, mp_context=get_context("spawn"), initializer=_init_worker) as pool:
        for done, result in enumerate(pool.map(function, *zip(*jobs, strict=True)), start=1):
            report(what, done, len(jobs))
            yield result


def _train_shadow(spec: dict, x: torch.Tensor, y: torch.Tensor, recipe: dict, seed: int,
                  device: str, backbone: dict[str, torch.Tensor] | None = None) -> dict[str, torch.Tensor]:
    model = initial_model(spec, seed, backbone)  # the Original's procedure, from the same backbone
    train_model(model, x, y, recipe, torch.device(device), seed, what=f"shadow seed {seed}")
    return state_dict_for_saving(model)


def train_shadows(training_set: TrainingSet, plan: ShadowPlan, spec: dict, recipe: dict, store: ShadowStore,
                  device: torch.device, workers: int = 0,
                  progress: Callable[[str], None] | None = None) -> tuple[list[dict[str, torch.Tensor]], dict]:
    """Every shadow's weights: from the store when its content address is there, else trained and stored."""
    start = time.perf_counter()
    keys, states, jobs, missing = [], [], [], []
    for k in range(plan.num_shadows):
        rows = shadow_training_rows(training_set, plan, k)
        key = shadow_key(spec, recipe, plan.seeds[k], training_set.ids[rows], training_set.labels[rows],
                         training_set.backbone_key)
        keys.append(key)
        states.append(store.get(key))
        if states[-1] is None:
            missing.append(k)
            jobs.append((spec, training_set.x[rows], training_set.labels[rows], recipe, plan.seeds[k], str(device),
                         training_set.backbone))
    if progress:
        progress(f"shadows: {plan.num_shadows - len(missing)} reused, training {len(missing)}")
    for k, state in zip(missing, map_jobs(_train_shadow, jobs, workers, "shadows trained"), strict=True):
        store.put(keys[k], state)  # as soon as it is trained: a rerun after a kill trains only the rest
        states[k] = state
    manifest = {"keys": keys, "trained": len(missing), "reused": plan.num_shadows - len(missing),
                "seconds": time.perf_counter() - start}
    return states, manifest


def _unlearn_shadow(unlearn: Callable | None, spec: dict, state: dict, task: UnlearningTask, device: str,
                    pool_x: torch.Tensor, pool_y: torch.Tensor, rewound) -> tuple[np.ndarray, object]:
    """One shadow: unlearn its F_k (None: keep the shadow as it is) and return the pool's margins and the method's
    result without its model (so a worker process sends back only the margins and the info)."""
    model = load_model(spec, state)
    if unlearn is None:
        return logit_margin(predict_logits(model, pool_x, torch.device(device)), pool_y), None
    result = unlearn(model, task, torch.device(device), rewound)
    if result.model is None:
        return np.full(len(pool_y), np.nan), result
    phi = logit_margin(predict_logits(result.model, pool_x, torch.device(device)), pool_y)
    return phi, replace(result, model=None)


def unlearned_margins(unlearn: Callable | None, states: list[dict], spec: dict, training_set: TrainingSet,
                      plan: ShadowPlan, template: UnlearningTask, device: torch.device, workers: int = 0,
                      rewound: list | None = None) -> tuple[np.ndarray, list]:
    """phi (K, |P|) of every pool example under every shadow after `unlearn(model, task, device, rewound_k)` removed
    F_k, and each shadow's result (its `failure`, and what a method that rewinds it reads). `unlearn` None: no
    unlearning (the Original as a "method"); `rewound`: per shadow, the result of the method `unlearn` rewinds."""
    position = torch.searchsorted(training_set.ids, plan.pool_ids)
    pool_x, pool_y = training_set.x[position], training_set.labels[position]
    jobs = [
        (unlearn, spec, states[k], shadow_task(training_set, plan, k, template), str(device), pool_x, pool_y,
         rewound[k] if rewound else None)
        for k in range(plan.num_shadows)
    ]
    results = list(map_jobs(_unlearn_shadow, jobs, workers, "shadows unlearned" if unlearn else "shadows scored"))
    return np.stack([phi for phi, _ in results]), [result for _, result in results]
