"""`kedro run --env test` end to end in a temporary copy of the project, checked through MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import copy_project, kedro


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("project"))
    result = kedro(root, "run", "--env", "test")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return root


@pytest.fixture(scope="module")
def mlflow_run(project):
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}")
    experiment = client.get_experiment_by_name("scrub_unlearning")
    runs = client.search_runs([experiment.experiment_id])
    assert len(runs) == 1
    return client, runs[0]


def test_metrics_are_logged_per_scenario_model_metric(mlflow_run):
    _, run = mlflow_run
    metrics = run.data.metrics
    for scenario in ("rb_class", "rb_selective", "rc", "up"):
        for model in ("original", "retrain", "scrub", "scrub_r", "finetune", "neggrad", "neggrad_plus", "cf_k",
                      "eu_k", "fisher", "bad_teacher"):
            if (scenario, model) == ("rb_selective", "neggrad"):
                continue  # made to diverge in conf/test: checked below
            for metric in ("forget_error", "retain_error", "test_error", "val_error"):
                assert f"{scenario}.{model}.{metric}" in metrics
    assert "up.scrub.mia_basic" in metrics and "up.retrain.mia_basic" in metrics
    assert "rc.scrub.ic_error_test" in metrics and "rc.original.ic_count_retain" in metrics
    assert "rb_class.scrub.forgotten_class_test_error" in metrics
    assert "rb_class.scrub.mia_basic" not in metrics
    assert metrics["rb_class.scrub.forget_error"] >= metrics["rb_class.original.forget_error"] + 50
    assert metrics["rb_class.scrub.guard_fired"] == 0
    assert metrics["rb_selective.neggrad.failed"] == 1 and "rb_selective.neggrad.forget_error" not in metrics
    assert "up.scrub_r.forget_error_gap" in metrics and "up.fisher.mia_basic_gap" in metrics
    for model in ("original", "retrain", "scrub", "scrub_r", "finetune", "bad_teacher"):  # U-LiRA on up only
        for column in ("ulira_auc", "ulira_auc_ci_low", "ulira_auc_ci_high", "ulira_acc", "ulira_seconds"):
            assert f"up.{model}.{column}" in metrics
    assert "up.scrub.ulira_auc_gap" in metrics and "rb_selective.scrub.ulira_auc" not in metrics


def test_parameters_models_and_table_are_in_mlflow(mlflow_run):
    client, run = mlflow_run
    params = run.data.params
    assert params["method_params.scrub.temperature"] == "2.0"
    assert params["scenarios.rb_class.forget.class_id"] == "5"
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"reports", "models"} <= artifacts
    assert "reports/run_table.csv" in {a.path for a in client.list_artifacts(run.info.run_id, "reports")}
    scrub_files = {a.path for a in client.list_artifacts(run.info.run_id, "models/up/seed_1/scrub")}
    assert scrub_files == {"models/up/seed_1/scrub/weights.safetensors", "models/up/seed_1/scrub/spec.json"}
    up_models = {a.path for a in client.list_artifacts(run.info.run_id, "models/up/seed_1")}
    assert {"models/up/seed_1/retrain", "models/up/seed_1/scrub_r", "models/up/seed_1/fisher"} <= up_models
    clean = {a.path for a in client.list_artifacts(run.info.run_id, "models/clean/seed_1")}
    assert clean == {"models/clean/seed_1/original"}
    figures = {a.path for a in client.list_artifacts(run.info.run_id, "figures/up/seed_1")}
    assert {"figures/up/seed_1/scrub_ulira_roc.png", "figures/up/seed_1/retrain_ulira_roc.png"} <= figures


def test_outputs_hold_ids_not_images_and_weights_load_safely(project):
    import pandas as pd
    from safetensors.torch import load_file

    from scrub_unlearning.models import load_model

    data = project / "data" / "test"
    forget = pd.read_csv(data / "03_primary" / "rb_selective" / "seed_1" / "forget_ids.csv")
    assert list(forget.columns) == ["id", "label", "true_label"] and len(forget) == 30
    import json

    folder = data / "06_models" / "rb_class" / "seed_1" / "scrub"
    assert sorted(p.name for p in folder.iterdir()) == ["spec.json", "weights.safetensors"]
    model = load_model(json.loads((folder / "spec.json").read_text()), load_file(folder / "weights.safetensors"))
    assert model.spec["architecture"] == "small_cnn"
    table = pd.read_csv(next((data / "08_reporting" / "run_table.csv").glob("*/run_table.csv")))
    models = {"original", "retrain", "scrub", "scrub_r", "finetune", "neggrad", "neggrad_plus", "cf_k", "eu_k",
              "fisher", "bad_teacher"}
    assert len(table) == 4 * len(models) and set(table["model"]) == models
    # conf/test makes NegGrad diverge on rb_selective: a failed row, no model, and the run went on
    failed = table[table["status"] == "failed"]
    assert list(zip(failed["scenario"], failed["model"], strict=True)) == [("rb_selective", "neggrad")]
    assert "DivergenceError" in failed["failure"].iloc[0] and failed["forget_error"].isna().all()
    assert not (data / "06_models" / "rb_selective" / "seed_1" / "neggrad").exists()
    assert (data / "06_models" / "up" / "seed_1" / "neggrad" / "weights.safetensors").is_file()
    ok = table[table["status"] == "ok"]
    assert ok[["forget_error", "retain_error", "test_error", "val_error", "seconds"]].notna().all().all()
    assert ok[ok["model"] != "original"]["scale_up"].notna().all() and table[table["model"] == "original"][
        "scale_up"].isna().all()
    assert ok[ok["model"] != "retrain"]["tow"].notna().all()


def test_single_scenario_pipeline_and_versioned_tables(project):
    result = kedro(project, "run", "--env", "test", "--pipelines", "up")
    assert result.returncode == 0, result.stderr[-3000:]
    versions = list((project / "data" / "test" / "08_reporting" / "up" / "metrics.csv").iterdir())
    assert len(versions) == 2, "two runs keep both versions of the scenario table"
    rb_versions = list((project / "data" / "test" / "08_reporting" / "rb_class" / "metrics.csv").iterdir())
    assert len(rb_versions) == 1, "--pipelines=up runs only the up scenario"
    import json

    manifest = json.loads((project / "data" / "test" / "07_model_output" / "up" / "seed_1" /
                           "shadow_manifest.json").read_text())
    assert manifest["trained"] == 0 and manifest["reused"] == 6, "a rerun with the same inputs trains no shadow"


@pytest.mark.parametrize("override, expected", [
    ("scenarios.up.forget.class_id=12", "12"),
    ("scenarios.up.forget.size=5000", "5000"),
    ("scenarios.up.application=forget_everything", "forget_everything"),
    ("dataset.source=npz,dataset.path=missing.npz", "missing.npz"),
])
def test_bad_input_fails_before_training(project, override, expected):
    models = project / "data" / "test" / "06_models"
    before = {p: p.stat().st_mtime_ns for p in models.rglob("*.safetensors")}
    result = kedro(project, "run", "--env", "test", "--pipelines", "up", "--params", override)
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert "Running node: up.run_scrub" not in result.stdout + result.stderr
    assert {p: p.stat().st_mtime_ns for p in models.rglob("*.safetensors")} == before


def test_tags_run_one_method_and_what_it_needs(project):
    """`--tags method.scrub_r`: SCRUB+R's nodes plus what they need (data, Original, Retrain, SCRUB), nothing else."""
    result = kedro(project, "run", "--env", "test", "--pipelines", "up", "--tags", "method.scrub_r",
                   env={"COLUMNS": "400"})
    output = result.stdout + result.stderr
    assert result.returncode == 0, output[-3000:]
    for needed in ("up.seed_1.run_scrub_r", "up.seed_1.run_scrub", "up.seed_1.run_retrain",
                   "clean.seed_1.train_original", "up.seed_1.evaluate_scrub_r", "up.seed_1.attack_scrub_r"):
        assert f"Completed node: {needed}" in output
    assert "run_finetune" not in output and "evaluate_fisher" not in output
