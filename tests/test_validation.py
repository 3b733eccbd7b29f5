"""Bad input fails before training, with an error naming the bad value and what is allowed (DESIGN §7)."""

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
