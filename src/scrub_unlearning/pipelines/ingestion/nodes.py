"""Ingestion nodes: the raw dataset as uint8 tensors, then fixed splits checked against every scenario."""

from __future__ import annotations

import logging

import pandas as pd

from ...data import RawDataset, Splits, load_dataset, make_splits
from ...validation import check_scenarios

log = logging.getLogger(__name__)


def load_raw_dataset(dataset: dict) -> RawDataset:
    """Read the configured source into uint8 tensors."""
    raw = load_dataset(dataset)
    log.info("dataset '%s': %d training-source images of shape %s, %d classes",
             raw.name, len(raw.x_train), tuple(raw.image_shape), raw.num_classes)
    return raw


def split_dataset(raw: RawDataset, splits: dict, scenarios: dict, training_sets: dict, seeds: list,
                  ulira: dict | None = None) -> tuple[Splits, pd.DataFrame]:
    """Fixed splits, then every scenario's forget specification (and U-LiRA's pool) is checked against them before
    any training."""
    result = make_splits(raw, splits)
    check_scenarios(result, scenarios, training_sets, seeds, ulira)
    log.info("splits: %s", {name: len(y) for name, y in result.y.items()})
    return result, result.table()
