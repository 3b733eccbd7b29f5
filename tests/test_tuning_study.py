"""Tuning studies: resume after an interruption, pruned and failed trials, the pruning signal through the one
runner, and a real study on digits that picks settings which forget."""

from __future__ import annotations

import math

import optuna
import pytest
import torch
from conftest import LookupModel

from scrub_unlearning.data import UnlearningTask
from scrub_unlearning.methods import get_method, method_parameters
from scrub_unlearning.methods.runner import MethodResult, run_method
from scrub_unlearning.progress import StopWork, observe_epoch, observing_epochs
from scrub_unlearning.tuning.objectives import UTILITY_PENALTY
from scrub_unlearning.tuning.space import parse_space
from scrub_unlearning.tuning.study import TrialFailed, TuningTask, method_objective, open_study, run_study

CPU = torch.device("cpu")


def quadratic(trial: optuna.Trial) -> tuple[float, dict]:
    x = trial.suggest_float("x", -3.0, 3.0)
    trial.set_user_attr("settings", {"x": x})
    return (x - 1.0) ** 2, {"x": x}


def test_an_interrupted_study_continues_to_n_plus_m_trials(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    first = run_study(open_study("s", storage, sampler_seed=0), 3, quadratic, storage)
    assert (first.complete, len(first.trials)) == (3, 3)
    abandoned = open_study("s", storage, sampler_seed=0).ask()  # a trial a killed process left RUNNING
    assert abandoned.number == 3
    again = open_study("s", storage, sampler_seed=0)
    assert again.trials[3].state == optuna.trial.TrialState.FAIL, "a dead process's running trial does not count"
    second = run_study(again, 5, quadratic, storage)
    assert len(second.trials) == 2, "only the missing trials run"
    assert (second.complete, second.failed) == (5, 1)
    assert second.best_value == min(t.value for t in again.trials if t.value is not None)
    assert second.best_params == {"x": pytest.approx(1.0 + math.copysign(math.sqrt(second.best_value),
                                                                          second.best_params["x"] - 1.0))}
    done = run_study(open_study("s", storage, sampler_seed=0), 5, quadratic, storage)
    assert done.trials == [] and done.complete == 5, "a finished study runs nothing"


def test_pruned_trials_count_and_failed_ones_do_not(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    calls = []

    def objective(trial):
        calls.append(trial.number)
        if trial.number == 0:
            raise StopWork("pruned after epoch 2")
        if trial.number == 1:
            raise TrialFailed("diverged")
        return quadratic(trial)

    outcome = run_study(open_study("p", storage, 0), 2, objective, storage)
    assert [t.state for t in outcome.trials] == ["PRUNED", "FAIL", "COMPLETE"]
    assert (outcome.pruned, outcome.failed, outcome.complete, outcome.finished) == (1, 1, 1, 2)
    assert outcome.trials[1].note == "diverged"

    def always_fails(trial):
        raise TrialFailed("nothing runs")

    stopped = run_study(open_study("f", storage, 0), 3, always_fails, storage)
    assert stopped.failed == 3 and stopped.best_params is None and math.isnan(stopped.best_value)
    with pytest.raises(ValueError, match="n_trials"):
        run_study(open_study("g", storage, 0), 0, quadratic, storage)


def test_the_pruning_signal_stops_a_method_instead_of_failing_it(digits_original, digits_task):
    task = digits_task("up")
    params = method_parameters("finetune", {"finetune": {"optimizer": "sgd", "lr": 0.01, "epochs": 3,
                                                         "batch_size": 128}}, {}, {})
    seen = []

    def observer(what, epoch, total, model, rejected):
        seen.append((what, epoch, total, model.training))
        if epoch == 2:
            raise StopWork("pruned")

    with observing_epochs(observer), pytest.raises(StopWork):
        run_method("finetune", digits_original, task, params, CPU)
    assert [s[1] for s in seen] == [1, 2] and all(s[2] == 3 for s in seen)
    assert run_method("finetune", digits_original, task, params, CPU).ok, "no observer: the method runs"


def test_a_real_study_on_digits_prefers_settings_that_forget(tmp_path, digits_original, digits_task):
    """NegGrad on the UP forget set: with lr in [1e-5, 1e-2] the study's best trial closes the forget/unseen gap
    better than the smallest lr (which barely moves the weights), within the utility budget."""
    task = digits_task("up")
    base = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 5e-4, "epochs": 3, "batch_size": 64}
    space = parse_space("neggrad", {"lr": {"low": 1e-5, "high": 1e-2, "log": True}},
                        get_method("neggrad").parameters, "tuning.space.neggrad")
    objective = method_objective("neggrad", base, space, [TuningTask(digits_original, task, 1)], CPU,
                                 max_utility_drop=5.0, pruning=False)
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    outcome = run_study(open_study("neggrad", storage, 0, pruning=False), 6, objective, storage)
    assert outcome.complete == 6 and outcome.best_parts["feasible"] == 1.0
    floor = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    floor.enqueue_trial({"lr": 1e-5})
    untouched_value, untouched = objective(floor.ask())
    assert outcome.best_value < untouched_value
    assert outcome.best_parts["forget_unseen_gap"] <= untouched["forget_unseen_gap"]


def test_a_best_trial_over_the_utility_budget_is_recorded_not_applied():
    from scrub_unlearning.pipelines.tuning.nodes import write_tuned_settings
    from scrub_unlearning.tuning.settings_file import apply_tuned_settings

    def result(method, feasible, settings):
        parts = {"feasible": feasible, "kept_val_error": 9.5, "original_kept_val_error": 2.8, "max_utility_drop": 5.0}
        return {"scenario": "up", "method": method, "settings": settings,
                "provenance": {"trials": 8, "objective": 3.0 if feasible else 1031.3, "parts": parts}}

    tuned = write_tuned_settings({"environment": "base", "tuned": {}},
                                 result("scrub", 1.0, {"lr": 0.002}), result("neggrad_plus", 0.0, {"lr": 0.03}),
                                 {"scenario": "up", "method": "ssd", "settings": None, "provenance": {}})
    assert tuned["version"] == 1 and set(tuned["scenarios"]["up"]) == {"scrub", "neggrad_plus"}
    skipped = tuned["scenarios"]["up"]["neggrad_plus"]
    assert skipped["settings"] == {} and skipped["provenance"]["applied"] is False
    assert "9.50% against the Original's 2.80% + 5 points" in skipped["provenance"]["reason"]
    assert skipped["provenance"]["best_settings"] == {"lr": 0.03}
    # a best trial inside the budget at the end, but only because the guard rolled an epoch back, says so
    guarded_parts = {"feasible": 0.0, "kept_val_error": 4.0, "original_kept_val_error": 2.8, "max_utility_drop": 5.0,
                     "utility_penalty": 0.0, "guard_fired": 1.0, "guard_epoch": 3.0, "peak_kept_val_error": 11.2}
    rolled_back = write_tuned_settings({"environment": "base", "tuned": {}}, {
        "scenario": "up", "method": "scrub", "settings": {"lr": 0.02},
        "provenance": {"trials": 8, "objective": 1087.0, "parts": guarded_parts}})["scenarios"]["up"]["scrub"]
    assert rolled_back["settings"] == {} and rolled_back["provenance"]["applied"] is False
    assert ("ended at 4.00% against the Original's 2.80% + 5 points, but only after the guard rolled back epoch 3, "
            "which went to 11.20%") in rolled_back["provenance"]["reason"]
    passed_parts = {**guarded_parts, "guard_fired": 0.0, "guard_epoch": math.nan, "passed_over_budget": 1.0}
    passed = write_tuned_settings({"environment": "base", "tuned": {}}, {
        "scenario": "up", "method": "scrub", "settings": {"lr": 0.02},
        "provenance": {"trials": 8, "objective": 1034.0, "parts": passed_parts}})["scenarios"]["up"]["scrub"]
    assert passed["settings"] == {} and ("ended at 4.00% against the Original's 2.80% + 5 points, but an epoch the "
                                         "guard let pass went to 11.20%") in passed["provenance"]["reason"]
    parameters = {"scenarios": {"up": {"application": "up"}}, "tuned": tuned}
    applied = apply_tuned_settings(parameters, "tuned")["scenarios"]["up"]["method_params"]
    assert applied["scrub"] == {"lr": 0.002} and applied.get("neggrad_plus", {}) == {}


def test_a_resumed_study_draws_what_an_uninterrupted_one_draws(tmp_path):
    whole = f"sqlite:///{tmp_path / 'whole.db'}"
    broken = f"sqlite:///{tmp_path / 'broken.db'}"
    run_study(open_study("s", whole, sampler_seed=3), 6, quadratic, whole)
    run_study(open_study("s", broken, sampler_seed=3), 4, quadratic, broken)
    run_study(open_study("s", broken, sampler_seed=3), 6, quadratic, broken)  # resumed: a new process, new sampler
    draws = [[t.params["x"] for t in optuna.load_study(study_name="s", storage=url).trials] for url in (whole, broken)]
    assert draws[0] == draws[1]


def test_ties_go_to_the_better_utility(tmp_path):
    storage = f"sqlite:///{tmp_path / 'studies.db'}"
    kept = {0: 7.7, 1: 2.5, 2: 4.0}

    def tied(trial):
        trial.suggest_float("x", 0.0, 1.0)
        trial.set_user_attr("settings", {"n": trial.number})
        trial.set_user_attr("parts", {"kept_val_error": kept[trial.number]})
        return 0.0, {}

    outcome = run_study(open_study("t", storage, 0), 3, tied, storage)
    assert outcome.best_params == {"n": 1} and outcome.best_parts == {"kept_val_error": 2.5}


def test_a_scrub_trial_whose_guard_fired_pays_the_budgets_penalty(digits_original, digits_task):
    """Settings that drive the kept-class error over the budget are rolled back by SCRUB's guard; the model handed
    back is within the budget, but the trial is not: it takes the budget's penalty, so gentle settings whose guard
    did not fire beat it whatever the forget terms say."""
    task = digits_task("up")
    base = dict(optimizer="sgd", lr=0.05, weight_decay=0.0, momentum=0.9, gamma=1.0, alpha=0.5, temperature=4.0,
                msteps=4, epochs=4, lr_decay_epochs=[], retain_batch=256, forget_batch=8, max_utility_drop=5.0)
    space = parse_space("scrub", {"lr": {"low": 1e-5, "high": 0.05, "log": True}}, get_method("scrub").parameters,
                        "tuning.space.scrub")
    objective = method_objective("scrub", base, space, [TuningTask(digits_original, task, 1)], CPU,
                                 max_utility_drop=5.0, pruning=True)  # reports every epoch (no pruning this early)
    asked = optuna.create_study(sampler=optuna.samplers.RandomSampler(0))
    asked.enqueue_trial({"lr": 0.05})
    asked.enqueue_trial({"lr": 1e-5})
    aggressive_value, aggressive = objective(asked.ask())
    gentle_value, gentle = objective(asked.ask())
    assert aggressive["guard_fired"] == 1.0 and aggressive["guard_penalty"] >= UTILITY_PENALTY
    assert aggressive["utility_penalty"] == 0.0, "the model handed back is within the budget: the guard rolled back"
    assert aggressive["feasible"] == 0.0 and aggressive_value >= UTILITY_PENALTY
    assert gentle["guard_fired"] == 0.0 and gentle["guard_penalty"] == 0.0 and gentle["feasible"] == 1.0
    assert gentle_value < UTILITY_PENALTY < aggressive_value
    # where the guard caught it, and how far the rolled-back epoch went: over the budget the final model is within
    assert aggressive["guard_epoch"] >= 1 and math.isnan(gentle["guard_epoch"])
    budget = aggressive["original_kept_val_error"] + 5.0
    assert aggressive["peak_kept_val_error"] > budget >= aggressive["kept_val_error"]
    assert gentle["peak_kept_val_error"] <= gentle["original_kept_val_error"] + 5.0
    # what the pruner compared: from the epoch the guard fired on, the penalty the trial ends with, not the clean
    # value of the rolled-back model; before it, and for the gentle trial throughout, the plain objective
    reported = [t.intermediate_values for t in asked.trials]
    fired = int(aggressive["guard_epoch"])
    assert sorted(reported[0]) == sorted(reported[1]) == [1, 2, 3, 4]
    assert all(v >= UTILITY_PENALTY for epoch, v in reported[0].items() if epoch >= fired)
    assert all(v < UTILITY_PENALTY for epoch, v in reported[0].items() if epoch < fired)
    assert all(v < UTILITY_PENALTY for v in reported[1].values())


class _Predicts(torch.nn.Module):
    """Predicts one fixed class for every image (a model that lost the kept classes)."""

    def __init__(self, label: int, num_classes: int = 3):
        super().__init__()
        self.logits = torch.nn.Parameter(torch.nn.functional.one_hot(torch.tensor(label), num_classes).float() * 10)

    def forward(self, x):
        return self.logits.expand(len(x), -1)


@pytest.mark.parametrize("guard", [5.0, None])
def test_an_epoch_the_guard_let_pass_over_the_budget_counts_against_the_trial(monkeypatch, guard):
    """A SCRUB trial whose first epoch lost the kept classes (accepted: the guard's test let it pass) and whose second
    recovered them: the model handed back is inside the budget, but with the guard on the trial pays the budget's
    penalty, and from the epoch that went over so do the values the pruner compares. Without a guard only the final
    model counts (the path is not part of what the user gets)."""
    labels = [0, 0, 1, 1, 2, 2]
    images = torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor(labels, dtype=torch.uint8)
    task = UnlearningTask(application="rb_class", retain_x=images[:4], retain_y=torch.tensor(labels[:4]),
                          forget_x=images[4:], forget_y=torch.tensor(labels[4:]), val_x=images,
                          val_y=torch.tensor(labels), num_classes=3, kept_classes=(0, 1), forget_classes=(2,), seed=0,
                          swap={})
    original, lost, recovered = LookupModel(3), _Predicts(2), _Predicts(0)  # kept-class error 0%, 100%, 50%

    def two_epochs(method, original_, task_, params, device, rewound=None):
        observe_epoch("scrub", 1, 2, lost, ())
        observe_epoch("scrub", 2, 2, recovered, ())
        trajectory = [{"epoch": 0, "val_error_kept": 0.0, "accepted": True},
                      {"epoch": 1, "val_error_kept": 100.0, "accepted": True},
                      {"epoch": 2, "val_error_kept": 50.0, "accepted": True}]
        return MethodResult(method, recovered, info={"trajectory": trajectory, "guard_fired": False,
                                                      "guard_epoch": None})

    monkeypatch.setattr("scrub_unlearning.tuning.study.run_method", two_epochs)
    base = dict(optimizer="adam", lr=1e-3, weight_decay=0.0, gamma=1.0, alpha=0.5, temperature=2.0, msteps=1, epochs=2,
                lr_decay_epochs=[], retain_batch=4, forget_batch=2, max_utility_drop=guard)
    space = parse_space("scrub", {"lr": {"low": 1e-4, "high": 1e-2, "log": True}}, get_method("scrub").parameters,
                        "tuning.space.scrub")
    # budget 60 points: the final model (50%) is inside, epoch 1 (100%) is 40 points over
    objective = method_objective("scrub", base, space, [TuningTask(original, task, 0)], CPU, max_utility_drop=60.0)
    asked = optuna.create_study()
    trial = asked.ask()
    value, parts = objective(trial)
    reported = asked.trials[0].intermediate_values
    assert parts["kept_val_error"] == pytest.approx(50.0) and parts["utility_penalty"] == 0.0
    if guard is None:
        assert value == pytest.approx(0.0) and parts["feasible"] == 1.0  # forgotten class: 100% error
        assert parts["guard_fired"] == 0.0 and parts["passed_over_budget"] == 0.0
        assert reported[2] == pytest.approx(0.0)
    else:
        assert parts["passed_over_budget"] == 1.0 and parts["guard_fired"] == 0.0 and parts["feasible"] == 0.0
        assert value == pytest.approx(UTILITY_PENALTY + 10 * 40.0)
        assert parts["peak_kept_val_error"] == pytest.approx(100.0)
        assert reported[1] >= UTILITY_PENALTY and reported[2] == pytest.approx(value), "the pruner sees it too"


def _three_class_task(seed: int) -> UnlearningTask:
    labels = [0, 0, 1, 1, 2, 2]
    images = torch.zeros(len(labels), 1, 2, 2, dtype=torch.uint8)
    images[:, 0, 0, 0] = torch.tensor(labels, dtype=torch.uint8)
    return UnlearningTask(application="rb_class", retain_x=images[:4], retain_y=torch.tensor(labels[:4]),
                          forget_x=images[4:], forget_y=torch.tensor(labels[4:]), val_x=images,
                          val_y=torch.tensor(labels), num_classes=3, kept_classes=(0, 1), forget_classes=(2,),
                          seed=seed, swap={})


def test_a_trial_on_several_tuning_seeds_is_scored_on_all_and_stops_at_the_first_over_budget(monkeypatch):
    """Two tuning seeds (tuning.num_seeds 2): a trial runs the method on each seed's task and its value is the mean
    of their objectives (`objectives.combined`); the pruner sees the first seed's epochs only; a trial over the
    budget on the first seed is not run on the second."""
    tasks = [TuningTask(LookupModel(3), _three_class_task(101), 101),
             TuningTask(LookupModel(3), _three_class_task(102), 102)]
    ran = []

    def one_epoch(method, original, task, params, device, rewound=None):
        # lr 1e-3: seed 101 forgets the class (predicts 0: forgotten 100%, kept 50%), seed 102 leaves it untouched;
        # lr 1e-2: seed 101 loses every kept class too (predicts 2: kept 100%)
        ran.append(task.seed)
        if task.seed == 101:
            model = _Predicts(0) if params["lr"] < 5e-3 else _Predicts(2)
        else:
            model = original
        observe_epoch(method, 1, 1, model, ())
        return MethodResult(method, model, info={})

    monkeypatch.setattr("scrub_unlearning.tuning.study.run_method", one_epoch)
    base = {"optimizer": "sgd", "lr": 1e-3, "momentum": 0.9, "weight_decay": 0.0, "epochs": 1, "batch_size": 2}
    space = parse_space("neggrad", {"lr": {"low": 1e-4, "high": 1e-1, "log": True}}, get_method("neggrad").parameters,
                        "tuning.space.neggrad")
    objective = method_objective("neggrad", base, space, tasks, CPU, max_utility_drop=60.0)  # budget: 0% + 60
    asked = optuna.create_study()
    asked.enqueue_trial({"lr": 1e-3})
    asked.enqueue_trial({"lr": 1e-2})
    value, parts = objective(asked.ask())
    assert ran == [101, 102] and parts["tasks"] == 2.0 and parts["feasible"] == 1.0
    assert value == pytest.approx(((100 - 100) + (100 - 0)) / 2), "the mean of the seeds' objectives"
    assert parts["forgotten_val_error"] == pytest.approx(50.0) and parts["kept_val_error"] == pytest.approx(25.0)
    assert asked.trials[0].intermediate_values == {1: pytest.approx(0.0)}, "the first seed's epoch only"

    ran.clear()
    value, parts = objective(asked.ask())
    assert ran == [101], "over the budget on the first seed: infeasible whatever the second gives"
    assert parts["tasks"] == 1.0 and parts["feasible"] == 0.0
    # it predicts the forgotten class for everything: 0% forgotten-class error, kept 100% (40 points over)
    assert value == pytest.approx((100.0 - 0.0) + UTILITY_PENALTY + 10 * (100.0 - 60.0))
