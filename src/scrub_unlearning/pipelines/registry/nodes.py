"""Registry node: the clean Original registered in the MLflow Model Registry, serving when nothing serves yet."""

from __future__ import annotations

import logging

import pandas as pd

from ...data import Splits
from ...mlflow_edge import model_registry
from ...models import ModelBundle
from ...training import model_error

log = logging.getLogger(__name__)
INPUT_EXAMPLE_SIZE = 4


def register_original(original: ModelBundle, splits: Splits, split_table: pd.DataFrame, dataset: dict,
                      training: dict, registry_config: dict) -> dict:
    """Register the clean training set's Original (data version, parameters, validation/test error as version
    tags) and make it the serving version when the registry has none (`serve_original: if_none`) or always."""
    model = original.load()
    metrics = {"val_error": model_error(model, splits.x["val"], splits.y["val"]),
               "test_error": model_error(model, splits.x["test"], splits.y["test"])}
    data_version = pd.util.hash_pandas_object(split_table, index=False).sum()
    tags = {"role": "original", "dataset": dataset.get("source"),
            "data_version": f"{int(data_version) & (2**63 - 1):x}", "training": training}
    name, alias = registry_config["model_name"], registry_config.get("alias", "serving")
    example = splits.x["test"][:INPUT_EXAMPLE_SIZE].numpy()  # test images: never in a forget set
    version = model_registry.register_model(original, name, tags, metrics, input_example=example)
    rule = registry_config.get("serve_original", "if_none")
    if rule == "always" or (rule == "if_none" and model_registry.serving_version(name, alias) is None):
        model_registry.promote(name, version, alias)
    log.info("registered %s version %s (serving: %s)", name, version, model_registry.serving_version(name, alias))
    return {"model_name": name, "version": version, "serving": model_registry.serving_version(name, alias),
            **metrics}
