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
