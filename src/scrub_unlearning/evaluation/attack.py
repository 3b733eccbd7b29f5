"""The one U-LiRA orchestration (docs/design.md §5): plan the pool and the shadows, train or reuse them, let a method
unlearn every shadow's F_k, score the margins, and return one `AttackResult`. The scenario pipelines, the deletion
pipeline and the benchmark all call these two functions. `compare_attacks` then sets two attacks on the same shadows
side by side, with no extra training: KLoM against Retrain's shadows and paired AUC differences with intervals.

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
from .klom import PERCENTILES, klom_metrics
from .shadows import ShadowPlan, ShadowStore, plan_shadows, train_shadows, unlearned_margins
from .ulira import paired_auc_difference, ulira

ULIRA_METRICS = ("ulira_auc", "ulira_auc_ci_low", "ulira_auc_ci_high", "ulira_auc_ci_examples_low",
                 "ulira_auc_ci_examples_high", "ulira_acc", "ulira_seconds")
KLOM_METRICS = tuple(f"klom_{group}_p{q}" for group in ("forget", "retain") for q in PERCENTILES)
GAP_INTERVAL_METRICS = ("ulira_auc_gap_ci_low", "ulira_auc_gap_ci_high")
COMPARISON_PREFIXES = ("klom_", "ulira_auc_gap_ci_", "ulira_auc_diff_")
"""Keys of `compare_attacks`' metrics (the paired difference is named after the two methods)."""
SCORE_COLUMNS = ["shadow", "example", "member", "score", "margin", "id"]


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
    shadow_index, example_index = outcome.scores["shadow"].to_numpy(), outcome.scores["example"].to_numpy()
    scores = outcome.scores.assign(margin=phi[shadow_index, example_index],
                                   id=plan.pool_ids.numpy()[example_index])
    return AttackResult(metrics, scores, phi, per_shadow)


def _margins(scores: pd.DataFrame, shape: tuple[int, int]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(phi, member, present) as (K, n) matrices from a score table's shadow, example, member and margin."""
    phi = np.full(shape, np.nan)
    member = np.zeros(shape, dtype=bool)
    present = np.zeros(shape, dtype=bool)
    k, i = scores["shadow"].to_numpy(dtype=np.int64), scores["example"].to_numpy(dtype=np.int64)
    phi[k, i] = pd.to_numeric(scores["margin"], errors="coerce").to_numpy(dtype=float)
    member[k, i] = scores["member"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0")).to_numpy(bool)
    present[k, i] = True
    return phi, member, present


def _usable(scores: pd.DataFrame | None) -> bool:
    return isinstance(scores, pd.DataFrame) and len(scores) > 0 and {"shadow", "example", "member", "score",
                                                                      "margin"} <= set(scores.columns)


def compare_attacks(scores: pd.DataFrame, reference_scores: pd.DataFrame | None, *, seed: int,
                    bootstrap: int = 1000, rewound_scores: pd.DataFrame | None = None, name: str = "method",
                    rewound_name: str | None = None) -> dict[str, float]:
    """A method's attack against others on the same shadows (docs/methods.md, "Statistics"); no extra training.

    With Retrain's `reference_scores`: KLoM (`KLOM_METRICS`: per pool example KL(method ‖ Retrain) of its margin
    distribution over the shadows that forgot it, `klom_forget_*`, and over those that never trained on it,
    `klom_retain_*`; percentiles over examples) and the paired two-level interval of the AUC gap to Retrain
    (`ulira_auc_gap_ci_low`/`_high`). With `rewound_scores` (the method this one rewinds, e.g. SCRUB for SCRUB+R):
    `ulira_auc_diff_<name>_vs_<rewound_name>` = AUC(this) − AUC(that), with `_ci_low`/`_ci_high`. A missing or failed
    attack on either side gives NaN."""
    out = {key: math.nan for key in (*KLOM_METRICS, *GAP_INTERVAL_METRICS)}
    if rewound_name is not None:
        diff = f"ulira_auc_diff_{name}_vs_{rewound_name}"
        out.update({diff: math.nan, f"{diff}_ci_low": math.nan, f"{diff}_ci_high": math.nan})
    if not _usable(scores):
        return out
    if _usable(reference_scores):
        shape = (int(max(scores["shadow"].max(), reference_scores["shadow"].max())) + 1,
                 int(max(scores["example"].max(), reference_scores["example"].max())) + 1)
        phi, member, present = _margins(scores, shape)
        phi_ref, member_ref, present_ref = _margins(reference_scores, shape)
        if not np.array_equal(member & present_ref, member_ref & present):
            raise ValueError(f"{name}: the reference attack was not run on the same shadows")
        both = present & present_ref
        out.update(klom_metrics(phi, phi_ref, member & both, [~member & both]))
        _, out["ulira_auc_gap_ci_low"], out["ulira_auc_gap_ci_high"] = paired_auc_difference(
            scores, reference_scores, seed, int(bootstrap))
    if rewound_name is not None and _usable(rewound_scores):
        out[diff], out[f"{diff}_ci_low"], out[f"{diff}_ci_high"] = paired_auc_difference(
            scores, rewound_scores, seed, int(bootstrap))
    return out


def attack_row_metrics(metrics: dict) -> dict[str, float]:
    """The attack's columns of a table row: `ULIRA_METRICS` (NaN where missing) and whatever `compare_attacks`
    added."""
    row = {key: metrics.get(key, math.nan) for key in ULIRA_METRICS}
    row.update({key: value for key, value in metrics.items() if key.startswith(COMPARISON_PREFIXES)})
    return row

