"""Evaluation: basic MIA, interclass confusion, `evaluate_model`'s per-application columns (docs/design.md §5)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import LookupModel

from scrub_unlearning.data import UnlearningTask
from scrub_unlearning.evaluation import (
    APPLICATION_METRICS,
    BASE_METRICS,
    basic_mia,
    evaluate_model,
    interclass_confusion,
    interclass_error,
    per_example_loss,
)

CPU = torch.device("cpu")
SCALE = 10.0


# --- basic MIA ---


def test_basic_mia_identical_distributions_is_chance():
    rng = np.random.default_rng(0)
    members = rng.exponential(1.0, 500)
    nonmembers = rng.exponential(1.0, 500)
    mean, std = basic_mia(members, nonmembers, seed=0)
    assert 40.0 <= mean <= 60.0
    assert 0.0 <= std < 10.0


def test_basic_mia_separated_distributions_detects_members():
    rng = np.random.default_rng(1)
    members = rng.exponential(0.01, 500)
    nonmembers = 5.0 + rng.exponential(1.0, 500)
    mean, std = basic_mia(members, nonmembers, seed=0)
    assert mean > 95.0
    assert std < 5.0


def test_basic_mia_balances_by_subsampling():
    # 500 members vs 50 non-members: still ~100% when separable, ~50% when not (no majority-class shortcut)
    rng = np.random.default_rng(2)
    separable, _ = basic_mia(rng.exponential(0.01, 500), 5.0 + rng.exponential(1.0, 50), seed=3)
    assert separable > 95.0
    same, _ = basic_mia(rng.exponential(1.0, 500), rng.exponential(1.0, 50), seed=3)
    assert same < 75.0
    # and the other way round: 50 members vs 500 non-members
    separable, _ = basic_mia(rng.exponential(0.01, 50), 5.0 + rng.exponential(1.0, 500), seed=3)
    assert separable > 95.0
    same, _ = basic_mia(rng.exponential(1.0, 50), rng.exponential(1.0, 500), seed=3)
    assert same < 75.0


def test_basic_mia_needs_four_members():
    with pytest.raises(ValueError) as info:
        basic_mia(np.ones(3), np.ones(10), seed=0)
    assert "at least 4" in str(info.value) and "3" in str(info.value)
    with pytest.raises(ValueError):
        basic_mia(np.ones(10), np.ones(2), seed=0)


def test_basic_mia_deterministic_for_fixed_seed():
    rng = np.random.default_rng(3)
    members = rng.exponential(0.5, 200)
    nonmembers = rng.exponential(1.0, 150)
    first = basic_mia(members, nonmembers, seed=7)
    second = basic_mia(members.copy(), nonmembers.copy(), seed=7)
    assert first == second
    assert all(math.isfinite(v) for v in first)


def test_basic_mia_clips_infinite_losses():
    members = np.array([0.0, 0.01, 0.02, 0.03, 0.0, 0.01])
    nonmembers = np.array([np.inf, 1e9, 200.0, np.inf, 150.0, 1e6])
    mean, std = basic_mia(members, nonmembers, seed=0)
    assert math.isfinite(mean) and math.isfinite(std)
    assert mean > 95.0


# --- confusion, loss ---


def _one_hot_logits(predictions: list[int], num_classes: int) -> torch.Tensor:
    return F.one_hot(torch.tensor(predictions), num_classes).float() * SCALE


def test_interclass_confusion_hand_computed():
    labels = torch.tensor([3, 3, 3, 8, 8, 1, 1, 8])
    predicted = [8, 3, 3, 3, 8, 8, 3, 8]
    # true 3 -> 8: 1; true 8 -> 3: 1; the 1s predicted 3/8 do not count; 6 examples of classes 3 and 8
    error, count = interclass_confusion(_one_hot_logits(predicted, 10), labels, 3, 8)
    assert count == 2
    assert error == pytest.approx(100.0 * 2 / 6)
    error_ab, count_ab = interclass_confusion(_one_hot_logits(predicted, 10), labels, 8, 3)
    assert (error_ab, count_ab) == (error, count)


def test_interclass_confusion_other_errors_not_counted_and_empty_is_nan():
    labels = torch.tensor([0, 0, 1, 1])
    error, count = interclass_confusion(_one_hot_logits([2, 2, 2, 1], 3), labels, 0, 1)
    assert count == 0 and error == 0.0
    error, count = interclass_confusion(_one_hot_logits([0, 1], 3), torch.tensor([2, 2]), 0, 1)
    assert count == 0 and math.isnan(error)


def test_the_two_interclass_definitions_hand_computed():
    labels = torch.tensor([3, 3, 3, 8, 8, 1, 1, 8])
    predicted = [8, 3, 5, 3, 8, 8, 3, 2]
    logits = _one_hot_logits(predicted, 10)
    # ours (A<->B only): true 3 -> 8 once, true 8 -> 3 once, of the 6 examples of 3 and 8
    assert interclass_confusion(logits, labels, 3, 8) == (pytest.approx(100.0 * 2 / 6), 2)
    # the authors' (every error on a true 3 or 8): also 3 -> 5 and 8 -> 2; the 1s' errors never count
    assert interclass_error(logits, labels, 3, 8) == (pytest.approx(100.0 * 4 / 6), 4)
    assert interclass_error(logits, labels, 8, 3) == interclass_error(logits, labels, 3, 8)
    error, count = interclass_error(_one_hot_logits([0, 1], 3), torch.tensor([2, 2]), 0, 1)
    assert count == 0 and math.isnan(error)


def test_per_example_loss_clips_to_100():
    logits = torch.tensor([[0.0, 1000.0], [0.0, 0.0], [5.0, 0.0]])
    losses = per_example_loss(logits, torch.tensor([0, 0, 0]))
    assert isinstance(losses, np.ndarray)
    assert losses.shape == (3,)
    assert losses[0] == pytest.approx(100.0)
    assert losses[1] == pytest.approx(math.log(2.0), rel=1e-5)
    assert losses[2] == pytest.approx(math.log(1.0 + math.exp(-5.0)), rel=1e-4)


# --- evaluate_model ---


def _images(predictions: list[int]) -> torch.Tensor:
    """uint8 (N, 1, 2, 2) images whose first pixel is the class LookupModel will predict."""
    x = torch.zeros(len(predictions), 1, 2, 2, dtype=torch.uint8)
    x[:, 0, 0, 0] = torch.tensor(predictions, dtype=torch.uint8)
    return x


def _task(application, num_classes, kept, forget_classes, retain, forget, val, swap=None):
    """Each of retain/forget/val is (labels, predictions)."""
    return UnlearningTask(
        application=application,
        retain_x=_images(retain[1]), retain_y=torch.tensor(retain[0]),
        forget_x=_images(forget[1]), forget_y=torch.tensor(forget[0]),
        val_x=_images(val[1]), val_y=torch.tensor(val[0]),
        num_classes=num_classes, kept_classes=kept, forget_classes=forget_classes, seed=0, swap=swap or {},
    )


def test_evaluate_model_rb_class_scores_kept_classes_only():
    task = _task(
        "rb_class", 3, kept=(0, 1), forget_classes=(2,),
        retain=([0, 0, 1, 1], [0, 1, 1, 1]),      # 1 of 4 wrong
        forget=([2, 2], [0, 2]),                  # 1 of 2 wrong
        val=([0, 1, 2, 2], [0, 0, 0, 1]),         # kept: 1 of 2 wrong (all classes: 3 of 4)
    )
    test_y = torch.tensor([0, 0, 1, 1, 2, 2])
    test_x = _images([0, 0, 1, 0, 2, 0])          # kept: 1 of 4 wrong; class 2: 1 of 2 wrong; all: 2 of 6
    row = evaluate_model(LookupModel(3), task, test_x, test_y, CPU, seed=0)
    assert set(row) == set(BASE_METRICS) | set(APPLICATION_METRICS["rb_class"])
    assert row["retain_error"] == pytest.approx(25.0)
    assert row["forget_error"] == pytest.approx(50.0)
    assert row["val_error"] == pytest.approx(50.0)
    assert row["test_error"] == pytest.approx(25.0)
    assert row["forgotten_class_test_error"] == pytest.approx(50.0)


def test_evaluate_model_rc_scores_forget_against_stored_labels():
    task = _task(
        "rc", 3, kept=(0, 1, 2), forget_classes=(0, 1), swap={0: 1, 1: 0},
        retain=([0, 1, 1, 2], [1, 1, 1, 2]),      # 1 of 4 wrong; ic: true 0 -> 1 once, of 3 examples of 0/1
        forget=([1, 1, 0, 0], [0, 0, 1, 0]),      # vs stored wrong labels 3 of 4 differ (vs true: 1)
        val=([0, 1, 2], [0, 1, 0]),               # 1 of 3 wrong, all classes kept
    )
    test_y = torch.tensor([0, 0, 0, 1, 1, 2])
    test_x = _images([1, 0, 0, 0, 1, 2])          # 2 of 6 wrong; ic: 0 -> 1 once, 1 -> 0 once, of 5
    row = evaluate_model(LookupModel(3), task, test_x, test_y, CPU, seed=0)
    assert set(row) == set(BASE_METRICS) | set(APPLICATION_METRICS["rc"])
    assert row["forget_error"] == pytest.approx(75.0)
    assert row["retain_error"] == pytest.approx(25.0)
    assert row["test_error"] == pytest.approx(100.0 * 2 / 6)
    assert row["val_error"] == pytest.approx(100.0 / 3)
    assert row["ic_count_test"] == 2
    assert row["ic_error_test"] == pytest.approx(40.0)
    assert row["ic_count_retain"] == 1
    assert row["ic_error_retain"] == pytest.approx(100.0 / 3)
    # every error on true 0/1 here is a 0<->1 confusion, so the authors' definition agrees
    assert (row["ic_all_count_test"], row["ic_all_error_test"]) == (2, pytest.approx(40.0))
    assert (row["ic_all_count_retain"], row["ic_all_error_retain"]) == (1, pytest.approx(100.0 / 3))


def test_evaluate_model_up_reports_mia_with_forget_class_test_examples():
    task = _task(
        "up", 2, kept=(0, 1), forget_classes=(1,),
        retain=([0, 0, 1, 1], [0, 0, 1, 1]),
        forget=([1] * 6, [1] * 6),                # members: all right, loss ~0
        val=([0, 1], [0, 0]),
    )
    # class-1 test examples all wrong (loss ~SCALE); class-0 test examples right and NOT non-members
    test_y = torch.tensor([1] * 6 + [0] * 4)
    test_x = _images([0] * 6 + [0] * 4)
    row = evaluate_model(LookupModel(2), task, test_x, test_y, CPU, seed=0)
    assert set(row) == set(BASE_METRICS) | set(APPLICATION_METRICS["up"])
    assert row["forget_error"] == pytest.approx(0.0)
    assert row["retain_error"] == pytest.approx(0.0)
    assert row["val_error"] == pytest.approx(50.0)
    assert row["test_error"] == pytest.approx(60.0)
    assert row["mia_basic"] > 95.0
    members = per_example_loss(_one_hot_logits([1] * 6, 2), torch.tensor([1] * 6))
    nonmembers = per_example_loss(_one_hot_logits([0] * 6, 2), torch.tensor([1] * 6))
    expected = basic_mia(members, nonmembers, seed=0)
    assert row["mia_basic"] == pytest.approx(expected[0])
    assert row["mia_basic_split_std"] == pytest.approx(expected[1])


def test_evaluate_model_rb_selective_has_base_columns_only():
    task = _task(
        "rb_selective", 2, kept=(0, 1), forget_classes=(1,),
        retain=([0, 1], [0, 1]), forget=([1, 1], [0, 1]), val=([0, 1], [1, 1]),
    )
    row = evaluate_model(LookupModel(2), task, _images([0, 0, 1]), torch.tensor([0, 1, 1]), CPU, seed=0)
    assert set(row) == set(BASE_METRICS)
    assert row == pytest.approx({"forget_error": 50.0, "retain_error": 0.0, "test_error": 100.0 / 3,
                                 "val_error": 50.0})


def test_evaluate_model_is_deterministic_and_leaves_model_in_eval():
    task = _task(
        "up", 2, kept=(0, 1), forget_classes=(1,),
        retain=([0, 1], [0, 1]), forget=([1] * 5, [1, 1, 0, 1, 1]), val=([0, 1], [0, 1]),
    )
    test_y = torch.tensor([1] * 5 + [0])
    test_x = _images([0, 1, 0, 1, 0, 0])
    model = LookupModel(2)
    first = evaluate_model(model, task, test_x, test_y, CPU, seed=4)
    second = evaluate_model(model, task, test_x, test_y, CPU, seed=4)
    assert first == second
    assert first["forget_error"] == pytest.approx(20.0)
    assert not model.training
