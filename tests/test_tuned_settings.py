"""Tuned settings: `method_params_source: tuned` overlays the tuned settings on the configured parameters (tuned
keys replace, the rest stay, the input is untouched), `config` ignores them; missing or foreign tuned settings are
errors; every write bumps the version and keeps the entries it does not replace; the file text round-trips."""

from __future__ import annotations

import copy
import json

import pytest
import yaml

from scrub_unlearning.methods import METHODS, check_method_params, method_parameters
from scrub_unlearning.tuning.settings_file import (
    ORIGINAL_MODEL_KEYS,
    SOURCE_KEY,
    SOURCES,
    TUNED_KEY,
    apply_tuned_settings,
    select_environment,
    tuned_file_text,
    updated_tuned_settings,
)

PROVENANCE = {"study": "base/rb_class/scrub", "trials": 6, "complete": 5, "pruned": 1, "objective": 0.4,
              "parts": {"forget": 0.1, "utility": 0.3}, "date": "2026-12-01T04:10:00+00:00", "storage": "sqlite:///x"}


def _parameters(**extra) -> dict:
    """A configuration in the shape of conf/base (the parts the overlay reads)."""
    return {
        "training": {"optimizer": "sgd", "lr": 0.1, "momentum": 0.9, "weight_decay": 5.0e-4, "epochs": 30,
                     "batch_size": 64, "schedule": "cosine"},
        "model": {"architecture": "small_cnn"},
        "methods": ["scrub", "finetune"],
        "method_params": {
            "scrub": {"optimizer": "sgd", "lr": 0.01, "weight_decay": 5.0e-4, "momentum": 0.9, "gamma": 1.0,
                      "alpha": 0.5, "temperature": 2.0, "msteps": 2, "epochs": 10, "lr_decay_epochs": [5, 8, 9],
                      "retain_batch": 32, "forget_batch": 32},
            "finetune": {"optimizer": "sgd", "lr": 0.01, "momentum": 0.9, "weight_decay": 5.0e-4, "epochs": 10,
                         "batch_size": 128},
        },
        "scenarios": {
            "rb_class": {"application": "rb_class", "training_set": "clean", "forget": {"class_id": 5},
                         "method_params": {"scrub": {"msteps": 3, "forget_batch": 64}}},
            "rc": {"application": "rc", "training_set": "rc_confused"},
        },
        **extra,
    }


def _tuned() -> dict:
    return {
        "version": 3, "environment": "base", "written": "2026-12-01T04:10:00+00:00",
        "original": {"settings": {"lr": 0.05, "epochs": 12, "batch_size": 64, "weight_decay": 5.0e-4, "width": 1.5},
                     "provenance": {"study": "base/original", "trials": 6, "objective": 3.2}},
        "scenarios": {
            "rb_class": {"scrub": {"settings": {"lr": 0.0031, "msteps": 2}, "provenance": PROVENANCE},
                         "finetune": {"settings": {"lr": 0.02, "epochs": 5}, "provenance": {}}},
            "rc": {"scrub": {"settings": {"lr_decay_epochs": [3, 6], "optimizer": "adam"}, "provenance": {}}},
        },
    }


# --- overlay ---

def test_tuned_keys_replace_and_the_others_stay():
    parameters = _parameters(**{SOURCE_KEY: "tuned", TUNED_KEY: _tuned()})
    applied = apply_tuned_settings(parameters)
    rb_class = applied["scenarios"]["rb_class"]["method_params"]
    # tuned keys replace; the scenario's own untuned override (forget_batch) stays
    assert rb_class["scrub"] == {"msteps": 2, "forget_batch": 64, "lr": 0.0031}
    assert rb_class["finetune"] == {"lr": 0.02, "epochs": 5}
    # a scenario without method_params gets them
    assert applied["scenarios"]["rc"]["method_params"] == {"scrub": {"lr_decay_epochs": [3, 6], "optimizer": "adam"}}
    # the global blocks and everything else stay
    assert applied["method_params"] == parameters["method_params"]
    assert applied["scenarios"]["rb_class"]["forget"] == {"class_id": 5}
    # what a method runs with: tuned values over the configured ones
    merged = method_parameters("scrub", applied["method_params"], applied["scenarios"]["rb_class"],
                               applied["training"])
    checked = check_method_params("scrub", merged)
    assert (checked["lr"], checked["msteps"], checked["forget_batch"], checked["gamma"]) == (0.0031, 2, 64, 1.0)
    rc = check_method_params("scrub", method_parameters("scrub", applied["method_params"], applied["scenarios"]["rc"],
                                                        applied["training"]))
    assert (rc["optimizer"], rc["lr_decay_epochs"], rc["lr"]) == ("adam", [3, 6], 0.01)


