"""Project datasets. `ModelDataset`: a model as a folder with `weights.safetensors` and `spec.json`, also in MLflow.

A failed method saves an empty `ModelBundle`: the folder is removed and nothing is written or logged, so no stale
model is left in the catalog; loading it gives the empty bundle back. A save is atomic (docs/design.md §7): the new
folder is written under a temporary name, fsynced and renamed into place, so a kill at any moment leaves either the
old model or the new one, never a half-written folder. Weights are never pickled.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from pathlib import Path
from typing import Any

import yaml
from kedro.io import AbstractDataset, DatasetError
from safetensors.torch import load_file, save_file

from ..models import ModelBundle
from ..models.store import WeightStore
from ..tuning.settings_file import file_key, tuned_file_text

WEIGHTS, SPEC = "weights.safetensors", "spec.json"


class ModelDataset(AbstractDataset[ModelBundle, ModelBundle]):
    """Save/load a `ModelBundle` as a folder. (Its MLflow copy goes to the model's child run: `run_layout`.)"""

    def __init__(self, path: str, metadata: dict | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> ModelBundle:
        if not (self._path / SPEC).is_file():
            return ModelBundle()
        spec = json.loads((self._path / SPEC).read_text())
        return ModelBundle(load_file(str(self._path / WEIGHTS)), spec)

    def save(self, data: ModelBundle) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        token = uuid.uuid4().hex[:8]
        old = self._path.with_name(f".{self._path.name}.old-{token}")
        if not data.present:
            if self._path.exists():
                os.replace(self._path, old)  # one rename: the folder is gone or intact, never half-deleted
                shutil.rmtree(old)
            return
        partial = self._path.with_name(f".{self._path.name}.partial-{token}")
        partial.mkdir()
        try:
            save_file(data.weights, str(partial / WEIGHTS))
            (partial / SPEC).write_text(json.dumps(data.spec, indent=2))
            for name in (WEIGHTS, SPEC):
                _fsync(partial / name)
            if self._path.exists():
                os.replace(self._path, old)
            os.replace(partial, self._path)
            _fsync(self._path.parent)
        finally:
            shutil.rmtree(partial, ignore_errors=True)
        shutil.rmtree(old, ignore_errors=True)

    def _exists(self) -> bool:
        return (self._path / SPEC).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


def _fsync(path: Path) -> None:
    """Flush a file (or a folder's entries) to disk."""
    flags = os.O_RDONLY | (os.O_DIRECTORY if path.is_dir() and hasattr(os, "O_DIRECTORY") else 0)
    try:
        handle = os.open(path, flags)
    except OSError:  # pragma: no cover - platforms that cannot open folders
        return
    try:
        os.fsync(handle)
    finally:
        os.close(handle)


class WeightStoreDataset(AbstractDataset[WeightStore, WeightStore]):
    """A folder of weights addressed by content (U-LiRA's shadows, the pre-trained backbone, the run's models);
    loading gives the store the node reads and fills (a model whose inputs did not change is reused, never
    retrained)."""

    def __init__(self, path: str, metadata: dict | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> WeightStore:
        return WeightStore(self._path)

    def save(self, data: WeightStore) -> None:
        raise DatasetError("a weight store is filled by the node that trains, not saved as a whole")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class StudyStorageDataset(AbstractDataset[str, str]):
    """Where the tuning studies persist: loading gives the Optuna storage URL of a SQLite file (its folder made),
    so an interrupted `kedro run --pipelines=tune` continues its studies (tuning/study.py)."""

    def __init__(self, path: str, metadata: dict | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> str:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        return f"sqlite:///{self._path.resolve()}"

    def save(self, data: str) -> None:
        raise DatasetError("the study storage is written by Optuna, not saved as a whole")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class TunedSettingsDataset(AbstractDataset[dict, dict]):
    """The tuned settings file `conf/<env>/parameters_tuned.yml` (tuning/settings_file.py). Loading gives
    `{"environment": <env folder>, "tuned": <its tuned_<env> block, {} when absent>}`; saving a `tuned` block writes the
    file atomically with its header. Two catalog entries name the same file: one read before tuning, one written
    after (a node cannot read and write one dataset)."""

    def __init__(self, filepath: str, metadata: dict | None = None) -> None:
        self._path = Path(filepath)
        self.metadata = metadata

    def load(self) -> dict:
        tuned, environment = {}, self._path.parent.name
        if self._path.is_file():
            document = yaml.safe_load(self._path.read_text()) or {}
            tuned = document.get(file_key(environment)) or {}
        return {"environment": environment, "tuned": tuned}

    def save(self, data: dict) -> None:
        self._path.parent.mkdir(parents=True, exist_ok=True)
        partial = self._path.with_name(f".{self._path.name}.{uuid.uuid4().hex}")
        partial.write_text(tuned_file_text(data))
        _fsync(partial)
        os.replace(partial, self._path)
        _fsync(self._path.parent)

    def _exists(self) -> bool:
        return self._path.is_file()

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._path)}
