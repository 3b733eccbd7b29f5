"""The one U-LiRA orchestration (docs/design.md §5): plan the pool and the shadows, train or reuse them, let a method
unlearn every shadow's F_k, score the margins, and return one `AttackResult`. The scenario pipelines, the deletion
pipeline and the benchmark all call these two functions.

The method comes in as a callable (`methods.runner.unlearner(name, params)`), so evaluation/ never imports
methods/: `unlearn(model, task, device, rewound) -> result` with `result.model` (None when it failed) and
`result.failure`.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from ..data import TrainingSet, UnlearningTask
from .shadows import ShadowPlan, ShadowStore, plan_shadows, train_shadows, unlearned_margins
from .ulira import ulira

ULIRA_METRICS = ("ulira_auc", "ulira_auc_ci_low", "ulira_auc_ci_high", "ulira_acc", "ulira_seconds")
SCORE_COLUMNS = ["shadow", "example", "member", "score", "id"]


@dataclass
class Shadows:
    """The plan and the trained weights of K shadows of one architecture."""

    plan: ShadowPlan
    states: list[dict[str, torch.Tensor]] = field(repr=False)
    spec: dict


@dataclass
class AttackResult:
    """U-LiRA against one method: the metrics (`ULIRA_METRICS`, NaN when it failed), per-example scores (with the
    example ids), the margins phi (K, |P|) of the unlearned shadows, the per-shadow method results (a method that
    rewinds this one reads them), and the failure."""

    metrics: dict
    scores: pd.DataFrame
    phi: np.ndarray | None = field(default=None, repr=False)
    per_shadow: list = field(default_factory=list, repr=False)
    failure: str = ""

    @property
    def ok(self) -> bool:
        return not self.failure


def prepare_shadows(training_set: TrainingSet, forget_ids: torch.Tensor, forget_classes: tuple[int, ...],
                    spec: dict, recipe: dict, store: ShadowStore, device: torch.device, *, num_shadows: int,
                    seed: int, pool_size: int | None = None, workers: int = 0,
                    progress: Callable[[str], None] | None = None) -> tuple[Shadows, dict]:
    """Plan K shadows around a forget set of this size and classes, and train the ones the store lacks. Returns the
    shadows and a manifest (keys, how many were trained and reused, seconds)."""
    plan = plan_shadows(training_set, forget_ids, forget_classes, int(num_shadows), seed, pool_size)
    states, manifest = train_shadows(training_set, plan, spec, recipe, store, device, int(workers or 0), progress)
    return Shadows(plan, states, spec), manifest


def ulira_attack(shadows: Shadows, training_set: TrainingSet, template: UnlearningTask,
                 unlearn: Callable | None, device: torch.device, *, seed: int, bootstrap: int = 1000,
                 workers: int = 0, rewound: list | None = None, name: str = "method") -> AttackResult:
    """Every shadow unlearns its F_k with `unlearn` (None: no unlearning, the Original), then the leave-one-shadow-out
    likelihood-ratio attack. `rewound`: per shadow, the results of the method `unlearn` rewinds. A method that fails
    on any shadow, or an attack that cannot be scored, gives NaN metrics and the reason; the caller goes on."""
    start = time.perf_counter()
    plan = shadows.plan
    try:
        if rewound is not None and len(rewound) != plan.num_shadows:
            raise RuntimeError(f"{name} rewinds a method that did not run on the {plan.num_shadows} shadows")
        phi, per_shadow = unlearned_margins(unlearn, shadows.states, shadows.spec, training_set, plan, template,
                                            device, int(workers or 0), rewound)
        for k, result in enumerate(per_shadow):
            if result is not None and result.failure:
                raise RuntimeError(f"{name} failed on shadow {k}: {result.failure}")
        member, nonmember = plan.masks()
        outcome = ulira(phi, member, nonmember, seed, int(bootstrap))
    except MemoryError:
        raise
    except Exception as error:  # the attack failed: NaN attack columns, the run goes on
        failure = str(error) if isinstance(error, RuntimeError) else f"{type(error).__name__}: {error}"
        metrics = {**{k: math.nan for k in ULIRA_METRICS}, "ulira_seconds": time.perf_counter() - start,
                   "ulira_failure": failure}
        return AttackResult(metrics, pd.DataFrame(columns=SCORE_COLUMNS), None, [], failure)
    metrics = {**outcome.as_metrics(), "ulira_seconds": time.perf_counter() - start}
    scores = outcome.scores.assign(id=plan.pool_ids.numpy()[outcome.scores["example"].to_numpy()])
    return AttackResult(metrics, scores, phi, per_shadow)

