"""The objectives of a hyper-parameter tuning study: one number per trial that the study minimises.

A production user tunes an unlearning method with what they have: the training split's retain and forget examples
and the validation split. Never test data (it would no longer be a test) and never a Retrain model (a user who
could afford to retrain would not unlearn). Every quantity is a percentage (0..100) and every objective is
minimised:

- RB class (`rb_class`): the forgotten class's validation error should reach 100%: ``100 - forgotten_val_error``.
- RB selective and UP (`rb_selective`, `up`): the forget set should look like data the model never trained on:
  ``|forget_error - unseen_error| + |mia_basic - 50|``, with ``unseen_error`` the error on validation examples of
  the forget set's classes and ``mia_basic`` the basic MIA telling the forget set from those examples by their loss
  (the MIA term is left out when too few examples make it unmeasurable).
- RC (`rc`): the A<->B confusion on validation, scored against the true labels, as low as possible:
  ``ic_val_error``.

Each adds the **utility penalty**: with ``excess = kept_val_error - (original_kept_val_error + max_utility_drop)``
(validation error on the kept classes, in points over the Original's plus the budget), the penalty is 0 when
``excess <= 0`` and ``UTILITY_PENALTY + 10 * excess`` otherwise. The budget is a penalty, not a hard constraint,
for two reasons. Any trial inside the budget beats any trial outside it: the penalty of 1000 exceeds every feasible
value (at most 150), so `study.best_trial` is always feasible when one feasible trial exists. And infeasible trials
still rank by how far over the budget they are, which gives the TPE sampler a gradient back into the feasible
region instead of a flat wall of equally bad trials. Optuna's own constrained TPE (`constraints_func`) only steers
sampling: it would not make `study.best_trial` respect the constraint.

A method with a **guard** (SCRUB) checks the same budget after every epoch and rolls back an epoch that broke it.
Its final model is then inside the budget, but only because the guard caught the settings going over it: such a
trial takes the same penalty (`guarded`), with the excess of the worst epoch the guard rejected, so settings that stay
inside the budget on their own beat any that needed the guard, trials that needed it still rank by how far over they
went, and the guard firing is a safety net rather than part of the tuned recipe. An epoch the guard *let pass* over
the budget (its paired test did not call the rise significant on this forget set) counts the same way: on another
forget set the same settings' rise may be called significant and rolled back (seen on cifar5, docs/results.md), so
the tuned settings must stay inside the budget at every epoch, not only at the last.

A trial can be scored on **several tuning tasks** (`tuning.num_seeds`: each tuning seed its own Original and forget
set): one forget set of 25 examples and a validation split of a hundred kept-class examples are noisy, and a best
trial at the budget's edge on one of them crosses it on others (seen on cifar5, docs/results.md). `combined` takes
the mean of the tasks' objectives without their penalties plus the largest penalty any task paid, so a trial is
feasible only when it stays inside the budget on every task, and still ranks by how far over it went when not.

Pure PyTorch/numpy: no Kedro, MLflow or Optuna here.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import torch
from torch import nn

from ..data import UnlearningTask
from ..evaluation.metrics import interclass_confusion, of_classes
from ..evaluation.mia import basic_mia, basic_mia_not_applicable, per_example_loss
from ..training import error_percent, predict_logits

UTILITY_PENALTY = 1000.0
"""Added once when the utility budget is exceeded (plus 10 x the excess in points); above every feasible value."""
EXCESS_WEIGHT = 10.0
"""Penalty per point of kept-class validation error over the budget."""
OBJECTIVE_VERSION = 4
"""Part of every study's name: bumped when what a value means changes (2: a fired guard is over the budget; 3: the
per-epoch values the pruner compares carry that penalty from the epoch the guard fired; 4: so does an epoch over the
budget the guard let pass), so a stored study is never continued with values computed two ways. Methods without a
guard score the same under 3 and 4."""
MIA_CHANCE = 50.0
"""The basic MIA's accuracy on members and non-members it cannot tell apart (balanced classes)."""

