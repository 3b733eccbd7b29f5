"""Bad input fails before training, with an error naming the bad value and what is allowed (docs/design.md §7)."""

from __future__ import annotations

import copy

import pytest

from scrub_unlearning import validation
from scrub_unlearning.data import APPLICATIONS, load_digits_dataset, make_splits
from scrub_unlearning.methods import METHODS, REFERENCES

TRAINING_SETS = {"clean": {}, "rc_confused": {"confuse": {"classes": [3, 8], "size": 40}}}
SCENARIOS = {
    "rb_class": {"application": "rb_class", "training_set": "clean", "forget": {"class_id": 5}},
    "rb_selective": {
        "application": "rb_selective", "training_set": "clean", "forget": {"class_id": 5, "size": 30},
    },
    "rc": {"application": "rc", "training_set": "rc_confused", "method_params": {"scrub": {"gamma": 99.0}}},
    "up": {"application": "up", "training_set": "clean", "forget": {"class_id": 5, "size": 30}},
}


@pytest.fixture(scope="module")
def splits():
    return make_splits(load_digits_dataset(), {"val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0})


def _scenarios(**changes):
    scenarios = copy.deepcopy(SCENARIOS)
    for name, scenario in changes.items():
        scenarios[name] = scenario
    return scenarios


def _config_error(scenarios, training_sets=TRAINING_SETS, methods=("scrub",)) -> str:
    with pytest.raises(ValueError) as info:
        validation.check_config(scenarios, copy.deepcopy(training_sets), list(methods))
    return str(info.value)


# --- check_config ---


def test_base_config_passes():
    assert validation.check_config(copy.deepcopy(SCENARIOS), copy.deepcopy(TRAINING_SETS), ["scrub"]) is None
    assert validation.check_config(copy.deepcopy(SCENARIOS), copy.deepcopy(TRAINING_SETS),
                                   ["original", "retrain", "scrub"]) is None


def test_unknown_application_named_with_allowed():
    message = _config_error(_scenarios(bad={"application": "rb_everything", "forget": {"class_id": 1}}))
    assert "'bad'" in message
    assert "'rb_everything'" in message
    for application in APPLICATIONS:
        assert application in message


def test_missing_application_rejected():
    message = _config_error(_scenarios(bad={"training_set": "clean", "forget": {"class_id": 1}}))
    assert "'bad'" in message and "None" in message


def test_unknown_training_set_named_with_defined_ones():
    message = _config_error(_scenarios(
        bad={"application": "up", "training_set": "dirty", "forget": {"class_id": 1, "size": 5}}
    ))
    assert "'dirty'" in message
    assert "clean" in message and "rc_confused" in message


def test_rc_scenario_on_training_set_without_confuse_rejected():
    message = _config_error(_scenarios(rc={"application": "rc", "training_set": "clean"}))
    assert "'rc'" in message and "'clean'" in message and "confuse" in message


def test_non_rc_scenario_on_confused_training_set_rejected():
    message = _config_error(_scenarios(
        bad={"application": "up", "training_set": "rc_confused", "forget": {"class_id": 1, "size": 5}}
    ))
    assert "'rc_confused'" in message and "confuse" in message


def test_unknown_method_lists_known_methods():
    message = _config_error(copy.deepcopy(SCENARIOS), methods=("scrub", "magic_eraser"))
    assert "magic_eraser" in message
    for name in set(METHODS) | set(REFERENCES):
        assert name in message


def test_unknown_scenario_key_named_with_allowed():
    message = _config_error(_scenarios(
        up={"application": "up", "training_set": "clean", "forgett": {"class_id": 5, "size": 30}}
    ))
    assert "'up'" in message and "forgett" in message
    for key in validation.SCENARIO_KEYS:
        assert key in message


def test_empty_or_malformed_config_rejected():
    with pytest.raises(ValueError) as info:
        validation.check_config({}, copy.deepcopy(TRAINING_SETS), ["scrub"])
    assert "scenarios" in str(info.value)
    with pytest.raises(ValueError) as info:
        validation.check_config(copy.deepcopy(SCENARIOS), {}, ["scrub"])
    assert "training_sets" in str(info.value)
    with pytest.raises(ValueError) as info:
        validation.check_config(_scenarios(up="up"), copy.deepcopy(TRAINING_SETS), ["scrub"])
    assert "'up'" in str(info.value) and "mapping" in str(info.value)


def test_method_parameters_checked_in_every_scenario_when_given():
    training = {"optimizer": "sgd", "lr": 0.1, "epochs": 3, "batch_size": 64, "schedule": "cosine"}
    method_params = {"scrub": dict(optimizer="sgd", lr=0.01, weight_decay=5e-4, gamma=1.0, alpha=0.5,
                                   temperature=2.0, msteps=2, epochs=3, lr_decay_epochs=[2], retain_batch=32,
                                   forget_batch=32),
                     "eu_k": {"epochs": None}}
    methods = ["scrub", "scrub_r", "eu_k", "finetune"]
    assert validation.check_config(copy.deepcopy(SCENARIOS), copy.deepcopy(TRAINING_SETS), methods,
                                   copy.deepcopy(method_params), dict(training)) is None

    def error(method_params=method_params, training=training, scenarios=SCENARIOS, methods=methods) -> str:
        with pytest.raises(ValueError) as info:
            validation.check_config(copy.deepcopy(scenarios), copy.deepcopy(TRAINING_SETS), methods,
                                    copy.deepcopy(method_params), dict(training))
        return str(info.value)

    # a scenario's override out of range names the scenario, the method, the parameter and the value
    message = error(scenarios=_scenarios(rc={**SCENARIOS["rc"], "method_params": {"scrub": {"gamma": -1.0}}}))
    assert "'rc'" in message and "scrub" in message and "'gamma'" in message and "-1.0" in message
    # an undeclared parameter in a method's block, with the allowed names
    message = error(method_params={**method_params, "finetune": {"lerning_rate": 0.1}})
    assert "finetune" in message and "lerning_rate" in message and "allowed are" in message
    # the training recipe is Retrain's parameters
    message = error(training={**training, "schedule": "linear"})
    assert "retrain" in message and "'schedule'" in message and "'linear'" in message
    # a required parameter left out
    message = error(method_params={"scrub": {k: v for k, v in method_params["scrub"].items() if k != "lr"}})
    assert "scrub" in message and "missing" in message and "lr" in message
    # a block for an unregistered method, at the top or in a scenario
    assert "scrubb" in error(method_params={**method_params, "scrubb": {}})
    message = error(scenarios=_scenarios(up={**SCENARIOS["up"], "method_params": {"neggrad_minus": {}}}))
    assert "'up'" in message and "neggrad_minus" in message
    # SCRUB+R takes none
    assert "scrub_r" in error(method_params={**method_params, "scrub_r": {"epochs": 2}})


def test_method_parameters_not_checked_without_them():
    """Existing callers (no method_params, no training) check names and structure only."""
    assert validation.check_config(copy.deepcopy(SCENARIOS), copy.deepcopy(TRAINING_SETS), ["scrub"]) is None


# --- check_scenarios ---


def test_base_scenarios_pass_on_digits(splits):
    scenarios, training_sets = copy.deepcopy(SCENARIOS), copy.deepcopy(TRAINING_SETS)
    assert validation.check_scenarios(splits, scenarios, training_sets, [1, 2]) is None


@pytest.mark.parametrize("application", ["rb_class", "rb_selective", "up"])
def test_class_id_out_of_range_names_it(splits, application):
    forget = {"class_id": 12} if application == "rb_class" else {"class_id": 12, "size": 30}
    scenarios = _scenarios(bad={"application": application, "training_set": "clean", "forget": forget})
    with pytest.raises(ValueError) as info:
        validation.check_scenarios(splits, scenarios, copy.deepcopy(TRAINING_SETS), [1])
    message = str(info.value)
    assert "'bad'" in message and "12" in message and "0..9" in message


@pytest.mark.parametrize("application", ["rb_selective", "up"])
def test_forget_size_larger_than_class_names_it(splits, application):
    scenarios = _scenarios(bad={"application": application, "training_set": "clean",
                                "forget": {"class_id": 5, "size": 500}})
    with pytest.raises(ValueError) as info:
        validation.check_scenarios(splits, scenarios, copy.deepcopy(TRAINING_SETS), [1])
    message = str(info.value)
    assert "'bad'" in message and "500" in message and "class 5" in message


def test_confuse_size_larger_than_a_class_rejected(splits):
    training_sets = {"clean": {}, "rc_confused": {"confuse": {"classes": [3, 8], "size": 400}}}
    with pytest.raises(ValueError) as info:
        validation.check_scenarios(splits, copy.deepcopy(SCENARIOS), training_sets, [1])
    message = str(info.value)
    assert "'rc_confused'" in message and "200" in message and "class 3" in message


def test_confuse_class_out_of_range_rejected(splits):
    training_sets = {"clean": {}, "rc_confused": {"confuse": {"classes": [3, 10], "size": 40}}}
    with pytest.raises(ValueError) as info:
        validation.check_scenarios(splits, copy.deepcopy(SCENARIOS), training_sets, [1])
    message = str(info.value)
    assert "'rc_confused'" in message and "10" in message and "0..9" in message
