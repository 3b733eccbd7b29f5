"""Bad tuning input is rejected before any training, naming the value and what is allowed."""

from __future__ import annotations

import copy

import pytest
from conftest import PROJECT

from scrub_unlearning.validation import check_run_config, check_tuning_config


@pytest.fixture(scope="module")
def base_parameters():
    from scrub_unlearning.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    return CONFIG_LOADER_CLASS(str(PROJECT / "conf"), env="test", **CONFIG_LOADER_ARGS)["parameters"]


def _with(parameters, **tuning):
    changed = copy.deepcopy(parameters)
    changed["tuning"].update(tuning)
    return changed


def test_the_shipped_tuning_block_is_valid(base_parameters):
    check_run_config(base_parameters)
    checked = check_tuning_config(base_parameters["tuning"], base_parameters["scenarios"],
                                  base_parameters["methods"], base_parameters["seeds"])
    assert checked["methods"] == ["scrub", "finetune"] and checked["applications"] == ["up", "rb_selective"]
    every = check_tuning_config({**base_parameters["tuning"], "methods": None, "applications": None},
                                base_parameters["scenarios"], base_parameters["methods"], [1])
    assert "scrub_r" not in every["methods"] and "scrub" in every["methods"], "SCRUB+R rewinds SCRUB: tune scrub"
    assert every["applications"] == list(base_parameters["scenarios"])


@pytest.mark.parametrize("change, expected", [
    ({"methods": ["scrubb"]}, r"tuning.methods.*scrubb"),
    ({"methods": ["scrub_r"]}, r"tuning.methods.*SCRUB\+R rewinds"),
    ({"applications": ["nope"]}, r"tuning.applications.*nope"),
    ({"n_trials": 0}, r"tuning.n_trials"),
    ({"n_trials": "ten"}, r"tuning.n_trials"),
    ({"seed": 1}, r"tuning.seed.*must not be one of seeds"),
    ({"max_utility_drop": -1}, r"tuning.max_utility_drop"),
    ({"colour": "red"}, r"tuning: unknown parameter.*colour"),
])
def test_bad_tuning_parameters_are_named(base_parameters, change, expected):
    with pytest.raises(ValueError, match=expected):
        check_run_config(_with(base_parameters, **change))


@pytest.mark.parametrize("space, expected", [
    ({"scrub": {"lr": {"low": 0.1, "high": 0.01}}}, r"tuning.space.scrub.lr"),          # inverted
    ({"scrub": {"lr": {"low": 0.1, "high": 0.1}}}, r"tuning.space.scrub.lr"),           # empty
    ({"scrub": {"learning_rate": {"low": 0.1, "high": 1}}}, r"tuning.space.scrub.*learning_rate"),  # undeclared
    ({"scrub": {"msteps": {"choices": []}}}, r"tuning.space.scrub.msteps"),
    ({"scrubb": {"lr": {"low": 0.01, "high": 0.1}}}, r"tuning.space: unknown method.*scrubb"),
    ({"scrub": {"lr": {"low": 0.01, "high": 0.1}}}, r"no search space for \['finetune'\]"),
])
def test_bad_search_spaces_are_named(base_parameters, space, expected):
    with pytest.raises(ValueError, match=expected):
        check_run_config(_with(base_parameters, space={**({"finetune": base_parameters["tuning"]["space"]["finetune"]}
                                                          if "finetune" not in str(expected) else {}), **space}))


def test_method_params_source_is_config_or_tuned(base_parameters):
    with pytest.raises(ValueError, match="method_params_source"):
        check_run_config({**base_parameters, "method_params_source": "best"})