OBJECTIVES: dict[str, str] = {
    "rb_class": "100 - validation error on the forgotten class (push it to 100%), + utility penalty",
    "rb_selective": "|forget error - validation error on the forget classes| + |basic MIA - 50| (forget set vs "
                    "those validation examples), + utility penalty",
    "up": "|forget error - validation error on the forget classes| + |basic MIA - 50| (forget set vs those "
          "validation examples), + utility penalty",
    "rc": "A<->B interclass confusion on validation with true labels, + utility penalty",
}
"""Application -> the objective in words (for docs and logs); every objective is minimised."""

OBJECTIVE_KIND: dict[str, str] = {"rb_class": "class_removal", "rb_selective": "selective", "up": "selective",
                                  "rc": "confusion"}
"""Application -> the function it is scored by. RB selective and UP share one: on the same forget set their studies
compute the same trials, so the tuning pipeline runs that study once (docs/design.md §9)."""


def objective_kind(application: str) -> str:
    """The objective `application` is scored by (`OBJECTIVE_KIND`); an unknown application is rejected."""
    _check_application(application)
    return OBJECTIVE_KIND[application]


@dataclass(frozen=True)
class Outcome:
    """One trial's result: the value the study minimises, its ingredients, and whether it is within budget."""

    value: float              # what the study minimises
    parts: dict[str, float]   # every ingredient, for logging (NaN where not applicable)
    feasible: bool            # within the utility budget


def _finite(name: str, value: float) -> float:
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"{name} must be a finite percentage, got {value} (an empty set of examples?)")
    return value


def _check_budget(max_utility_drop: float) -> float:
    max_utility_drop = _finite("max_utility_drop", max_utility_drop)
    if max_utility_drop < 0:
        raise ValueError(f"max_utility_drop must be >= 0 points, got {max_utility_drop}")
    return max_utility_drop


def _check_application(application: str) -> None:
    if application not in OBJECTIVES:
        raise ValueError(f"unknown application '{application}' for a tuning objective; allowed are "
                         f"{list(OBJECTIVES)}")


def utility_penalty(kept_val_error: float, original_kept_val_error: float,
                    max_utility_drop: float) -> tuple[float, float, bool]:
    """(penalty, excess, feasible): excess = kept_val_error - (original_kept_val_error + max_utility_drop); penalty
    = 0 when excess <= 0 else UTILITY_PENALTY + 10*excess. A step plus a slope: every infeasible trial ranks below
    every feasible one, and infeasible ones still rank by how far over the budget they are."""
    max_utility_drop = _check_budget(max_utility_drop)
    excess = (_finite("kept_val_error", kept_val_error)
              - (_finite("original_kept_val_error", original_kept_val_error) + max_utility_drop))
    if excess <= 0:
        return 0.0, excess, True
    return UTILITY_PENALTY + EXCESS_WEIGHT * excess, excess, False


def _utility_parts(kept_val_error: float, original_kept_val_error: float,
                   max_utility_drop: float) -> tuple[float, bool, dict[str, float]]:
    penalty, excess, feasible = utility_penalty(kept_val_error, original_kept_val_error, max_utility_drop)
    parts = {
        "kept_val_error": float(kept_val_error),
        "original_kept_val_error": float(original_kept_val_error),
        "max_utility_drop": float(max_utility_drop),
        "utility_excess": excess,
        "utility_penalty": penalty,
    }
    return penalty, feasible, parts


def class_removal_objective(forgotten_val_error: float, kept_val_error: float, original_kept_val_error: float,
                            max_utility_drop: float) -> Outcome:
    """RB class: the forgotten class's validation error should reach 100%, so value = (100 - forgotten_val_error)
    + utility penalty (0..100 when feasible)."""
    forgotten_val_error = _finite("forgotten_val_error", forgotten_val_error)
    penalty, feasible, parts = _utility_parts(kept_val_error, original_kept_val_error, max_utility_drop)
    parts["forgotten_val_error"] = forgotten_val_error
    return Outcome(value=(100.0 - forgotten_val_error) + penalty, parts=parts, feasible=feasible)


