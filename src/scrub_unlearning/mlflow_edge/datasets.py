"""Project datasets. `ModelDataset`: a model as a folder with `weights.safetensors` and `spec.json`, also in MLflow.

A failed method saves an empty `ModelBundle`: the folder is emptied and nothing is written or logged, so no
half-written or stale model is left in the catalog (docs/design.md §7); loading it gives the empty bundle back.
Weights are never pickled.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from kedro.io import AbstractDataset, DatasetError
from safetensors.torch import load_file, save_file

from ..evaluation.shadows import ShadowStore
from ..models import ModelBundle

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
        if self._path.exists():
            shutil.rmtree(self._path)
        if not data.present:
            return
        self._path.mkdir(parents=True)
        save_file(data.weights, str(self._path / WEIGHTS))
        (self._path / SPEC).write_text(json.dumps(data.spec, indent=2))

    def _exists(self) -> bool:
        return (self._path / SPEC).is_file()

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}


class ShadowStoreDataset(AbstractDataset[ShadowStore, ShadowStore]):
    """The folder of U-LiRA shadow weights, addressed by content; loading gives the store the node reads and
    fills (a shadow whose inputs did not change is reused, never retrained)."""

    def __init__(self, path: str, metadata: dict | None = None) -> None:
        self._path = Path(path)
        self.metadata = metadata

    def load(self) -> ShadowStore:
        return ShadowStore(self._path)

    def save(self, data: ShadowStore) -> None:
        raise DatasetError("the shadow store is filled by the node that trains shadows, not saved as a whole")

    def _exists(self) -> bool:
        return True

    def _describe(self) -> dict[str, Any]:
        return {"path": str(self._path)}
