"""Registry node: the clean Original registered in the MLflow Model Registry, serving when nothing serves yet."""

from __future__ import annotations

import logging

import pandas as pd

from ...data import Splits, TrainingSet
from ...evaluation.request_audit import plan_audit_shadows, train_audit_shadows
from ...mlflow_edge import model_registry
from ...models import ModelBundle
from ...models.store import WeightStore
from ...training import configure_runtime, model_error

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


def train_registration_shadows(registered: dict, original: ModelBundle, training_set: TrainingSet, training: dict,
                               registry_config: dict, runtime: dict) -> dict:
    """The registered version's audit shadows (`registry.audit`): K shadows on complementary halves of its training
    set, trained with its own procedure (reused from the store when their inputs did not change), logged to MLflow
    and named on the version (tag `shadow_manifest`), so every later deletion request is audited without training
    (docs/design.md §7, per-request audit)."""
    audit = registry_config.get("audit") or {}
    if not audit.get("enabled"):
        return {"enabled": False}
    seed, store = int(audit.get("seed", 0)), WeightStore(audit["shadow_store"])
    plan = plan_audit_shadows(training_set.ids, int(audit.get("num_shadows", 16)), seed)
    manifest = train_audit_shadows(training_set, plan, original.spec, training, store, configure_runtime(runtime),
                                   int(audit.get("workers") or 0), progress=log.info)
    run_id = model_registry.log_audit_shadows(store, manifest["keys"]) if audit.get("log_to_mlflow", True) else None
    manifest.update(enabled=True, seed=seed, registration_version=registered["version"], run_id=run_id,
                    registration_seconds=manifest["seconds"])
    model_registry.set_version_tags(registered["model_name"], registered["version"],
                                    {model_registry.AUDIT_TAG: manifest})
    log.info("audit shadows of %s version %s: %d trained, %d reused, %.1f s", registered["model_name"],
             registered["version"], manifest["trained"], manifest["reused"], manifest["seconds"])
    return manifest
