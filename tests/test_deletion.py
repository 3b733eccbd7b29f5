"""Serving a deletion request end to end: register, unlearn, gate, promote, ledger, idempotence, bad requests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
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
    registry = client(served)
    assert str(registry.get_model_version_by_alias("scrub_unlearning_digits", "serving").version) == "1"
    version = registry.get_model_version("scrub_unlearning_digits", "1")
    assert version.tags["role"] == "original" and "data_version" in version.tags
    assert float(version.tags["metric.test_error"]) < 10


def test_the_sample_request_is_served_and_a_rerun_does_nothing(served):
    result = kedro(served, "run", "--env", "test", "--pipelines", "deletion_request")
    assert result.returncode == 0, result.stderr[-4000:]
    first = summary(served)
    assert first["version_before"] == "1" and first["version_after"] == "2" and first["promoted"]
    assert first["method"] == "scrub_r" and first["count"] == 20
    registry = client(served)
    assert str(registry.get_model_version_by_alias("scrub_unlearning_digits", "serving").version) == "2"
    tags = registry.get_model_version("scrub_unlearning_digits", "2").tags
    assert tags["request_id"] == "req-0001" and tags["method"] == "scrub_r" and tags["replaces_version"] == "1"
    entries = ledger_lines(served)
    assert len(entries) == 1 and entries[0]["count"] == 20 and entries[0]["version_after"] == "2"
    text = (served / "data" / "test" / "08_reporting" / "deletion_ledger.jsonl").read_text()
    assert not any(f'"{i}"' in text or f" {i}," in text or f"[{i}," in text for i in SAMPLE_IDS), "ids in clear"
    reports = served / "data" / "test" / "08_reporting" / "deletion_request" / "report.html"
    report = (sorted(reports.iterdir())[-1] / "report.html").read_text()
    assert "req-0001" in report and "data:image/png;base64" in report

    again = kedro(served, "run", "--env", "test", "--pipelines", "deletion_request")
    assert again.returncode == 0, again.stderr[-4000:]
    assert summary(served)["skipped"] is True
    assert len(client(served).search_model_versions("name='scrub_unlearning_digits'")) == 2
    assert len(ledger_lines(served)) == 1
    assert len(list(reports.iterdir())) == 2, "the no-op run wrote its own report version"
    noop = (sorted(reports.iterdir())[-1] / "report.html").read_text()
    assert "Nothing was done this time" in noop


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
    assert str(client(served).get_model_version_by_alias("scrub_unlearning_digits", "serving").version) == "2"
    assert ledger_lines(served)[-1]["promoted"] is False


@pytest.mark.parametrize("ids, expected", [
    ([32, 99999], "99999"),               # not a training id
    ([33, 33, 102], "33"),               # duplicate
    ([], "empty"),                        # no ids
    ([71, 135], "71"),                    # already forgotten by req-0001
])
def test_bad_requests_fail_before_any_training(served, tmp_path, ids, expected):
    path = write_request(tmp_path, "bad", "req-bad", ids)
    versions = len(client(served).search_model_versions("name='scrub_unlearning_digits'"))
    result = kedro(served, "run", "--env", "test", "--pipelines", "deletion_request", "--params",
                   f"deletion_request.path={path}")
    assert result.returncode != 0
    assert expected in result.stdout + result.stderr
    assert "Running node: unlearn_request" not in result.stdout + result.stderr
    assert len(client(served).search_model_versions("name='scrub_unlearning_digits'")) == versions