def selective_objective(forget_error: float, unseen_error: float, mia_accuracy: float, kept_val_error: float,
                        original_kept_val_error: float, max_utility_drop: float) -> Outcome:
    """RB selective and UP: the forget set should look like data the model never saw, in error and to the basic
    MIA, so value = |forget_error - unseen_error| + |mia_accuracy - 50| + utility penalty (0..150 when feasible).
    `mia_accuracy` NaN means not measurable (fewer than 4 members or non-members): that term is left out and its
    parts are NaN."""
    forget_error = _finite("forget_error", forget_error)
    unseen_error = _finite("unseen_error", unseen_error)
    mia_accuracy = float(mia_accuracy)
    if math.isinf(mia_accuracy):
        raise ValueError(f"mia_accuracy must be a percentage or NaN (not applicable), got {mia_accuracy}")
    penalty, feasible, parts = _utility_parts(kept_val_error, original_kept_val_error, max_utility_drop)
    gap = abs(forget_error - unseen_error)
    mia_distance = abs(mia_accuracy - MIA_CHANCE)  # NaN stays NaN
    parts.update(forget_error=forget_error, unseen_error=unseen_error, forget_unseen_gap=gap,
                 mia_basic=mia_accuracy, mia_distance=mia_distance)
    value = gap + (0.0 if math.isnan(mia_distance) else mia_distance) + penalty
    return Outcome(value=value, parts=parts, feasible=feasible)


def confusion_objective(ic_val_error: float, kept_val_error: float, original_kept_val_error: float,
                        max_utility_drop: float) -> Outcome:
    """RC: the A<->B confusion on validation, scored against the true labels, should be as low as possible, so
    value = ic_val_error + utility penalty (0..100 when feasible)."""
    ic_val_error = _finite("ic_val_error", ic_val_error)
    penalty, feasible, parts = _utility_parts(kept_val_error, original_kept_val_error, max_utility_drop)
    parts["ic_val_error"] = ic_val_error
    return Outcome(value=ic_val_error + penalty, parts=parts, feasible=feasible)


def guarded(outcome: Outcome, rejected_kept_errors: Sequence[float], max_utility_drop: float,
            accepted_kept_errors: Sequence[float] = ()) -> Outcome:
    """`outcome` of a method with a guard, given the kept-class validation errors of the epochs the guard rejected
    (empty: it did not fire) and of those it accepted. A fired guard means an epoch broke the utility budget, so the
    trial takes the budget's penalty for the worst of them (`utility_penalty` of its excess over the Original's error
    + the budget, at least the step); an accepted epoch over the budget (the guard's paired test let it pass) takes
    the same penalty for its excess; nothing is added when the final model already pays one. `guard_penalty` logs
    what was added, `passed_over_budget` whether an accepted epoch was over the budget."""
    original = outcome.parts["original_kept_val_error"]
    worst_passed = max((float(e) for e in accepted_kept_errors), default=-math.inf)
    passed_penalty = (utility_penalty(worst_passed, original, max_utility_drop)[0] if math.isfinite(worst_passed)
                      else 0.0)
    parts = {**outcome.parts, "guard_fired": float(bool(rejected_kept_errors)),
             "passed_over_budget": float(passed_penalty > 0)}
    rejected_penalty = 0.0
    if rejected_kept_errors:
        # at least the step: the guard may have rejected with its own `max_utility_drop` (a SCRUB parameter), which
        # can be tighter than the tuning budget
        rejected_penalty = max(UTILITY_PENALTY, utility_penalty(max(rejected_kept_errors), original,
                                                                max_utility_drop)[0])
    penalty = max(rejected_penalty, passed_penalty)
    if penalty == 0 or not outcome.feasible:
        return Outcome(value=outcome.value, parts={**parts, "guard_penalty": 0.0}, feasible=outcome.feasible)
    return Outcome(value=outcome.value + penalty, parts={**parts, "guard_penalty": penalty}, feasible=False)


def penalty_of(outcome: Outcome) -> float:
    """What `outcome.value` holds of the utility budget's penalties (the final model's and a guard's)."""
    return float(outcome.parts.get("utility_penalty", 0.0)) + float(outcome.parts.get("guard_penalty", 0.0))


