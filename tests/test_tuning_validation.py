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


def test_every_tuning_seed_is_kept_out_of_seeds(base_parameters):
    """tuning.num_seeds: the tuning seeds are seed, seed+1, ...; none of them may be an evaluated seed."""
    tuning = {**base_parameters["tuning"], "seed": 101, "num_seeds": 3}
    scenarios, methods = base_parameters["scenarios"], base_parameters["methods"]
    assert check_tuning_config(tuning, scenarios, methods, [1, 2, 3])["num_seeds"] == 3
    with pytest.raises(ValueError, match=r"tuning.seed.*tuning.num_seeds 3: tuning seeds \[101, 102, 103\]"):
        check_tuning_config(tuning, scenarios, methods, [1, 103])
    with pytest.raises(ValueError, match=r"tuning.num_seeds"):
        check_tuning_config({**tuning, "num_seeds": 0}, scenarios, methods, [1])
    assert check_tuning_config(base_parameters["tuning"], scenarios, methods, [1])["num_seeds"] == 1, "the default"


def test_a_study_on_several_tuning_seeds_reads_each_seeds_original_and_forget_set():
    from scrub_unlearning.pipeline_registry import create_pipelines

    scenarios = {"up": {"application": "up", "training_set": "clean", "forget": {"class_id": 5, "size": 30}},
                 "rc": {"application": "rc", "training_set": "rc_confused"}}
    sets = {"clean": {}, "rc_confused": {"confuse": {"classes": [3, 8], "size": 40}}}
    tune = create_pipelines(scenarios, sets, ["scrub"], [1, 2], None, None,
                            {"seed": 101, "num_seeds": 2, "methods": ["scrub"]})["tune"]
    names = {n.name: n for n in tune.nodes}
    for seed in (101, 102):
        assert f"clean.seed_{seed}.train_original" in names and f"rc_confused.seed_{seed}.train_original" in names
        assert f"tune_up.seed_{seed}.make_forget_set" in names
    assert "tune_up.seed_102.tune_scrub" not in names, "one study per (scenario, method), on both seeds"
    study = names["tune_rc.seed_101.tune_scrub"]
    assert [i for i in study.inputs if "seed_" in i] == [
        "rc_confused.seed_101.original_model", "rc_confused.seed_101.training_set", "tune_rc.seed_101.forget_set",
        "rc_confused.seed_102.original_model", "rc_confused.seed_102.training_set", "tune_rc.seed_102.forget_set"]
    assert not any(n.endswith((".seed_1.train_original", ".seed_2.train_original")) for n in names), \
        "never an evaluated seed's Original"
