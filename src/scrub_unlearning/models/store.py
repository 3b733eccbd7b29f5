"""Weights by content address: a safetensors file per key (never pickled), optionally with a JSON record beside it.

The key is a digest of everything that determines the weights (data ids and labels, architecture, recipe or method
parameters, seed, code version), so a model whose inputs did not change is loaded instead of trained again: U-LiRA's
shadows, the pre-trained backbone and every model of a run (docs/design.md §7). Writes go to a temporary name and
are renamed into place, so a crash never leaves a half-written file under a key.
"""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np
import torch
from safetensors.torch import load_file, save_file


def content_key(description: dict, *tensors: torch.Tensor) -> str:
    """A 32-hex-digit digest of a JSON-able description and the bytes of the given tensors."""
    digest = hashlib.sha256(json.dumps(description, sort_keys=True, default=str).encode())
    for tensor in tensors:
        array = tensor.detach().to("cpu").contiguous().numpy()
        digest.update(str((array.dtype.str, array.shape)).encode())
        digest.update(np.ascontiguousarray(array).tobytes())
    return digest.hexdigest()[:32]


def weights_digest(state: dict[str, torch.Tensor]) -> str:
    """A digest of a state dict (names, shapes and values): identifies a model's weights in other keys."""
    names = sorted(state)
    return content_key({"names": names}, *(state[name] for name in names))


class WeightStore:
    """A folder of `<key>.safetensors` files, each with an optional `<key>.json` record."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def __repr__(self) -> str:
        return f"{type(self).__name__}({str(self.folder)!r})"

    def path(self, key: str) -> Path:
        return self.folder / f"{key}.safetensors"

    def record_path(self, key: str) -> Path:
        return self.folder / f"{key}.json"

    def get(self, key: str) -> dict[str, torch.Tensor] | None:
        """The weights stored under `key`, or None."""
        return load_file(str(self.path(key))) if self.path(key).is_file() else None

    def record(self, key: str) -> dict | None:
        """The JSON record stored with `key`, or None."""
        path = self.record_path(key)
        return json.loads(path.read_text()) if path.is_file() else None

    def put(self, key: str, state: dict[str, torch.Tensor], record: dict | None = None) -> None:
        """Store weights (and a record) under `key`; the record is written first and the weights last, so a key
        whose weights exist is complete."""
        self.folder.mkdir(parents=True, exist_ok=True)
        if record is not None:
            _write_atomically(self.record_path(key), json.dumps(record, indent=1, default=str).encode())
        partial = self.folder / f"{key}.partial"
        save_file({k: v.contiguous() for k, v in state.items()}, str(partial))
        os.replace(partial, self.path(key))


def _write_atomically(path: Path, payload: bytes) -> None:
    partial = path.with_name(path.name + ".partial")
    with open(partial, "wb") as handle:
        handle.write(payload)
        handle.flush()
        os.fsync(handle.fileno())
    os.replace(partial, path)