def test_original_settings_split_into_training_and_model():
    applied = apply_tuned_settings(_parameters(**{TUNED_KEY: _tuned()}), source="tuned")
    assert ORIGINAL_MODEL_KEYS == ("width",)
    assert applied["training"] == {"optimizer": "sgd", "lr": 0.05, "momentum": 0.9, "weight_decay": 5.0e-4,
                                   "epochs": 12, "batch_size": 64, "schedule": "cosine"}
    assert applied["model"] == {"architecture": "small_cnn", "width": 1.5}
    # Retrain runs the Original's recipe: the tuned one
    retrain = method_parameters("retrain", applied["method_params"], applied["scenarios"]["rb_class"],
                                applied["training"])
    assert retrain["lr"] == 0.05 and METHODS["retrain"].training_recipe


def test_original_without_model_keys_leaves_model():
    tuned = _tuned()
    del tuned["original"]["settings"]["width"]
    applied = apply_tuned_settings(_parameters(**{TUNED_KEY: tuned}), source="tuned")
    assert applied["model"] == {"architecture": "small_cnn"}
    assert applied["training"]["lr"] == 0.05


def test_only_original_tuned():
    tuned = {"version": 1, "original": _tuned()["original"], "scenarios": {}}
    parameters = _parameters(**{TUNED_KEY: tuned})
    applied = apply_tuned_settings(parameters, source="tuned")
    assert applied["training"]["epochs"] == 12
    assert applied["scenarios"] == parameters["scenarios"]


def test_input_is_not_mutated():
    parameters = _parameters(**{SOURCE_KEY: "tuned", TUNED_KEY: _tuned()})
    before = copy.deepcopy(parameters)
    applied = apply_tuned_settings(parameters)
    assert parameters == before
    applied["scenarios"]["rb_class"]["method_params"]["scrub"]["lr"] = 1.0
    applied["training"]["lr"] = 1.0
    applied[TUNED_KEY]["scenarios"]["rc"]["scrub"]["settings"]["lr_decay_epochs"].append(7)
    assert parameters == before


@pytest.mark.parametrize("how", ["default", "explicit", "argument", "null"])
def test_config_source_leaves_everything(how):
    parameters = _parameters(**{TUNED_KEY: _tuned()})
    if how == "explicit":
        parameters[SOURCE_KEY] = "config"
    if how == "null":
        parameters[SOURCE_KEY] = None
    applied = apply_tuned_settings(parameters, source="config" if how == "argument" else None)
    assert applied == parameters and applied is not parameters
    assert applied["scenarios"] is not parameters["scenarios"]


def test_argument_overrides_the_parameter():
    parameters = _parameters(**{SOURCE_KEY: "config", TUNED_KEY: _tuned()})
    assert apply_tuned_settings(parameters, source="tuned")["training"]["lr"] == 0.05
    parameters[SOURCE_KEY] = "tuned"
    assert apply_tuned_settings(parameters, source="config") == parameters


@pytest.mark.parametrize("source", ["Tuned", "file", ""])
def test_unknown_source(source):
    with pytest.raises(ValueError) as info:
        apply_tuned_settings(_parameters(**{SOURCE_KEY: source}))
    assert SOURCE_KEY in str(info.value) and str(list(SOURCES)) in str(info.value) and repr(source) in str(info.value)