def combined(outcomes: Sequence[Outcome]) -> Outcome:
    """One trial's outcome over several tuning tasks: value = mean of the tasks' values without their penalties +
    the largest penalty any task paid (`penalty_of`); feasible only when every task is. Parts are the tasks' means
    (NaN where a task has none; `guard_fired` is then the fraction of tasks whose guard fired), except
    `peak_kept_val_error` (the largest); `tasks` is the number of tasks scored,
    `penalty` the penalty the value holds, and `kept_val_error_worst` the kept-class error of the task that paid it."""
    if not outcomes:
        raise ValueError("combined needs at least one tuning task's outcome")
    if len(outcomes) == 1:
        return outcomes[0]
    penalties = [penalty_of(o) for o in outcomes]
    clean = [o.value - p for o, p in zip(outcomes, penalties, strict=True)]
    names = list(dict.fromkeys(name for o in outcomes for name in o.parts))
    parts: dict[str, float] = {}
    for name in names:
        values = [float(o.parts.get(name, math.nan)) for o in outcomes]
        finite = [v for v in values if not math.isnan(v)]
        if name == "peak_kept_val_error":
            parts[name] = max(finite, default=math.nan)
        else:
            parts[name] = sum(finite) / len(finite) if finite else math.nan
    worst = max(range(len(outcomes)), key=lambda k: penalties[k])
    if penalties[worst] > 0:
        parts["kept_val_error_worst"] = float(outcomes[worst].parts.get("kept_val_error", math.nan))
    parts.update(tasks=float(len(outcomes)), penalty=max(penalties))
    return Outcome(value=sum(clean) / len(clean) + max(penalties), parts=parts,
                   feasible=all(o.feasible for o in outcomes))


def _kept_error(val_logits: torch.Tensor, task: UnlearningTask) -> float:
    kept = of_classes(task.val_y, task.kept_classes)
    return error_percent(val_logits[kept], task.val_y[kept])


def kept_validation_error(model: nn.Module, task: UnlearningTask, device: torch.device | None) -> float:
    """Error (%) on the validation examples of `task.kept_classes`: the utility the budget protects (run it on the
    Original once to get `original_kept_val_error`)."""
    if device is not None:
        model = model.to(device)
    return _kept_error(predict_logits(model, task.val_x, device), task)


def tuning_outcome(model: nn.Module, task: UnlearningTask, original_kept_val_error: float, max_utility_drop: float,
                   seed: int, device: torch.device | None) -> Outcome:
    """The application's objective for an unlearned `model`, from its predictions on the forget set
    (`task.forget_x/forget_y`) and the validation split (`task.val_x/val_y`) only: no retain pass, no test data,
    no Retrain. `seed` seeds the basic MIA's subsampling and splits (RB selective, UP)."""
    _check_application(task.application)
    _check_budget(max_utility_drop)
    if device is not None:
        model = model.to(device)
    val_logits = predict_logits(model, task.val_x, device)
    kept_val_error = _kept_error(val_logits, task)
    of_forget_classes = of_classes(task.val_y, task.forget_classes)

    if task.application == "rb_class":
        forgotten = error_percent(val_logits[of_forget_classes], task.val_y[of_forget_classes])
        return class_removal_objective(forgotten, kept_val_error, original_kept_val_error, max_utility_drop)

    if task.application == "rc":
        if not task.swap:
            raise ValueError("an rc task needs its swapped classes (task.swap) to score interclass confusion")
        a, b = sorted(task.swap)[:2]
        ic_val_error, _ = interclass_confusion(val_logits, task.val_y, a, b)
        return confusion_objective(ic_val_error, kept_val_error, original_kept_val_error, max_utility_drop)

    # rb_selective, up: members = the forget set (stored labels), non-members = validation of the same classes
    forget_logits = predict_logits(model, task.forget_x, device)
    unseen_logits, unseen_y = val_logits[of_forget_classes], task.val_y[of_forget_classes]
    forget_error = error_percent(forget_logits, task.forget_y)
    unseen_error = error_percent(unseen_logits, unseen_y)
    if basic_mia_not_applicable(len(task.forget_y), len(unseen_y)) is None:
        mia, _ = basic_mia(per_example_loss(forget_logits, task.forget_y), per_example_loss(unseen_logits, unseen_y),
                           seed)
    else:
        mia = float("nan")
    return selective_objective(forget_error, unseen_error, mia, kept_val_error, original_kept_val_error,
                               max_utility_drop)
