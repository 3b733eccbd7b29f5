"""Several seeds: one namespace per seed, every seed's rows in the scenario table, mean ± std in the summary."""

from __future__ import annotations

import pandas as pd
import pytest

from scrub_unlearning.pipeline_registry import create_pipelines
from scrub_unlearning.pipelines.summary.nodes import build_run_table, summarise_seeds

SCENARIOS = {"up": {"application": "up", "training_set": "clean", "forget": {"class_id": 5, "size": 30}},
             "rc": {"application": "rc", "training_set": "rc_confused"}}
SETS = {"clean": {}, "rc_confused": {"confuse": {"classes": [3, 8], "size": 40}}}


def test_each_seed_is_its_own_namespace():
    pipes = create_pipelines(SCENARIOS, SETS, ["scrub", "scrub_r"], [1, 2, 3], {"enabled": True})
    default = pipes["__default__"]
    names = {n.name for n in default.nodes}
    for seed in (1, 2, 3):
        assert f"up.seed_{seed}.run_scrub" in names and f"rc.seed_{seed}.run_scrub_r" in names
        assert f"clean.seed_{seed}.train_original" in names and f"up.seed_{seed}.train_shadow_models" in names
    assert "rc.seed_1.train_shadow_models" not in names, "U-LiRA runs on UP scenarios only"
    table = next(n for n in default.nodes if n.name == "up.build_scenario_table")
    assert len(table.inputs) == 3 * 4  # seeds x (original, retrain, scrub, scrub_r)
    assert set(pipes) >= {"__default__", "up", "rc", "deletion_request"}
    with pytest.raises(ValueError, match="distinct"):
        create_pipelines(SCENARIOS, SETS, [], [1, 1])


def rows(scenario, model, values, status="ok"):
    return [{"scenario": scenario, "application": "up", "model": model, "seed": seed, "status": status,
             "failure": "", "forget_error": v, "seconds": 1.0, "guard_fired": False, "guard_epoch": None}
            for seed, v in zip((1, 2, 3), values, strict=True)]


def test_summary_is_mean_and_std_over_seeds():
    table = pd.DataFrame(rows("up", "scrub", [10.0, 20.0, 30.0]) + rows("up", "retrain", [5.0, 5.0, 5.0]))
    summary = summarise_seeds(table).set_index("model")
    assert summary.loc["scrub", "forget_error_mean"] == 20.0
    assert summary.loc["scrub", "forget_error_std"] == pytest.approx(10.0)  # sample std over seeds
    assert summary.loc["retrain", "forget_error_std"] == 0.0 and summary.loc["scrub", "seeds"] == 3
    _, built, _, markdown = build_run_table([1, 2, 3], up=table)
    assert built.set_index("model").loc["scrub", "forget_error_mean"] == 20.0 and "forget_error_mean" in markdown
    assert built.set_index("model").loc["scrub", "guard_fired_seeds"] == 0, "yes/no columns are counted"
    _, _, _, single = build_run_table([1], up=table[table["seed"] == 1])
    assert "forget_error_mean" not in single, "one seed: the table itself, no mean/std"
