"""`kedro run --env test` end to end in a temporary copy of the project, checked through MLflow."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import copy_project, kedro

from scrub_unlearning.methods import METHODS

BASE_MODEL = "scrub_unlearning_digits"  # base's registered model: a test-env run must never touch it
MODELS = ("original", *METHODS)  # every registered method runs in the test env
SCENARIOS = ("rb_class", "rb_selective", "rc", "up")


def _client(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}",
                        registry_uri=f"sqlite:///{project / 'mlflow.db'}")


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> Path:
    root = copy_project(tmp_path_factory.mktemp("project"))
    client = _client(root)  # base's registry as production has it: a version serving
    client.create_registered_model(BASE_MODEL)
    version = client.create_model_version(BASE_MODEL, source=str(root / "elsewhere"))
    client.set_registered_model_alias(BASE_MODEL, "serving", version.version)
    result = kedro(root, "run", "--env", "test")
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-5000:]
    return root


@pytest.fixture(scope="module")
def mlflow_runs(project):
    client = _client(project)
    experiment = client.get_experiment_by_name("scrub_unlearning_test")
    runs = client.search_runs([experiment.experiment_id], max_results=1000)
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    assert len(parents) == 1, "one parent run per kedro run"
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(children) == len(runs) - 1
    return client, parents[0], {(r.data.tags["scenario"], r.data.tags["method"]): r for r in children}


def test_one_parent_run_and_one_child_per_scenario_and_model(mlflow_runs):
    _, parent, children = mlflow_runs
    tags = parent.data.tags
    assert tags["env"] == "test" and tags["pipeline"] == "default"
    assert tags["mlflow.runName"].startswith("default · test · ")
    assert "." not in tags.get("runner", "Sequential"), "the runner tag is a class name, not a repr"
    assert not any("." in name for name in parent.data.metrics), "no flat <scenario>.<model>.<metric> wall"
    assert set(children) == {(s, m) for s in SCENARIOS for m in MODELS}
    for (scenario, method), run in children.items():
        child = run.data.tags
        assert child["env"] == "test" and child["scenario"] == scenario and child["method"] == method
        assert child["seed"] == "1" and child["application"] == scenario  # digits: each scenario is its application
        assert child["status"] in ("ok", "failed") and " · seed 1" in child["mlflow.runName"]


def test_child_runs_hold_short_metrics_params_curves_and_artifacts(mlflow_runs):
    client, _, children = mlflow_runs
    for (scenario, method), run in children.items():
        if (scenario, method) == ("rb_selective", "neggrad"):
            continue  # made to diverge in conf/test: checked below
        assert {"forget_error", "retain_error", "test_error", "val_error"} <= set(run.data.metrics)
        assert run.info.status == "FINISHED" and run.data.metrics["failed"] == 0
    assert {"mia_basic", "ulira_auc", "ulira_auc_ci_low", "ulira_auc_gap"} <= set(children["up", "scrub"].data.metrics)
    assert {"ic_error_test", "ic_count_retain"} <= set(children["rc", "original"].data.metrics)
    assert "forgotten_class_test_error" in children["rb_class", "scrub"].data.metrics
    assert "mia_basic" not in children["rb_class", "scrub"].data.metrics
    scrub = children["rb_class", "scrub"]
    assert scrub.data.metrics["forget_error"] >= children["rb_class", "original"].data.metrics["forget_error"] + 50
    assert scrub.data.metrics["guard_fired"] == 0 and "guard_fired" not in children["rb_class", "fisher"].data.metrics
    failed = children["rb_selective", "neggrad"]
    assert failed.info.status == "FAILED" and failed.data.tags["status"] == "failed"
    assert "DivergenceError" in failed.data.tags["failure"] and failed.data.metrics["failed"] == 1
    assert "forget_error" not in failed.data.metrics
    # the method's parameters, and per-epoch curves with real steps
    assert scrub.data.params["temperature"] == "2.0" and scrub.data.params["epochs"] == "5"
    assert children["up", "retrain"].data.params["epochs"] == "8", "Retrain's parameters are the recipe"
    history = client.get_metric_history(scrub.info.run_id, "val_error_kept")
    assert sorted(m.step for m in history) == [0, 1, 2, 3, 4, 5], "epoch 0 = the Original, then every epoch"
    losses = client.get_metric_history(children["up", "original"].info.run_id, "epoch_losses")
    assert sorted(m.step for m in losses) == list(range(1, 9))
    # weights, spec and the U-LiRA ROC on the child; nothing of the kind on the parent
    up_scrub = children["up", "scrub"].info.run_id
    assert {a.path for a in client.list_artifacts(up_scrub, "model")} == {"model/weights.safetensors",
                                                                         "model/spec.json"}
    assert {a.path for a in client.list_artifacts(up_scrub, "figures")} == {"figures/ulira_roc.png"}
    assert client.list_artifacts(failed.info.run_id, "model") == [], "a failed method has no model"


def test_the_parent_keeps_the_table_the_report_and_the_splits(mlflow_runs):
    client, parent, _ = mlflow_runs
    assert {a.path for a in client.list_artifacts(parent.info.run_id)} >= {"reports"}
    reports = {a.path for a in client.list_artifacts(parent.info.run_id, "reports")}
    assert {"reports/run_table.csv", "reports/report.html"} <= reports
    assert not {"models", "figures"} & {a.path for a in client.list_artifacts(parent.info.run_id)}
    assert parent.data.params["method_params.scrub.temperature"] == "2.0"
    inputs = parent.inputs.dataset_inputs
    assert [i.dataset.name for i in inputs] == ["splits (test)"]
    assert int(parent.data.tags["split_size.train"]) > 0


def test_a_test_env_run_leaves_base_untouched(project, mlflow_runs, monkeypatch):
    client, _, _ = mlflow_runs
    base = client.get_experiment_by_name("scrub_unlearning")
    assert base is None or not client.search_runs([base.experiment_id]), "no run in base's experiment"
    assert [str(v.version) for v in client.search_model_versions(f"name='{BASE_MODEL}'")] == ["1"]
    assert str(client.get_model_version_by_alias(BASE_MODEL, "serving").version) == "1"
    own = client.get_model_version_by_alias("scrub_unlearning_test", "serving")
    import mlflow

    # through the environment, restored after the test (mlflow.set_*_uri would leak into later subprocesses)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{project / 'mlflow.db'}")
    monkeypatch.setenv("MLFLOW_REGISTRY_URI", f"sqlite:///{project / 'mlflow.db'}")
    info = mlflow.models.get_model_info(f"models:/scrub_unlearning_test/{own.version}")
    assert info.signature is not None and info.signature.inputs.to_dict()[0]["tensor-spec"]["dtype"] == "uint8"
    assert own.tags["training"].startswith("{") and '"lr": 0.1' in own.tags["training"], "JSON, not a repr"


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
    models = set(MODELS)
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


def test_kedro_viz_shows_stages_not_per_method_datasets(project):
    """`kedro viz build` (the README's offline DAG view): with namespaces collapsed, the root holds the stages and
    the run-wide datasets, not per-method outputs (170 elements before this layout, 142 of them datasets; 58 after,
    64 with pre-training and the model store, 66 with the registration's audit shadows)."""
    import json

    result = kedro(project, "viz", "build")
    assert result.returncode == 0, result.stderr[-3000:]
    main = json.loads((project / "build" / "api" / "main").read_text())
    names = {n["id"]: n["name"] for n in main["nodes"]}
    root = main["modular_pipelines"]["__root__"]["children"]
    datasets = [names[c["id"]] for c in root if c["type"] == "data"]
    # 58 with the default methods, + the run-wide pre-training node, its parameters, store and outputs, and the
    # model store: 64
    assert len(root) <= 68, f"{len(root)} elements at the root"  # + the audit-shadow node and its manifest
    per_method = [d for d in datasets if ".seed_" in d and d.endswith(("_ulira_scores", "_ulira_roc", "_mlflow",
                                                                          "_trajectory"))]
    assert not per_method, per_method


def test_one_method_from_the_command_line(project):
    """The README's `--params "methods=[scrub]"`: Original, Retrain and SCRUB only."""
    result = kedro(project, "run", "--env", "test", "--pipelines", "rb_class", "--params", "methods=[scrub]")
    assert result.returncode == 0, result.stderr[-3000:]
    import pandas as pd

    latest = sorted((project / "data" / "test" / "08_reporting" / "run_table.csv").glob("*/run_table.csv"))[-1]
    assert sorted(pd.read_csv(latest)["model"]) == ["original", "retrain", "scrub"]
    # nothing changed since the full run: the Original, Retrain and SCRUB come from the model store, not retrained
    log = result.stdout + result.stderr
    assert "original clean: reused from the model store" in log and "retrain: reused from the model store" in log
    assert "scrub: reused from the model store" in log and "scrub: done in" not in log
