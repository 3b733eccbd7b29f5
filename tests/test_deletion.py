"""Serving a deletion request end to end: register, unlearn, gate, promote, ledger, idempotence, bad requests."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml
from conftest import copy_project, kedro

SAMPLE_IDS = [32, 71, 109, 120, 145, 201, 230, 245, 261, 281, 289, 358, 376, 401, 419, 432, 488, 503, 521, 633]
OTHER_CLASS_5_IDS = [33, 102, 117]  # training ids of digit 5 that the sample does not contain


def write_request(folder: Path, name: str, request_id: str, ids: list[int]) -> str:
    path = folder / f"{name}.csv"
    path.write_text("request_id,id\n" + "".join(f"{request_id},{i}\n" for i in ids))
    return str(path)


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    root = copy_project(tmp_path_factory.mktemp("serving"))
    result = kedro(root, "run", "--env", "test", "--pipelines", "register")
    assert result.returncode == 0, result.stderr[-4000:]
    return root


def model_name(project: Path) -> str:
    """The registered model's name in the `test` environment (its own, else base's)."""
    for env in ("test", "base"):
        parameters = yaml.safe_load((project / "conf" / env / "parameters.yml").read_text()) or {}
        name = (parameters.get("registry") or {}).get("model_name")
        if name:
            return name
    raise AssertionError("no registry.model_name in conf/test or conf/base")


def versions(project: Path) -> list:
    return client(project).search_model_versions(f"name='{model_name(project)}'")


def serving(project: Path) -> str:
    return str(client(project).get_model_version_by_alias(model_name(project), "serving").version)


def client(project: Path):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=f"sqlite:///{project / 'mlflow.db'}",
                        registry_uri=f"sqlite:///{project / 'mlflow.db'}")


def summary(project: Path) -> dict:
    latest = sorted((project / "data" / "test" / "08_reporting" / "deletion_request" / "summary.json").iterdir())[-1]
    return json.loads((latest / "summary.json").read_text())


def ledger_lines(project: Path) -> list[dict]:
    path = project / "data" / "test" / "08_reporting" / "deletion_ledger.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def test_the_original_is_registered_and_serving(served):
    assert serving(served) == "1"
    version = client(served).get_model_version(model_name(served), "1")
    assert version.tags["role"] == "original" and "data_version" in version.tags
    assert float(version.tags["metric.test_error"]) < 10


def test_the_sample_request_is_served_and_a_rerun_does_nothing(served):
    result = kedro(served, "run", "--env", "test", "--pipelines", "deletion_request")
    assert result.returncode == 0, result.stderr[-4000:]
    first = summary(served)
    assert first["version_before"] == "1" and first["version_after"] == "2" and first["promoted"]
    assert first["method"] == "scrub_r" and first["count"] == 20
    assert serving(served) == "2"
    tags = client(served).get_model_version(model_name(served), "2").tags
    assert tags["request_id"] == "req-0001" and tags["method"] == "scrub_r" and tags["replaces_version"] == "1"
    entries = ledger_lines(served)
    assert len(entries) == 1 and entries[0]["count"] == 20 and entries[0]["version_after"] == "2"
    text = (served / "data" / "test" / "08_reporting" / "deletion_ledger.jsonl").read_text()
    assert not any(f'"{i}"' in text or f" {i}," in text or f"[{i}," in text for i in SAMPLE_IDS), "ids in clear"
    reports = served / "data" / "test" / "08_reporting" / "deletion_request" / "report.html"
    report = (sorted(reports.iterdir())[-1] / "report.html").read_text()
    assert "req-0001" in report and "Quality gates" in report and "Retrain" not in report

    again = kedro(served, "run", "--env", "test", "--pipelines", "deletion_request")
    assert again.returncode == 0, again.stderr[-4000:]
    assert summary(served)["skipped"] is True
    assert len(versions(served)) == 2
    assert len(ledger_lines(served)) == 1
    assert len(list(reports.iterdir())) == 2, "the no-op run wrote its own report version"
    noop = (sorted(reports.iterdir())[-1] / "report.html").read_text()
    assert "Nothing was done" in noop and "no\nmodel was trained" in noop


def test_a_version_failing_the_gates_is_registered_not_promoted(served, tmp_path):
    path = write_request(tmp_path, "strict", "req-0002", OTHER_CLASS_5_IDS + [147, 150])
    result = kedro(served, "run", "--env", "test", "--pipelines", "deletion_request", "--params",
                   f"deletion_request.path={path},deletion_request.gates.enabled=true,"
                   "deletion_request.gates.max_test_error_increase=-100,deletion_request.ulira.enabled=true,"
                   "deletion_request.ulira.num_shadows=4,deletion_request.ulira.bootstrap=50")
    assert result.returncode == 0, result.stderr[-4000:]
    assert "NOT promoted" in result.stdout + result.stderr and "test_error_increase" in result.stdout + result.stderr
    outcome = summary(served)
    assert outcome["promoted"] is False and outcome["version_after"] == "3"
    assert not outcome["gates"]["checks"]["test_error_increase"]["passed"]
    assert 0.0 <= outcome["after"]["ulira_auc"] <= 1.0 and "ulira_auc" in outcome["gates"]["checks"]
    assert serving(served) == "2"
    assert ledger_lines(served)[-1]["promoted"] is False


@pytest.mark.parametrize("ids, expected", [
    ([32, 99999], "99999"),               # not a training id
    ([33, 33, 102], "33"),               # duplicate
    ([], "empty"),                        # no ids
    ([71, 135], "71"),                    # already forgotten by req-0001
])
def test_bad_requests_fail_before_any_training(served, tmp_path, ids, expected):
    path = write_request(tmp_path, "bad", "req-bad", ids)
    before = len(versions(served))
    result = kedro(served, "run", "--env", "test", "--pipelines", "deletion_request", "--params",
                   f"deletion_request.path={path}")
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert "Running node: unlearn_request" not in result.stdout + result.stderr
    assert len(versions(served)) == before


# --- the operator's command: python -m scrub_unlearning.serve_requests ---------------------------------------------

def serve_requests(project: Path, incoming: Path) -> subprocess.CompletedProcess:
    variables = {**os.environ, "KEDRO_DISABLE_TELEMETRY": "true", "PYTHONPATH": str(project / "src")}
    return subprocess.run([sys.executable, "-m", "scrub_unlearning.serve_requests", "--incoming", str(incoming),
                           "--env", "test"], cwd=project, env=variables, capture_output=True, text=True, timeout=900)


def mlflow_runs(project: Path) -> int:
    registry = client(project)
    experiments = [experiment.experiment_id for experiment in registry.search_experiments()]
    return len(registry.search_runs(experiments, max_results=50000))


def snapshot(folder: Path) -> dict:
    return {path.name: (path.stat().st_mtime_ns, path.read_bytes()) for path in sorted(folder.iterdir())}


def test_a_bad_request_moves_to_failed_with_its_reason_and_stays_there(served):
    root = served / "requests_bad"
    incoming = root / "incoming"
    incoming.mkdir(parents=True)
    write_request(incoming, "unknown", "req-unknown", [99998, 99999])
    runs, count = mlflow_runs(served), len(versions(served))
    first = serve_requests(served, incoming)
    assert first.returncode == 1, first.stderr[-4000:]
    failed = root / "failed"
    assert not list(incoming.iterdir()) and (failed / "unknown.csv").is_file()
    reason = (failed / "unknown.csv.reason.txt").read_text()
    assert "99999" in reason and "not in the training set" in reason and "failed at: 20" in reason
    assert "Running node" not in first.stdout + first.stderr
    assert mlflow_runs(served) == runs and len(versions(served)) == count, "validation failed before any run"

    kept = snapshot(failed)
    second = serve_requests(served, incoming)
    assert second.returncode == 0, second.stderr[-4000:]
    assert "no request" in second.stderr
    assert snapshot(failed) == kept, "a failed request is not retried until someone moves it back"


def test_a_request_is_served_and_the_same_request_again_is_a_noop(served, digits_splits):
    train = digits_splits.ids["train"][digits_splits.y["train"] == 3].tolist()[:5]  # no other test forgets a 3
    root = served / "requests_good"
    incoming = root / "incoming"
    incoming.mkdir(parents=True)
    write_request(incoming, "good", "req-0100", train)
    before = int(serving(served))
    result = serve_requests(served, incoming)
    assert result.returncode == 0, result.stderr[-4000:]
    assert (root / "done" / "good.csv").is_file() and not list(incoming.iterdir())
    assert int(serving(served)) == len(versions(served)) > before
    entry = ledger_lines(served)[-1]
    assert entry["request_id"] == "req-0100" and entry["promoted"] and entry["count"] == 5

    write_request(incoming, "again", "req-0100", train[::-1])
    runs, recorded = mlflow_runs(served), len(ledger_lines(served))
    again = serve_requests(served, incoming)
    assert again.returncode == 0, again.stderr[-4000:]
    output = again.stdout + again.stderr
    about = [line for line in output.splitlines() if "again.csv" in line]
    assert len(about) == 1 and "nothing to do" in about[0], output[-3000:]
    assert "Running node" not in output
    assert (root / "done" / "again.csv").is_file() and not list(incoming.iterdir())
    assert mlflow_runs(served) == runs, "a no-op request opens no MLflow run"
    assert len(ledger_lines(served)) == recorded


@pytest.mark.parametrize("outcome, expected", [
    ("raises", "RuntimeError: scrub_r failed"),
    ("not_promoted", "NOT promoted (failed gates: test_error_increase)"),
    ("nothing", "without recording the request"),
])
def test_a_request_whose_run_does_not_serve_it_moves_to_failed(tmp_path, outcome, expected):
    import torch

    from scrub_unlearning.serve_requests import serve_one
    from scrub_unlearning.serving import Ledger

    ledger = Ledger(tmp_path / "ledger.jsonl", bytes(range(32)))

    class Project:
        def ledger(self):
            return ledger

        def training_ids(self):
            return torch.arange(100)

    def run(path: Path) -> None:
        if outcome == "raises":
            raise RuntimeError("scrub_r failed, nothing registered: non-finite weights")
        if outcome == "not_promoted":
            gates = {"enabled": True, "passed": False, "checks": {"test_error_increase": {"passed": False}}}
            ledger.record("req-x", [1, 2], "1", "2", gates, False, "scrub_r")

    incoming = tmp_path / "incoming"
    incoming.mkdir()
    path = Path(write_request(incoming, "x", "req-x", [1, 2]))
    assert not serve_one(path, Project(), tmp_path / "done", tmp_path / "failed", run=run)
    assert not path.exists() and (tmp_path / "failed" / "x.csv").is_file()
    assert expected in (tmp_path / "failed" / "x.csv.reason.txt").read_text()
