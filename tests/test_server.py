"""A team's MLflow tracking server backed by PostgreSQL (started by .ci/run): register the Original, serve the
sample deletion request against it, and check the registered versions through the server's REST API."""

from __future__ import annotations

import json
import os
import shutil
import urllib.request
import uuid

import pytest
from conftest import copy_project, kedro

SERVER = os.environ.get("MLFLOW_TEST_SERVER")
pytestmark = pytest.mark.skipif(not SERVER, reason="MLFLOW_TEST_SERVER is not set (.ci/run starts the server)")


def rest(path: str) -> dict:
    with urllib.request.urlopen(f"{SERVER}/api/2.0/mlflow/{path}", timeout=30) as response:
        return json.loads(response.read())


def test_request_pipeline_against_a_postgres_backed_server(tmp_path):
    project = copy_project(tmp_path)
    server_env = project / "conf" / "server"
    shutil.copytree(project / "conf" / "test", server_env)
    (server_env / "mlflow.yml").write_text(
        "server:\n"
        f"  mlflow_tracking_uri: {SERVER}\n"
        "tracking:\n"
        "  experiment:\n"
        "    name: scrub_unlearning_ci\n"
        "    create_experiment_kwargs: {artifact_location: null}\n"
    )
    name = f"ci_{uuid.uuid4().hex[:8]}"
    params = f"registry.model_name={name}"
    registered = kedro(project, "run", "--env", "server", "--pipelines", "register", "--params", params)
    assert registered.returncode == 0, registered.stderr[-4000:]
    served = kedro(project, "run", "--env", "server", "--pipelines", "deletion_request", "--params", params)
    assert served.returncode == 0, served.stderr[-4000:]

    model = rest(f"registered-models/get?name={name}")["registered_model"]
    assert {a["alias"]: a["version"] for a in model["aliases"]} == {"serving": "2"}
    versions = rest(f"model-versions/search?filter=name%3D%27{name}%27")["model_versions"]
    assert sorted(v["version"] for v in versions) == ["1", "2"]
    second = next(v for v in versions if v["version"] == "2")
    tags = {t["key"]: t["value"] for t in second["tags"]}
    assert tags["request_id"] == "req-0001" and tags["method"] == "scrub_r" and tags["gates_passed"] == "True"
    assert not (project / "mlflow.db").exists(), "everything went to the server, nothing to a local store"