@pytest.mark.parametrize("tuned", ["missing", None, {}, {"version": 2, "scenarios": {}}])
def test_tuned_source_without_tuned_settings(tuned):
    parameters = _parameters(**{SOURCE_KEY: "tuned"})
    if tuned != "missing":
        parameters[TUNED_KEY] = tuned
    with pytest.raises(ValueError) as info:
        apply_tuned_settings(parameters)
    assert "kedro run --pipelines=tune --env" in str(info.value) and "no tuned settings" in str(info.value)


def test_tuned_scenario_not_in_the_configuration():
    tuned = _tuned()
    tuned["scenarios"]["up_large"] = {"scrub": {"settings": {"lr": 0.1}, "provenance": {}}}
    with pytest.raises(ValueError) as info:
        apply_tuned_settings(_parameters(**{TUNED_KEY: tuned}), source="tuned")
    message = str(info.value)
    assert "['up_large']" in message and "another configuration" in message and "'rb_class'" in message


def test_malformed_tuned_entries():
    tuned = _tuned()
    tuned["scenarios"]["rb_class"]["scrub"] = {"settings": [0.1]}
    with pytest.raises(ValueError, match=r"tuned\.scenarios\.rb_class\.scrub\.settings"):
        apply_tuned_settings(_parameters(**{TUNED_KEY: tuned}), source="tuned")
    with pytest.raises(ValueError, match="'tuned' must be a mapping"):
        apply_tuned_settings(_parameters(**{TUNED_KEY: [1]}), source="tuned")


# --- writing ---

def _result(scenario, method, settings, **provenance) -> dict:
    return {"scenario": scenario, "method": method, "settings": settings, "provenance": provenance}


def test_first_write():
    tuned = updated_tuned_settings(None, [_result("rb_class", "scrub", {"lr": 0.003}, trials=6)], "base", "T1")
    assert tuned == {"version": 1, "environment": "base", "written": "T1",
                     "scenarios": {"rb_class": {"scrub": {"settings": {"lr": 0.003}, "provenance": {"trials": 6}}}}}
    assert updated_tuned_settings({}, [], "base", "T1")["version"] == 1


def test_a_part_that_does_not_apply_is_written_as_null():
    """NaN marks a part that does not apply (`guard_epoch` when the guard did not fire); the file, and the presets
    exported from it as strict JSON, hold null instead."""
    parts = {"guard_epoch": float("nan"), "mia_distance": float("inf"), "kept_val_error": 26.4}
    tuned = updated_tuned_settings(None, [_result("up", "scrub", {"lr": 3e-4}, parts=parts)], "base", "T1")
    assert tuned["scenarios"]["up"]["scrub"]["provenance"]["parts"] == {"guard_epoch": None, "mia_distance": None,
                                                                         "kept_val_error": 26.4}
    json.dumps(tuned, allow_nan=False)


def test_version_increments_and_entries_are_kept_or_replaced():
    previous = _tuned()
    before = copy.deepcopy(previous)
    results = [_result("rb_class", "scrub", {"lr": 0.0042, "msteps": 4}, study="base/rb_class/scrub", trials=8),
               _result("rc", "finetune", {"lr": 0.03}, trials=4),
               _result("up", "scrub", {"lr": 0.001}, trials=2)]
    tuned = updated_tuned_settings(previous, results, "base", "2026-12-02T00:00:00+00:00")
    assert previous == before  # the previous block is not touched
    assert (tuned["version"], tuned["environment"], tuned["written"]) == (4, "base", "2026-12-02T00:00:00+00:00")
    scenarios = tuned["scenarios"]
    # replaced
    assert scenarios["rb_class"]["scrub"] == {"settings": {"lr": 0.0042, "msteps": 4},
                                              "provenance": {"study": "base/rb_class/scrub", "trials": 8}}
    # kept
    assert scenarios["rb_class"]["finetune"] == before["scenarios"]["rb_class"]["finetune"]
    assert scenarios["rc"]["scrub"] == before["scenarios"]["rc"]["scrub"]
    assert tuned["original"] == before["original"]
    # added
    assert scenarios["rc"]["finetune"]["settings"] == {"lr": 0.03}
    assert scenarios["up"]["scrub"]["settings"] == {"lr": 0.001}
    # and again
    assert updated_tuned_settings(tuned, [], "base", "T3")["version"] == 5


