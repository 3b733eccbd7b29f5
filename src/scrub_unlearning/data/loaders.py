"""Dataset loaders: every source becomes the same `RawDataset` of uint8 NCHW tensors.

An example id is its row index in the source arrays before any splitting (`load_digits` order,
CIFAR-10's canonical `x_train` order), so ids stay stable across splits, seeds and environments.
"""

from __future__ import annotations

import zipfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)
NPZ_REQUIRED_KEYS = ("x_train", "y_train", "x_test", "y_test")
SUPPORTED_SOURCES = ("digits", "npz", "torchvision_cifar10")


@dataclass
class RawDataset:
    """Images as uint8 (N, C, H, W) tensors with int64 labels; `x_test` is None when the source has no test part."""

    name: str
    x_train: torch.Tensor
    y_train: torch.Tensor
    x_test: torch.Tensor | None
    y_test: torch.Tensor | None
    classes: tuple[str, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # type: ignore[return-value]


def _to_nchw_uint8(x: np.ndarray, key: str, source: str) -> torch.Tensor:
    """(N,H,W) or (N,H,W,C) with C in {1,3}, uint8 -> (N,C,H,W) uint8 tensor."""
    if x.dtype != np.uint8:
        raise ValueError(f"{source}: '{key}' has dtype {x.dtype}; images must be uint8 (0..255)")
    if x.ndim == 3:
        x = x[:, None, :, :]
    elif x.ndim == 4 and x.shape[-1] in (1, 3):
        x = np.transpose(x, (0, 3, 1, 2))
    else:
        raise ValueError(
            f"{source}: '{key}' has unsupported shape {x.shape}; allowed are (N,H,W) or (N,H,W,C) with C in {{1,3}}"
        )
    return torch.from_numpy(np.ascontiguousarray(x))


def _labels(y: np.ndarray, key: str, source: str, n: int) -> torch.Tensor:
    if y.ndim != 1 or len(y) != n:
        raise ValueError(f"{source}: '{key}' must be a 1-D array of {n} labels, got shape {y.shape}")
    if not np.issubdtype(y.dtype, np.integer):
        raise ValueError(f"{source}: '{key}' has dtype {y.dtype}; labels must be integers")
    if n and y.min() < 0:
        raise ValueError(f"{source}: '{key}' holds negative labels; labels must be 0..C-1")
    return torch.from_numpy(y.astype(np.int64))


def load_digits_dataset() -> RawDataset:
    """scikit-learn's embedded 8x8 digits, stored as uint8 round(x*255/16), 1x8x8; no test part (split later)."""
    from sklearn.datasets import load_digits

    bunch = load_digits()
    x = np.rint(bunch.images * 255.0 / 16.0).astype(np.uint8)
    return RawDataset(
        name="digits",
        x_train=torch.from_numpy(x[:, None, :, :].copy()),
        y_train=torch.from_numpy(bunch.target.astype(np.int64)),
        x_test=None,
        y_test=None,
        classes=tuple(str(c) for c in range(10)),
    )


def _npz_array(archive, key: str, path: Path) -> np.ndarray:
    """One array of the archive; an array of Python objects (it would need unpickling) is refused."""
    try:
        return archive[key]
    except ValueError as error:  # numpy: "Object arrays cannot be loaded when allow_pickle=False"
        raise ValueError(f"{path}: '{key}' holds Python objects, which are never unpickled; store plain numeric "
                         f"(or, for 'classes', string) arrays") from error
    except zipfile.BadZipFile as error:
        raise ValueError(f"{path}: '{key}' cannot be read, the .npz (zip) file is damaged ({error})") from error


def _class_names(y_train: torch.Tensor, y_test: torch.Tensor, classes_array: np.ndarray | None,
                 path: Path) -> tuple[str, ...]:
    """The class names: labels must be 0..C-1 with every class present in y_train, where C is the length of the
    file's `classes` array when it has one, else the largest label + 1 (so one stray label 57 is an error, not a
    58-class model)."""
    if len(y_train) == 0:
        raise ValueError(f"{path}: 'y_train' holds no labels")
    if classes_array is not None:
        if classes_array.ndim != 1 or len(classes_array) == 0:
            raise ValueError(f"{path}: 'classes' must be a 1-D array of class names, got shape {classes_array.shape}")
        names = tuple(str(c) for c in classes_array.tolist())
        if len(set(names)) != len(names):
            raise ValueError(f"{path}: 'classes' names a class twice: {list(names)}")
        for key, y in (("y_train", y_train), ("y_test", y_test)):
            if len(y) and int(y.max()) >= len(names):
                raise ValueError(f"{path}: '{key}' holds label {int(y.max())}, outside 0..{len(names) - 1} (the "
                                 f"file's 'classes' array names {len(names)} classes)")
    else:
        top = max(int(y_train.max()), int(y_test.max()) if len(y_test) else 0)
        names = tuple(str(c) for c in range(top + 1))
    absent = sorted(set(range(len(names))) - set(y_train.unique().tolist()))
    if absent:
        shown = absent if len(absent) <= 10 else [*absent[:10], "..."]
        source = "the file's 'classes' array" if classes_array is not None else f"the largest label, {len(names) - 1}"
        raise ValueError(f"{path}: labels must be 0..C-1 with every class present in 'y_train'; C = {len(names)} "
                         f"(from {source}) but {len(absent)} class(es) have no training example: {shown}")
    return names


def load_npz_dataset(path: str | Path) -> RawDataset:
    """A local `.npz` with x_train, y_train, x_test, y_test (and optionally `classes`, the class names), read without
    unpickling anything. Labels must be 0..C-1 with every class present in y_train (`_class_names`)."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(
            f"dataset path '{path}' does not exist or is not a file; expected an .npz with keys {NPZ_REQUIRED_KEYS}"
        )
    if not zipfile.is_zipfile(path):
        raise ValueError(f"{path} is not an .npz (zip) file; expected one written by numpy.savez with keys "
                         f"{list(NPZ_REQUIRED_KEYS)}")
    try:
        archive = np.load(path, allow_pickle=False)
    except (zipfile.BadZipFile, OSError, ValueError) as error:
        raise ValueError(f"{path} is not a readable .npz (zip) file: {error}") from error
    with archive:
        missing = [k for k in NPZ_REQUIRED_KEYS if k not in archive.files]
        if missing:
            raise ValueError(
                f"{path}: missing key(s) {missing}; required are {list(NPZ_REQUIRED_KEYS)} (found {archive.files})"
            )
        x_train = _to_nchw_uint8(_npz_array(archive, "x_train", path), "x_train", str(path))
        x_test = _to_nchw_uint8(_npz_array(archive, "x_test", path), "x_test", str(path))
        y_train = _labels(_npz_array(archive, "y_train", path), "y_train", str(path), len(x_train))
        y_test = _labels(_npz_array(archive, "y_test", path), "y_test", str(path), len(x_test))
        classes_array = _npz_array(archive, "classes", path) if "classes" in archive.files else None
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(
            f"{path}: x_train images {tuple(x_train.shape[1:])} and x_test {tuple(x_test.shape[1:])} differ"
        )
    return RawDataset(path.stem, x_train, y_train, x_test, y_test, _class_names(y_train, y_test, classes_array, path))


def load_torchvision_cifar10(root: str | Path, download: bool = True) -> RawDataset:
    """CIFAR-10 through torchvision (downloaded into `root` once), in canonical order."""
    try:
        from torchvision.datasets import CIFAR10
    except ImportError as error:  # pragma: no cover - torchvision is a declared dependency
        raise ImportError("source 'torchvision_cifar10' needs torchvision; use source 'npz' instead") from error

    root = Path(root)
    train = CIFAR10(str(root), train=True, download=download)
    test = CIFAR10(str(root), train=False, download=download)
    return RawDataset(
        name="cifar10",
        x_train=_to_nchw_uint8(np.asarray(train.data), "x_train", "cifar10"),
        y_train=torch.tensor(train.targets, dtype=torch.int64),
        x_test=_to_nchw_uint8(np.asarray(test.data), "x_test", "cifar10"),
        y_test=torch.tensor(test.targets, dtype=torch.int64),
        classes=CIFAR10_CLASSES,
    )


def load_dataset(config: dict) -> RawDataset:
    """Dispatch on `config['source']` (one of SUPPORTED_SOURCES); `path`/`root` name the files."""
    source = config.get("source")
    if source == "digits":
        return load_digits_dataset()
    if source == "npz":
        if not config.get("path"):
            raise ValueError("dataset source 'npz' needs 'path' (the .npz file)")
        return load_npz_dataset(config["path"])
    if source == "torchvision_cifar10":
        return load_torchvision_cifar10(config.get("root", "data/01_raw"), download=config.get("download", True))
    raise ValueError(f"unknown dataset source '{source}'; allowed are {list(SUPPORTED_SOURCES)}")
