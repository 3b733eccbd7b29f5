"""Tuning objectives: hand-computed values, the utility penalty, and `tuning_outcome` on a model whose predictions
are written into its inputs."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
from conftest import LookupModel

from scrub_unlearning.data import APPLICATIONS, UnlearningTask
from scrub_unlearning.evaluation.mia import basic_mia, per_example_loss
from scrub_unlearning.tuning.objectives import (
    OBJECTIVES,
    UTILITY_PENALTY,
    Outcome,
    class_removal_objective,
    combined,
    confusion_objective,
    guarded,
    kept_validation_error,
    objective_kind,
    selective_objective,
    tuning_outcome,
    utility_penalty,
)

CPU = torch.device("cpu")
SCALE = 10.0
UNSEEN_PIXEL = 99  # an image the lookup model cannot predict: reading it raises


# --- the utility penalty ---


def test_utility_penalty_zero_within_budget_and_at_its_edge():
    assert utility_penalty(12.0, 10.0, 5.0) == (0.0, -3.0, True)
    assert utility_penalty(15.0, 10.0, 5.0) == (0.0, 0.0, True)  # exactly at the budget: feasible


def test_utility_penalty_step_plus_slope_over_budget():
    penalty, excess, feasible = utility_penalty(17.5, 10.0, 5.0)
    assert excess == pytest.approx(2.5)
    assert penalty == pytest.approx(UTILITY_PENALTY + 25.0) == pytest.approx(1025.0)
    assert feasible is False


def test_utility_penalty_zero_budget():
    assert utility_penalty(10.0, 10.0, 0.0)[2] is True
    penalty, excess, feasible = utility_penalty(10.5, 10.0, 0.0)
    assert (penalty, excess, feasible) == (pytest.approx(1005.0), pytest.approx(0.5), False)


@pytest.mark.parametrize("drop", [-0.1, -5.0])
def test_negative_budget_rejected(drop):
    with pytest.raises(ValueError, match="max_utility_drop"):
        utility_penalty(10.0, 10.0, drop)
    with pytest.raises(ValueError, match="max_utility_drop"):
        class_removal_objective(50.0, 10.0, 10.0, drop)


# --- the objectives on hand-made numbers ---


def test_class_removal_feasible():
    out = class_removal_objective(forgotten_val_error=80.0, kept_val_error=12.0, original_kept_val_error=10.0,
                                  max_utility_drop=5.0)
    assert isinstance(out, Outcome)
    assert out.value == pytest.approx(20.0)
    assert out.feasible is True
    assert out.parts["forgotten_val_error"] == 80.0
    assert out.parts["utility_penalty"] == 0.0
    assert out.parts["utility_excess"] == pytest.approx(-3.0)
    assert out.parts["kept_val_error"] == 12.0 and out.parts["original_kept_val_error"] == 10.0


def test_class_removal_infeasible():
    # excess = 18 - (10 + 5) = 3 -> penalty 1000 + 30
    out = class_removal_objective(100.0, 18.0, 10.0, 5.0)
    assert out.value == pytest.approx(0.0 + 1030.0)
    assert out.feasible is False
    assert out.parts["utility_excess"] == pytest.approx(3.0)
    assert out.parts["utility_penalty"] == pytest.approx(1030.0)


def test_selective_feasible():
    # |10 - 25| + |62 - 50| = 15 + 12
    out = selective_objective(forget_error=10.0, unseen_error=25.0, mia_accuracy=62.0, kept_val_error=9.0,
                              original_kept_val_error=8.0, max_utility_drop=5.0)
    assert out.value == pytest.approx(27.0)
    assert out.feasible is True
    assert out.parts["forget_unseen_gap"] == pytest.approx(15.0)
    assert out.parts["mia_basic"] == 62.0
    assert out.parts["mia_distance"] == pytest.approx(12.0)
    assert out.parts["forget_error"] == 10.0 and out.parts["unseen_error"] == 25.0


def test_selective_mia_below_chance_counts_too():
    # a MIA at 38% is as far from chance as one at 62%
    assert selective_objective(20.0, 20.0, 38.0, 9.0, 8.0, 5.0).value == pytest.approx(12.0)


def test_selective_infeasible():
    # |30 - 20| + |50 - 50| + 1000 + 10 * (20 - (8 + 5))
    out = selective_objective(30.0, 20.0, 50.0, 20.0, 8.0, 5.0)
    assert out.value == pytest.approx(10.0 + 0.0 + 1070.0)
    assert out.feasible is False


def test_selective_nan_mia_leaves_the_term_out():
    out = selective_objective(10.0, 25.0, float("nan"), 9.0, 8.0, 5.0)
    assert out.value == pytest.approx(15.0)
    assert math.isnan(out.parts["mia_basic"]) and math.isnan(out.parts["mia_distance"])
    assert out.parts["forget_unseen_gap"] == pytest.approx(15.0)
    infeasible = selective_objective(10.0, 25.0, float("nan"), 15.0, 8.0, 5.0)
    assert infeasible.value == pytest.approx(15.0 + 1020.0)


def test_confusion_feasible_and_infeasible():
    assert confusion_objective(ic_val_error=7.5, kept_val_error=11.0, original_kept_val_error=10.0,
                               max_utility_drop=5.0).value == pytest.approx(7.5)
    out = confusion_objective(0.0, 16.0, 10.0, 5.0)
    assert out.value == pytest.approx(1010.0)
    assert out.feasible is False
    assert out.parts["ic_val_error"] == 0.0


def test_nan_required_input_rejected():
    with pytest.raises(ValueError, match="forgotten_val_error"):
        class_removal_objective(float("nan"), 10.0, 10.0, 5.0)
    with pytest.raises(ValueError, match="unseen_error"):
        selective_objective(10.0, float("nan"), 50.0, 10.0, 10.0, 5.0)
    with pytest.raises(ValueError, match="kept_val_error"):
        confusion_objective(10.0, float("nan"), 10.0, 5.0)


def _outcomes(kept_errors, budget=5.0, original=10.0):
    grid = (0.0, 37.0, 100.0)
    for kept in kept_errors:
        for f in grid:
            yield class_removal_objective(f, kept, original, budget)
            yield confusion_objective(f, kept, original, budget)
            for u, mia in itertools.product(grid, (0.0, 50.0, 100.0, float("nan"))):
                yield selective_objective(f, u, mia, kept, original, budget)


def test_any_feasible_beats_any_infeasible():
    feasible = list(_outcomes((0.0, 10.0, 15.0)))        # at most the budget (10 + 5)
    infeasible = list(_outcomes((15.001, 20.0, 100.0)))  # just over it and far over it
    assert all(o.feasible for o in feasible) and not any(o.feasible for o in infeasible)
    worst_feasible = max(o.value for o in feasible)
    assert worst_feasible == pytest.approx(150.0)         # |0 - 100| + |0 - 50|
    assert worst_feasible < min(o.value for o in infeasible)
    # infeasible trials with the same ingredients rank by how far over the budget they are
    over = [class_removal_objective(50.0, kept, 10.0, 5.0).value for kept in (16.0, 20.0, 40.0)]
    assert over == sorted(over) and len(set(over)) == 3


# --- several tuning tasks (tuning.num_seeds) ---


def test_combined_is_the_mean_without_penalties_plus_the_largest_penalty():
    # three seeds of rb_class: original kept error 20%, budget 5 points; the third went 2 points over it
    seeds = [class_removal_objective(90.0, 22.0, 20.0, 5.0), class_removal_objective(100.0, 24.0, 20.0, 5.0),
             class_removal_objective(70.0, 27.0, 20.0, 5.0)]
    outcome = combined(seeds)
    clean_mean = ((100 - 90) + (100 - 100) + (100 - 70)) / 3  # 13.33...
    assert outcome.value == pytest.approx(clean_mean + UTILITY_PENALTY + 10 * 2.0)
    assert not outcome.feasible and outcome.parts["tasks"] == 3.0
    assert outcome.parts["penalty"] == pytest.approx(UTILITY_PENALTY + 20.0)
    assert outcome.parts["kept_val_error"] == pytest.approx((22 + 24 + 27) / 3)
    assert outcome.parts["kept_val_error_worst"] == pytest.approx(27.0)
    assert outcome.parts["forgotten_val_error"] == pytest.approx((90 + 100 + 70) / 3)


def test_combined_feasible_only_when_every_task_is_and_one_task_is_itself():
    inside = [selective_objective(20.0, 24.0, 55.0, 30.0, 28.0, 5.0), selective_objective(26.0, 24.0, 47.0, 31.0,
                                                                                           28.0, 5.0)]
    outcome = combined(inside)
    assert outcome.feasible and outcome.value == pytest.approx(((4 + 5) + (2 + 3)) / 2)
    assert outcome.parts["penalty"] == 0.0 and "kept_val_error_worst" not in outcome.parts
    # guarded: a guard that fired on one task makes the trial infeasible; its parts say on what fraction it fired
    fired = guarded(inside[1], [40.0], 5.0)
    both = combined([guarded(inside[0], [], 5.0), fired])
    assert not both.feasible and both.parts["guard_fired"] == pytest.approx(0.5)
    assert both.value == pytest.approx((9 + 5) / 2 + fired.parts["guard_penalty"])
    assert both.value > max(o.value for o in inside), "any feasible beats any infeasible, over tasks too"
    assert combined(inside[:1]) == inside[0]
    with pytest.raises(ValueError, match="at least one"):
        combined([])


def test_objectives_cover_the_applications():
    assert set(OBJECTIVES) == set(APPLICATIONS) == {"rb_class", "rb_selective", "up", "rc"}
    assert all(isinstance(text, str) and text for text in OBJECTIVES.values())


def test_rb_selective_and_up_share_an_objective_and_nothing_else_does():
    kinds = {application: objective_kind(application) for application in APPLICATIONS}
    assert kinds["rb_selective"] == kinds["up"]
    assert len({kinds["rb_class"], kinds["rc"], kinds["up"]}) == 3
    with pytest.raises(ValueError, match="unknown application 'rb_subgroup'"):
        objective_kind("rb_subgroup")


# --- tuning_outcome on a hand-made model and task ---


def _images(predictions: list[int]) -> torch.Tensor:
    """uint8 (N, 1, 2, 2) images whose first pixel is the class LookupModel will predict."""
    x = torch.zeros(len(predictions), 1, 2, 2, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.tensor(predictions, dtype=torch.uint8)
    return x


def _task(application, num_classes, kept, forget_classes, forget, val, swap=None):
    """forget and val are (labels, predictions). The retain images cannot be predicted (pixel 99 is not a class), so
    an objective that reads the retain set fails."""
    return UnlearningTask(
        application=application,
        retain_x=_images([UNSEEN_PIXEL] * 3), retain_y=torch.tensor([0, 0, 0]),
        forget_x=_images(forget[1]), forget_y=torch.tensor(forget[0]),
        val_x=_images(val[1]), val_y=torch.tensor(val[0]),
        num_classes=num_classes, kept_classes=kept, forget_classes=forget_classes, seed=0, swap=swap or {},
    )


def test_the_retain_guard_works():
    # the safety net of the tests below: predicting the retain images does fail
    task = _task("rb_class", 3, (0, 1), (2,), forget=([2], [2]), val=([0], [0]))
    with pytest.raises(RuntimeError):
        LookupModel(3)(task.retain_x)


def _rb_class_task():
    return _task(
        "rb_class", 3, kept=(0, 1), forget_classes=(2,),
        forget=([2, 2], [2, 2]),
        val=([0, 0, 1, 1, 2, 2, 2, 2],
             [0, 1, 1, 1, 2, 0, 1, 0]),  # kept: 1 of 4 wrong (25%); class 2: 3 of 4 wrong (75%)
    )


def test_kept_validation_error_reads_kept_classes_only():
    assert kept_validation_error(LookupModel(3), _rb_class_task(), CPU) == pytest.approx(25.0)


def test_tuning_outcome_rb_class_feasible():
    out = tuning_outcome(LookupModel(3), _rb_class_task(), original_kept_val_error=25.0, max_utility_drop=5.0,
                         seed=0, device=CPU)
    assert out.parts["forgotten_val_error"] == pytest.approx(75.0)
    assert out.parts["kept_val_error"] == pytest.approx(25.0)
    assert out.value == pytest.approx(25.0)  # 100 - 75
    assert out.feasible is True


def test_tuning_outcome_rb_class_infeasible():
    # budget: 10 + 5 = 15 points; kept error 25 -> excess 10 -> 1000 + 100
    out = tuning_outcome(LookupModel(3), _rb_class_task(), 10.0, 5.0, seed=0, device=CPU)
    assert out.parts["utility_excess"] == pytest.approx(10.0)
    assert out.value == pytest.approx(25.0 + 1100.0)
    assert out.feasible is False


def _up_task(forget_predictions, unseen_predictions, kept_val=([0, 0, 2, 2, 0], [0, 0, 2, 2, 0])):
    """UP on class 1 of 3 classes (kept = all); val = kept_val + the unseen class-1 examples."""
    val_labels = list(kept_val[0]) + [1] * len(unseen_predictions)
    val_predictions = list(kept_val[1]) + list(unseen_predictions)
    return _task("up", 3, kept=(0, 1, 2), forget_classes=(1,),
                 forget=([1] * len(forget_predictions), forget_predictions), val=(val_labels, val_predictions))


def test_tuning_outcome_up_at_chance():
    # forget and unseen examples all right with identical logits: identical losses, so the MIA can only guess
    # (balanced held-out split of 3 + 3: exactly 50%); gap 0
    task = _up_task([1] * 10, [1] * 10)
    out = tuning_outcome(LookupModel(3), task, original_kept_val_error=0.0, max_utility_drop=5.0, seed=0, device=CPU)
    assert out.parts["forget_error"] == 0.0 and out.parts["unseen_error"] == 0.0
    assert out.parts["mia_basic"] == pytest.approx(50.0)
    assert out.value == pytest.approx(0.0)
    assert out.feasible is True


def test_tuning_outcome_up_separable_and_over_budget():
    # forget set all right (low loss), unseen class-1 validation all wrong (high loss): gap 100, MIA sees it;
    # UP keeps every class: validation 2 of 5 (classes 0, 2) + 10 of 10 (class 1) wrong = 80%, against 70 + 5 ->
    # excess 5 -> 1000 + 50
    task = _up_task([1] * 10, [0] * 10, kept_val=([0, 0, 2, 2, 0], [0, 2, 0, 2, 0]))
    out = tuning_outcome(LookupModel(3), task, 70.0, 5.0, seed=0, device=CPU)
    logits = LookupModel(3)
    members = per_example_loss(logits(task.forget_x).detach(), task.forget_y)
    unseen = task.val_y == 1
    nonmembers = per_example_loss(logits(task.val_x[unseen]).detach(), task.val_y[unseen])
    expected_mia, _ = basic_mia(members, nonmembers, 0)
    assert expected_mia > 90.0
    assert out.parts["forget_unseen_gap"] == pytest.approx(100.0)
    assert out.parts["kept_val_error"] == pytest.approx(80.0)
    assert out.parts["mia_basic"] == pytest.approx(expected_mia)
    assert out.value == pytest.approx(100.0 + (expected_mia - 50.0) + 1050.0)
    assert out.feasible is False


def test_tuning_outcome_up_seed_reaches_the_mia():
    # overlapping losses: the seed decides the subsample and the splits, and it is the one passed in
    task = _up_task([1] * 6 + [0] * 4, [1] * 3 + [0] * 7)
    model = LookupModel(3)
    members = per_example_loss(model(task.forget_x).detach(), task.forget_y)
    unseen = task.val_y == 1
    nonmembers = per_example_loss(model(task.val_x[unseen]).detach(), task.val_y[unseen])
    for seed in (0, 3):
        expected, _ = basic_mia(members, nonmembers, seed)
        out = tuning_outcome(model, task, 100.0, 5.0, seed=seed, device=CPU)
        assert out.parts["mia_basic"] == pytest.approx(expected)


def test_tuning_outcome_small_forget_set_has_no_mia():
    # 2 members: the MIA is not applicable; forget 1 of 2 wrong (50%), unseen 1 of 4 wrong (25%);
    # all validation (UP keeps every class): 1 of 9 wrong, within 10 + 5
    task = _up_task([1, 0], [1, 1, 1, 2])
    out = tuning_outcome(LookupModel(3), task, 10.0, 5.0, seed=0, device=CPU)
    assert out.parts["kept_val_error"] == pytest.approx(100.0 / 9.0)
    assert out.feasible is True
    assert math.isnan(out.parts["mia_basic"]) and math.isnan(out.parts["mia_distance"])
    assert out.parts["forget_error"] == pytest.approx(50.0)
    assert out.parts["unseen_error"] == pytest.approx(25.0)
    assert out.value == pytest.approx(25.0)


def test_tuning_outcome_rb_selective_uses_the_same_objective():
    up = _up_task([1, 0], [1, 1, 1, 2])
    selective = UnlearningTask(**{**up.__dict__, "application": "rb_selective"})
    a = tuning_outcome(LookupModel(3), up, 10.0, 5.0, seed=0, device=CPU)
    b = tuning_outcome(LookupModel(3), selective, 10.0, 5.0, seed=0, device=CPU)
    assert a.value == pytest.approx(b.value) == pytest.approx(25.0)


def _rc_task():
    # classes 1 <-> 2 swapped in training; validation has the true labels
    return _task(
        "rc", 3, kept=(0, 1, 2), forget_classes=(1, 2), swap={1: 2, 2: 1},
        forget=([2, 1], [2, 1]),
        val=([1, 1, 2, 2, 0, 0],
             [2, 1, 1, 0, 0, 1]),  # A<->B: 1->2 and 2->1 = 2 of 4 (50%); 2->0 and 0->1 are not A<->B; all: 4 of 6
    )


def test_tuning_outcome_rc_true_label_confusion():
    out = tuning_outcome(LookupModel(3), _rc_task(), original_kept_val_error=65.0, max_utility_drop=5.0, seed=0,
                         device=CPU)
    assert out.parts["ic_val_error"] == pytest.approx(50.0)
    assert out.parts["kept_val_error"] == pytest.approx(400.0 / 6.0)
    assert out.value == pytest.approx(50.0)
    assert out.feasible is True


def test_tuning_outcome_rc_over_budget():
    # 66.67 - (60 + 5) = 1.667 over -> 1000 + 16.67
    out = tuning_outcome(LookupModel(3), _rc_task(), 60.0, 5.0, seed=0, device=CPU)
    assert out.value == pytest.approx(50.0 + UTILITY_PENALTY + 10.0 * (400.0 / 6.0 - 65.0))
    assert out.feasible is False


def test_tuning_outcome_parts_always_have_the_budget():
    for task in (_rb_class_task(), _rc_task(), _up_task([1] * 4, [1] * 4)):
        parts = tuning_outcome(LookupModel(3), task, 10.0, 5.0, seed=0, device=CPU).parts
        assert {"kept_val_error", "original_kept_val_error", "utility_excess", "utility_penalty"} <= set(parts)


def test_tuning_outcome_unknown_application():
    task = _rb_class_task()
    task.application = "bogus"
    with pytest.raises(ValueError, match="bogus") as error:
        tuning_outcome(LookupModel(3), task, 10.0, 5.0, seed=0, device=CPU)
    assert "rb_class" in str(error.value) and "rc" in str(error.value)


def test_tuning_outcome_negative_budget():
    with pytest.raises(ValueError, match="max_utility_drop"):
        tuning_outcome(LookupModel(3), _rb_class_task(), 10.0, -1.0, seed=0, device=CPU)


# --- a fired guard is over the budget ---


def test_a_fired_guard_adds_the_budgets_penalty_for_its_worst_rejected_epoch():
    inside = selective_objective(20.0, 25.0, 52.0, 11.0, 10.0, 5.0)  # value 5 + 2, feasible (budget: 15%)
    fired = guarded(inside, [18.0, 21.0], 5.0)  # worst rejected epoch: 21% = 6 points over the budget
    assert fired.value == pytest.approx(7.0 + UTILITY_PENALTY + 10 * 6.0) and not fired.feasible
    assert fired.parts["guard_fired"] == 1.0 and fired.parts["guard_penalty"] == pytest.approx(1060.0)
    at_the_edge = guarded(inside, [15.0], 5.0)  # rejected (by the paired test too) at exactly the budget: the step
    assert at_the_edge.value == pytest.approx(7.0 + UTILITY_PENALTY)
    quiet = guarded(inside, [], 5.0)
    assert quiet.value == pytest.approx(7.0) and quiet.feasible and quiet.parts["guard_penalty"] == 0.0
    assert quiet.parts["guard_fired"] == 0.0
    over = class_removal_objective(90.0, 20.0, 10.0, 5.0)  # the final model is already 5 points over the budget
    assert guarded(over, [30.0], 5.0).value == over.value, "a trial already over the budget is not penalised twice"


def test_an_epoch_over_the_budget_the_guard_let_pass_pays_the_same_penalty():
    """The guard's paired test may let a rise over the bound pass on one forget set and reject it on another: the
    tuning objective counts every epoch the trial went through, so an accepted epoch over the budget is penalised
    like a rejected one (by its own excess), while accepted epochs inside the budget cost nothing."""
    inside = selective_objective(20.0, 25.0, 52.0, 11.0, 10.0, 5.0)  # value 7, feasible (budget: 15%)
    passed = guarded(inside, [], 5.0, [12.0, 17.5, 13.0])  # epoch 2 at 17.5% = 2.5 points over, accepted
    assert passed.value == pytest.approx(7.0 + UTILITY_PENALTY + 10 * 2.5) and not passed.feasible
    assert passed.parts["guard_fired"] == 0.0 and passed.parts["passed_over_budget"] == 1.0
    assert passed.parts["guard_penalty"] == pytest.approx(1025.0)
    calm = guarded(inside, [], 5.0, [12.0, 15.0, 11.0])  # at most at the budget: nothing added
    assert calm.value == pytest.approx(7.0) and calm.feasible and calm.parts["passed_over_budget"] == 0.0
    # a rejected and a passed epoch: the larger of the two penalties, once
    both = guarded(inside, [16.0], 5.0, [18.0])
    assert both.value == pytest.approx(7.0 + UTILITY_PENALTY + 10 * 3.0)
    assert guarded(inside, [21.0], 5.0, [16.0]).value == pytest.approx(7.0 + UTILITY_PENALTY + 10 * 6.0)
