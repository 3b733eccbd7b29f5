"""Fixed train/validation/test splits over a `RawDataset`, described as data and kept as ids.

Splits do not depend on the experiment seed (docs/design.md §5: a seed redraws forget sets, not splits); they use their
own `split_seed`.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .loaders import RawDataset

SPLIT_NAMES = ("train", "val", "test")


@dataclass
class Splits:
    """The three splits as uint8 image tensors, labels and source ids, plus the normalisation statistics."""

    x: dict[str, torch.Tensor]
    y: dict[str, torch.Tensor]
    ids: dict[str, torch.Tensor]
    sources: dict[str, str]
    classes: tuple[str, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(self.x["train"].shape[1:])  # type: ignore[return-value]

    def table(self) -> pd.DataFrame:
        """One row per example: split, source array, id (row in the source), label. Ids only, never pixels."""
        frames = [
            pd.DataFrame({
                "split": name,
                "source": self.sources[name],
                "id": self.ids[name].numpy(),
                "label": self.y[name].numpy(),
            })
            for name in SPLIT_NAMES
        ]
        return pd.concat(frames, ignore_index=True)


def _stratified_take(labels: np.ndarray, rng: np.random.Generator, classes: list[int],
                     counts: dict[str, int | float], available: np.ndarray) -> dict[str, np.ndarray]:
    """Per class, shuffle the available rows and cut them into consecutive parts of the given sizes."""
    parts: dict[str, list[np.ndarray]] = {name: [] for name in counts}
    for cls in classes:
        rows = available[labels[available] == cls]
        rows = rows[rng.permutation(len(rows))]
        start = 0
        for name, count in counts.items():
            n = int(round(count * len(rows))) if isinstance(count, float) else int(count)
            if start + n > len(rows):
                raise ValueError(
                    f"split '{name}' asks for {n} examples of class {cls}, but only {len(rows) - start} are left"
                )
            parts[name].append(rows[start:start + n])
            start += n
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def make_splits(raw: RawDataset, config: dict) -> Splits:
    """Split as `config` says: fractions (`val_fraction`, `test_fraction`) or per-class counts
    (`train_per_class`, `val_per_class`, `test_per_class`), optionally restricted to `classes`.

    When the source has a test part, test examples come from it; otherwise from the training pool. Normalisation is
    `config['mean'/'std']` when given (in [0,1] units), else the training split's per-channel statistics.
    """
    rng = np.random.default_rng(int(config.get("split_seed", 0)))
    classes = config.get("classes") or list(range(raw.num_classes))
    unknown = [c for c in classes if not 0 <= int(c) < raw.num_classes]
    if unknown:
        raise ValueError(f"split classes {unknown} are not in the dataset; allowed are 0..{raw.num_classes - 1}")
    if list(classes) != list(range(len(classes))):
        raise ValueError(f"split classes must be 0..k-1 so labels keep their ids, got {classes}")
    classes = [int(c) for c in classes]
    y_pool = raw.y_train.numpy()
    all_rows = np.arange(len(y_pool))
    per_class = "train_per_class" in config

    if per_class:
        counts = {"train": int(config["train_per_class"]), "val": int(config["val_per_class"])}
    else:
        val_fraction = float(config.get("val_fraction", 0.2))
        test_fraction = float(config.get("test_fraction", 0.2)) if raw.x_test is None else 0.0
        if not 0 < val_fraction < 1 or not 0 <= test_fraction < 1 or val_fraction + test_fraction >= 1:
            raise ValueError(f"val_fraction={val_fraction} and test_fraction={test_fraction} must leave a train part")
        counts = {"val": val_fraction}  # train = everything left over, chosen below
        if raw.x_test is None:
            counts["test"] = test_fraction

    if raw.x_test is None:
        if per_class:
            counts["test"] = int(config["test_per_class"])
        parts = _stratified_take(y_pool, rng, classes, counts, all_rows)
        if not per_class:  # the rest of the chosen classes trains
            used = np.concatenate([parts["val"], parts["test"]])
            mask = np.isin(y_pool, classes) & ~np.isin(all_rows, used)
            parts["train"] = all_rows[mask]
        test_rows, test_source = parts["test"], "train"
        x_test_src, y_test_src = raw.x_train, raw.y_train
    else:
        parts = _stratified_take(y_pool, rng, classes, {k: v for k, v in counts.items() if k != "test"}, all_rows)
        if not per_class:  # the rest of the chosen classes trains
            mask = np.isin(y_pool, classes) & ~np.isin(all_rows, parts["val"])
            parts["train"] = all_rows[mask]
        y_test = raw.y_test.numpy()
        test_pool = np.arange(len(y_test))
        if per_class:
            test_rows = _stratified_take(y_test, rng, classes, {"test": int(config["test_per_class"])},
                                         test_pool)["test"]
        else:
            test_rows = test_pool[np.isin(y_test, classes)]
        test_source = "test"
        x_test_src, y_test_src = raw.x_test, raw.y_test

    rows = {"train": parts["train"], "val": parts["val"], "test": test_rows}
    x = {
        "train": raw.x_train[rows["train"]],
        "val": raw.x_train[rows["val"]],
        "test": x_test_src[rows["test"]],
    }
    y = {
        "train": raw.y_train[rows["train"]],
        "val": raw.y_train[rows["val"]],
        "test": y_test_src[rows["test"]],
    }
    ids = {name: torch.from_numpy(r.astype(np.int64)) for name, r in rows.items()}
    if config.get("mean") is not None:
        mean = tuple(float(m) for m in config["mean"])
        std = tuple(float(s) for s in config["std"])
    else:
        train = x["train"].double() / 255.0
        mean = tuple(train.mean(dim=(0, 2, 3)).tolist())
        std = tuple(max(s, 1e-6) for s in train.std(dim=(0, 2, 3)).tolist())
    if len(mean) != x["train"].shape[1] or len(std) != x["train"].shape[1]:
        raise ValueError(f"mean/std have {len(mean)}/{len(std)} entries for {x['train'].shape[1]} channels")
    return Splits(
        x=x, y=y, ids=ids, sources={"train": "train", "val": "train", "test": test_source},
        classes=tuple(raw.classes[c] for c in classes), mean=mean, std=std,
    )
