"""`kedro run --env test --pipelines=tune` end to end in a temporary copy of the project: studies persist and resume,
every trial is an MLflow child run, and the tuned settings file is what the next run reads."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from conftest import copy_project, kedro

STUDIES = {("up", "scrub"), ("up", "finetune")}  # conf/test/parameters_tuning.yml: 2 studies of 2 trials,
SHARED = {("rb_selective", "scrub"), ("rb_selective", "finetune")}  # ...which rb_selective shares


def _client(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")


def _tuned(project: Path) -> dict:
    return yaml.safe_load((project / "conf" / "test" / "parameters_tuned.yml").read_text())["tuned_test"]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("tuning"))
    assert not (root / "conf" / "test" / "parameters_tuned.yml").exists()
    result = kedro(root, "run", "--env", "test", "--pipelines=tune")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    assert (result.stdout + result.stderr).count("computes the same trials as on") == 2, "rb_selective shares up's"
    return root


def _runs(project: Path, pipeline: str):
    client = _client(project)
    experiment = client.get_experiment_by_name("scrub_unlearning_test")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if r.data.tags.get("pipeline") == pipeline]
    return parents, [r for r in runs if r.data.tags.get("mlflow.parentRunId") in {p.info.run_id for p in parents}]


def test_the_tuned_file_holds_each_study_with_provenance(project):
    tuned = _tuned(project)
    assert tuned["version"] == 1 and tuned["environment"] == "test"
    written = {(s, m) for s, methods in tuned["scenarios"].items() for m in methods}
    assert written == STUDIES | SHARED
    for method in ("scrub", "finetune"):  # one study, named by its objective: the same settings and provenance
        up, selective = tuned["scenarios"]["up"][method], tuned["scenarios"]["rb_selective"][method]
        assert selective["settings"] == up["settings"]
        assert selective["provenance"]["study"] == up["provenance"]["study"]
        assert up["provenance"]["study"].startswith(f"selective/{method}/")
    scrub = tuned["scenarios"]["up"]["scrub"]
    assert set(scrub["settings"]) == {"lr", "msteps", "alpha", "forget_batch"}
    assert 1e-3 <= scrub["settings"]["lr"] <= 0.05 and scrub["settings"]["forget_batch"] in (16, 32, 64)
    provenance = scrub["provenance"]
    assert provenance["trials"] == 2 and provenance["tuning_seed"] == 101 and provenance["storage"] == "studies.db"
    assert provenance["objective"] == pytest.approx(min(provenance["objective"], 1e9))
    assert {"forget_error", "unseen_error", "mia_basic", "kept_val_error"} <= set(provenance["parts"])
    assert (project / "data" / "test" / "09_tuning" / "studies.db").is_file()


def test_every_trial_is_an_mlflow_child_run(project):
    parents, children = _runs(project, "tune")
    assert len(parents) == 1
    trials = [c for c in children if c.data.tags.get("kind") == "trial"]
    assert len(trials) == 4, "the shared studies' trials ran once"
    ran = {(c.data.tags["scenario"], c.data.tags["method"]) for c in trials}
    assert {m for _, m in ran} == {"scrub", "finetune"} and len(ran) == 2, "each study's trials under one scenario"
    assert {s for s, _ in ran} <= {"up", "rb_selective"}
    for child in trials:
        assert "objective" in child.data.metrics and child.data.tags["state"] in ("COMPLETE", "PRUNED")
        duration = (child.info.end_time - child.info.start_time) / 1000
        assert duration == pytest.approx(child.data.metrics["seconds"], abs=0.01), "the run spans the trial"
        assert child.data.params, "the trial's settings are its params"
    scrub = [c for c in trials if c.data.tags["method"] == "scrub"]
    assert {"lr", "msteps", "alpha", "forget_batch"} <= set(scrub[0].data.params)


def test_a_rerun_continues_the_studies_and_the_next_run_reads_the_file(project):
    result = kedro(project, "run", "--env", "test", "--pipelines=tune", "--params", "tuning.n_trials=3")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    log = result.stdout + result.stderr
    assert log.count("2 of 3 trials already done, continuing") == 2
    parents, children = _runs(project, "tune")
    newest = max(parents, key=lambda r: r.info.start_time)
    assert len([c for c in children if c.data.tags.get("mlflow.parentRunId") == newest.info.run_id]) == 2
    tuned = _tuned(project)
    assert tuned["version"] == 2 and tuned["scenarios"]["up"]["scrub"]["provenance"]["trials"] == 3

    settings = tuned["scenarios"]["up"]["scrub"]["settings"]
    result = kedro(project, "run", "--env", "test", "--pipelines=up", "--tags", "method.scrub",
                   "--params", "method_params_source=tuned")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    _, children = _runs(project, "up")
    scrub = [c for c in children if c.data.tags.get("method") == "scrub"]
    assert len(scrub) == 1
    params = scrub[0].data.params
    assert float(params["lr"]) == pytest.approx(settings["lr"]) and int(params["msteps"]) == settings["msteps"]
    assert float(params["alpha"]) == pytest.approx(settings["alpha"])


def test_bad_tuning_input_fails_before_training(project):
    result = kedro(project, "run", "--env", "test", "--pipelines=tune", "--params", "tuning.n_trials=0")
    assert result.returncode != 0
    assert "tuning.n_trials" in result.stdout + result.stderr
    assert "Running node" not in result.stdout + result.stderr


def test_the_originals_recipe_is_tuned_on_validation_error_and_read_back(project):
    result = kedro(project, "run", "--env", "test", "--pipelines=tune_original", "--params",
                   "tuning.original.n_trials=1")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    tuned = _tuned(project)
    original = tuned["original"]
    assert set(original["settings"]) == {"lr", "epochs", "batch_size", "weight_decay"}
    assert 10 <= original["settings"]["epochs"] <= 30 and original["settings"]["batch_size"] in (32, 64, 128)
    assert original["provenance"]["objective"] == pytest.approx(original["provenance"]["parts"]["val_error"])
    assert set(tuned["scenarios"]["up"]) == {"scrub", "finetune"}, "the methods' entries are kept"

    from scrub_unlearning.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    loader = CONFIG_LOADER_CLASS(str(project / "conf"), env="test", runtime_params={"method_params_source": "tuned"},
                                 **CONFIG_LOADER_ARGS)
    training = loader["parameters"]["training"]
    assert {k: training[k] for k in original["settings"]} == original["settings"]
