"""The registry, SCRUB+R's rewind, a failed method's row, and the comparison with Retrain."""

from __future__ import annotations

import math

import pandas as pd
import pytest
import torch

from scrub_unlearning.evaluation import compare_to_retrain, scale_up
from scrub_unlearning.methods import METHODS, check_method_names, get_method, scrub, scrub_r
from scrub_unlearning.methods.runner import MethodResult
from scrub_unlearning.pipelines.originals.nodes import train_original
from scrub_unlearning.pipelines.scenarios import nodes
from scrub_unlearning.training import model_error

CPU = torch.device("cpu")
CLASS_SETTINGS = dict(optimizer="sgd", lr=0.01, weight_decay=5e-4, momentum=0.9, gamma=1.0, alpha=0.5,
                      temperature=2.0, msteps=3, epochs=4, lr_decay_epochs=[5], retain_batch=32, forget_batch=32,
                      max_utility_drop=5.0)


def test_registry_rejects_unknown_names_listing_known_ones():
    with pytest.raises(ValueError) as error:
        get_method("scrubb")
    assert "scrubb" in str(error.value) and all(name in str(error.value) for name in METHODS)
    with pytest.raises(ValueError, match="neggrad_minus"):
        check_method_names(["scrub", "neggrad_minus"])
    with pytest.raises(ValueError, match="list 'scrub'"):
        check_method_names(["scrub_r"])
    assert check_method_names(["original", "scrub", "scrub_r", "retrain"]) == ["scrub", "scrub_r"]


@pytest.fixture(scope="module")
def class_scrub(digits_original, digits_task):
    task = digits_task("rb_class")
    _, info = scrub.unlearn(digits_original, task, CLASS_SETTINGS, CPU)
    return task, info


def test_scrub_r_returns_the_checkpoint_closest_to_the_target(digits_original, class_scrub):
    task, info = class_scrub
    model, rinfo = scrub_r.unlearn(digits_original, task, {}, CPU, info)
    errors = rinfo["checkpoint_forget_errors"]
    assert set(errors) == set(info["checkpoints"]) and 0 in errors
    best = min(abs(e - info["final_forget_class_val_error"]) for e in errors.values())
    assert abs(errors[rinfo["chosen_epoch"]] - info["final_forget_class_val_error"]) == best
    assert model_error(model, task.forget_x, task.forget_y) == errors[rinfo["chosen_epoch"]]
    assert rinfo["selection_seconds"] > 0


def test_scrub_r_can_answer_epoch_zero(digits_original, class_scrub):
    """A target of 0% forget error (the Original's) rewinds all the way to the Original."""
    task, info = class_scrub
    model, rinfo = scrub_r.unlearn(digits_original, task, {}, CPU, {**info, "final_forget_class_val_error": 0.0})
    assert rinfo["chosen_epoch"] == 0
    for name, tensor in digits_original.state_dict().items():
        assert torch.equal(model.state_dict()[name], tensor)


def test_a_diverging_method_gives_a_failed_row_and_no_model(digits_splits, digits_training_set):
    scenario = {"application": "rb_selective", "forget": {"class_id": 5, "size": 30}}
    forget = nodes.make_forget_set(digits_splits, digits_training_set, scenario, seed=1)
    original, _ = train_original(digits_splits, digits_training_set, {"architecture": "small_cnn"},
                                       {"optimizer": "sgd", "lr": 0.05, "epochs": 2, "batch_size": 64}, {}, seed=1)
    args = (original, digits_splits, digits_training_set, forget, scenario)
    model, info = nodes.run_method(*args, {"neggrad": {"lr": 1e6}}, {}, {}, method="neggrad", seed=1)
    assert not model.present and info["status"] == "failed" and "DivergenceError" in info["failure"]
    row = nodes.evaluate_method(model, info, digits_splits, digits_training_set, forget, scenario, {},
                                         {"status": "ok", "forget_error": 1.0, "retain_error": 0.0,
                                          "test_error": 1.0, "val_error": 1.0}, {"seconds": 2.0},
                                         scenario_name="rb_selective", method="neggrad", seed=1)
    assert row["status"] == "failed" and math.isnan(row["forget_error"]) and math.isnan(row["tow"])
    from scrub_unlearning.mlflow_edge.run_layout import row_metrics

    metrics = row_metrics(row)  # what the model's MLflow child run gets
    assert metrics["failed"] == 1.0 and "forget_error" not in metrics
    ok_model, ok_info = nodes.run_method(*args, {"neggrad": {"epochs": 1}}, {}, {}, method="neggrad", seed=1)
    assert ok_model.present and ok_info["status"] == "ok"
    # a rewinding method whose source failed fails too, with the reason
    failed_scrub = MethodResult("scrub", None, failure="DivergenceError: nan")
    model, info = nodes.run_method(*args, {}, {}, {}, None, failed_scrub, method="scrub_r", seed=1)
    assert not model.present and "scrub failed" in info["failure"]


def test_gaps_tow_and_scale_up_by_hand():
    method = {"forget_error": 30.0, "retain_error": 2.0, "test_error": 10.0, "val_error": 9.0, "mia_basic": 60.0}
    retrain = {"forget_error": 10.0, "retain_error": 1.0, "test_error": 8.0, "val_error": 8.0, "mia_basic": 50.0}
    out = compare_to_retrain(method, retrain, "up")
    assert out["forget_error_gap"] == 20.0 and out["test_error_gap"] == 2.0 and out["mia_basic_gap"] == 10.0
    assert out["tow"] == pytest.approx((1 - 0.20) * (1 - 0.01) * (1 - 0.02))
    assert scale_up(30.0, 3.0) == 10.0 and math.isnan(scale_up(30.0, 0.0))


def test_scenario_table_has_every_column(digits_splits, digits_training_set):
    """Rows from evaluate_method carry the columns docs/design.md §5 names (Original: no scale_up)."""
    scenario = {"application": "up", "forget": {"class_id": 5, "size": 30}}
    forget = nodes.make_forget_set(digits_splits, digits_training_set, scenario, seed=1)
    original, oinfo = train_original(digits_splits, digits_training_set, {"architecture": "small_cnn"},
                                           {"optimizer": "sgd", "lr": 0.05, "epochs": 2, "batch_size": 64}, {},
                                           seed=1)
    common = (digits_splits, digits_training_set, forget, scenario, {})
    retrain_row = nodes.evaluate_method(original, {"seconds": 4.0, "status": "ok"}, *common,
                                           scenario_name="up", method="retrain", seed=1)
    row = nodes.evaluate_method(original, oinfo, *common, retrain_row, {"seconds": 4.0}, scenario_name="up",
                                   method="original", seed=1)
    table = pd.DataFrame([retrain_row, row])
    for column in ("forget_error", "retain_error", "test_error", "val_error", "mia_basic", "mia_basic_gap",
                   "forget_error_gap", "tow", "seconds", "scale_up", "status", "failure"):
        assert column in table.columns
    assert "guard_fired" not in table.columns, "only methods that declare a guard report one"
    assert math.isnan(row["scale_up"]) and row["mia_basic_gap"] == 0.0 and row["tow"] == 1.0
