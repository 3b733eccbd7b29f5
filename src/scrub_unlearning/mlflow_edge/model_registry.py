"""The MLflow Model Registry side of serving: register a model (pyfunc from code + safetensors + JSON spec), move
the serving alias, fetch the serving version's weights back, and read or tag versions for the deletion ledger
(finding a request's versions by their tags, marking orphans)."""

from __future__ import annotations

import json
import tempfile
from pathlib import Path

import mlflow
import numpy as np
import torch
from mlflow.models import infer_signature
from mlflow.tracking import MlflowClient
from safetensors.torch import load_file, save_file

import scrub_unlearning
from scrub_unlearning.models import ModelBundle
from scrub_unlearning.training import predict_logits

SERVING_MODEL_CODE = Path(__file__).with_name("served_model.py")
PIP_REQUIREMENTS = ["torch>=2.4", "safetensors>=0.4", "numpy>=1.26"]


def register_model(model: ModelBundle, name: str, tags: dict, metrics: dict | None = None,
                   input_example: np.ndarray | None = None) -> str:
    """Log `model` to the active run as a pyfunc and register it under `name`; returns the new version. With
    `input_example` (uint8 images the model may show, never forgotten ones), the version carries it and the
    signature inferred from the model's predictions on it. Tags and metrics (`metric.<name>`) go on the version,
    as readable strings (dicts and lists as JSON), in the same call that creates it: a version never exists
    without its tags (the deletion ledger finds a request's version by them after a crash)."""
    with tempfile.TemporaryDirectory() as folder:
        weights, spec = Path(folder) / "weights.safetensors", Path(folder) / "spec.json"
        save_file(model.weights, str(weights))
        spec.write_text(json.dumps(model.spec))
        signature = None
        if input_example is not None:
            predictions = predict_logits(model.load(), torch.as_tensor(input_example)).argmax(dim=1).numpy()
            signature = infer_signature(input_example, predictions)
        info = mlflow.pyfunc.log_model(
            name="served_model", python_model=str(SERVING_MODEL_CODE),
            artifacts={"weights": str(weights), "spec": str(spec)},
            code_paths=[str(Path(scrub_unlearning.__file__).parent)], pip_requirements=PIP_REQUIREMENTS,
            signature=signature, input_example=input_example,
        )
    text = {key: _tag_text(value) for key, value in
            {**tags, **{f"metric.{k}": v for k, v in (metrics or {}).items()}}.items()}
    return str(mlflow.register_model(info.model_uri, name, tags=text).version)


def _tag_text(value) -> str:
    return json.dumps(value) if isinstance(value, (dict, list, tuple)) else str(value)


def versions(name: str, request_id: str | None = None) -> list[dict]:
    """Every version of `name` (of one request: tagged `request_id`), oldest first, as `{"version", "tags"}`;
    [] when the model is not registered."""
    client, found, token = MlflowClient(), [], None
    while True:
        try:
            page = client.search_model_versions(f"name = '{name}'", page_token=token)
        except mlflow.exceptions.MlflowException:
            return []
        found += [{"version": str(v.version), "tags": dict(v.tags or {})} for v in page]
        token = page.token
        if not token:
            break
    if request_id is not None:
        found = [v for v in found if v["tags"].get("request_id") == request_id]
    return sorted(found, key=lambda v: int(v["version"]))


def set_version_tags(name: str, version: str, tags: dict) -> None:
    """Set tags on an existing version (strings; dicts and lists as JSON)."""
    client = MlflowClient()
    for key, value in tags.items():
        client.set_model_version_tag(name, str(version), key, _tag_text(value))


def input_example_of(name: str, version: str) -> np.ndarray | None:
    """The input example a registered version was logged with (None when it has none)."""
    with tempfile.TemporaryDirectory() as folder:
        local = mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=folder)
        example = mlflow.models.Model.load(local).load_input_example(local)
        return None if example is None else np.asarray(example)


def serving_version(name: str, alias: str) -> str | None:
    """The version carrying `alias`, or None."""
    try:
        return str(MlflowClient().get_model_version_by_alias(name, alias).version)
    except mlflow.exceptions.MlflowException:
        return None


def promote(name: str, version: str, alias: str) -> None:
    """Move `alias` to `version`."""
    MlflowClient().set_registered_model_alias(name, alias, version)


def load_registered(name: str, version: str) -> ModelBundle:
    """Weights and spec of a registered version (downloaded artifacts; loaded with safetensors, never unpickled)."""
    with tempfile.TemporaryDirectory() as folder:
        root = Path(mlflow.artifacts.download_artifacts(artifact_uri=f"models:/{name}/{version}", dst_path=folder))
        weights = next(root.rglob("weights.safetensors"))
        spec = json.loads(next(root.rglob("spec.json")).read_text())
        return ModelBundle(load_file(str(weights)), spec)


AUDIT_TAG = "shadow_manifest"
"""The version tag holding its audit shadows' manifest (JSON: store keys, plan digest, seed, the run that logged
them; named to sort after the readable tags in the MLflow UI); docs/design.md §7, per-request audit."""
AUDIT_ARTIFACTS = "audit_shadows"


def audit_manifest(name: str, version: str) -> dict | None:
    """The audit-shadow manifest a version carries, or None when it has none."""
    tag = MlflowClient().get_model_version(name, str(version)).tags.get(AUDIT_TAG)
    return json.loads(tag) if tag else None


def log_audit_shadows(store, keys: list[str]) -> str | None:
    """Log the shadows' weights (safetensors) as artifacts of the active run, beside the version they audit;
    returns the run id (None without an active run)."""
    run = mlflow.active_run()
    if run is None:
        return None
    for key in dict.fromkeys(keys):
        mlflow.log_artifact(str(store.path(key)), artifact_path=AUDIT_ARTIFACTS)
    return run.info.run_id


def fetch_audit_shadows(manifest: dict, store) -> int:
    """Download into the local store the shadows of `manifest` it lacks, from the run that logged them; returns
    how many were fetched. A missing shadow with no run to fetch it from is an error naming the key."""
    missing = [key for key in manifest["keys"] if not store.path(key).is_file()]
    for key in dict.fromkeys(missing):
        if not manifest.get("run_id"):
            raise FileNotFoundError(f"audit shadow {key} is neither in {store.folder} nor logged to MLflow")
        with tempfile.TemporaryDirectory() as folder:
            local = mlflow.artifacts.download_artifacts(run_id=manifest["run_id"],
                                                        artifact_path=f"{AUDIT_ARTIFACTS}/{key}.safetensors",
                                                        dst_path=folder)
            store.put(key, load_file(local))
    return len(missing)


def version_chain(name: str, version: str) -> list[dict]:
    """The versions `version` descends from, oldest first, ending with it: each as {version, role, request_id}
    (followed through the `replaces_version` tags the deletion requests write)."""
    tags_of = {v["version"]: v["tags"] for v in versions(name)}
    chain, current = [], str(version)
    while current in tags_of and all(link["version"] != current for link in chain):
        tags = tags_of[current]
        chain.append({"version": current, "role": tags.get("role", "unknown"), "request_id": tags.get("request_id")})
        current = tags.get("replaces_version")
    return chain[::-1]