def test_original_result_replaces_the_original():
    tuned = updated_tuned_settings(_tuned(), [_result(None, "original", {"lr": 0.02, "width": 2.0}, objective=2.9)],
                                   "base", "T")
    assert tuned["original"] == {"settings": {"lr": 0.02, "width": 2.0}, "provenance": {"objective": 2.9}}
    assert tuned["scenarios"] == _tuned()["scenarios"]


@pytest.mark.parametrize("scenario, method", [(None, "scrub"), ("rb_class", "original")])
def test_result_scenario_and_method_must_agree(scenario, method):
    with pytest.raises(ValueError, match="original"):
        updated_tuned_settings(None, [_result(scenario, method, {"lr": 0.1})], "base", "T")


def test_bad_previous_version():
    with pytest.raises(ValueError, match=r"tuned\.version"):
        updated_tuned_settings({"version": "three"}, [], "base", "T")


def test_written_settings_apply():
    tuned = updated_tuned_settings(None, [_result("rb_class", "scrub", {"lr": 0.003}),
                                          _result(None, "original", {"epochs": 15})], "base", "T")
    applied = apply_tuned_settings(_parameters(**{TUNED_KEY: tuned}), source="tuned")
    assert applied["scenarios"]["rb_class"]["method_params"]["scrub"]["lr"] == 0.003
    assert applied["training"]["epochs"] == 15


def test_file_text_round_trips():
    tuned = updated_tuned_settings(_tuned(), [_result("rb_class", "scrub", {"lr": 0.0042, "lr_decay_epochs": (3, 6)},
                                                      parts={"forget": 0.5})], "base", "2026-12-02T00:00:00+00:00")
    text = tuned_file_text(tuned)
    header = [line for line in text.splitlines() if line.startswith("#")]
    assert header and "kedro run --pipelines=tune" in text and "method_params_source: tuned" in text
    assert "by hand" in text and "provenance" in text
    loaded = yaml.safe_load(text)
    assert list(loaded) == ["tuned_base"], "each environment's file has its own key"
    loaded = select_environment(loaded, "base")
    assert loaded[TUNED_KEY]["scenarios"]["rb_class"]["scrub"]["settings"] == {"lr": 0.0042, "lr_decay_epochs": [3, 6]}
    assert loaded[TUNED_KEY] == tuned
    assert list(loaded[TUNED_KEY])[:3] == ["version", "environment", "written"]  # not sorted
    # what was read back applies like what was written
    parameters = _parameters(**{TUNED_KEY: loaded[TUNED_KEY]})
    assert apply_tuned_settings(parameters, source="tuned") == apply_tuned_settings(
        _parameters(**{TUNED_KEY: tuned}), source="tuned")


def test_another_environments_tuned_block_is_never_applied():
    """Every environment loads base's parameters, base's file included: only the running environment's block
    (`tuned_<env>`) is used, and an environment without a file of its own has no tuned settings."""
    base_block = updated_tuned_settings(None, [_result("rb_class", "scrub", {"lr": 0.0042})], "base", "t")
    parameters = _parameters(**{"tuned_base": base_block, SOURCE_KEY: "tuned"})
    assert select_environment(parameters, "base")[TUNED_KEY] == base_block
    cifar5 = select_environment(parameters, "cifar5")
    assert TUNED_KEY not in cifar5 and "tuned_base" not in cifar5
    with pytest.raises(ValueError, match="no tuned settings"):
        apply_tuned_settings(cifar5)
