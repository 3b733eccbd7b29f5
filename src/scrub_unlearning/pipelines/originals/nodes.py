"""Training nodes: a training set (ids and labels; RC-confused where configured) and the Original trained on it."""

from __future__ import annotations

import logging

import pandas as pd

from ...data import Splits, TrainingSet, build_training_set
from ...models import ModelBundle, build_model, model_spec
from ...training import configure_runtime, seed_everything, train_model

log = logging.getLogger(__name__)


def prepare_training_set(splits: Splits, training_set: dict, name: str, seed: int) -> tuple[TrainingSet, pd.DataFrame]:
    """The clean training split, or its RC-confused version; the table holds ids and labels only."""
    result = build_training_set(splits, name, training_set, seed)
    return result, result.table()


def train_original(splits: Splits, training_set: TrainingSet, model: dict, training: dict, runtime: dict,
                   seed: int) -> tuple[ModelBundle, dict]:
    """Train the Original on the training set (labels as given, RC-confused where configured)."""
    device = configure_runtime(runtime)
    options = {k: v for k, v in model.items() if k != "architecture"}
    spec = model_spec(model["architecture"], splits.num_classes, splits.image_shape, splits.mean, splits.std,
                      **options)
    seed_everything(seed)
    network = build_model(spec)
    info = train_model(network, training_set.x, training_set.labels, training, device, seed,
                       what=f"original {training_set.name}")
    return ModelBundle.of(network), {"seconds": info["seconds"], "epoch_losses": info["epoch_losses"], "status": "ok",
                                     "parameters": training}
