"""Training nodes: the pre-trained backbone (once per run, from its content-addressed store), a training set (ids
and labels; RC-confused where configured; the backbone its models start from) and the Original trained on it."""

from __future__ import annotations

import logging
from dataclasses import replace

import pandas as pd

from ...data import RawDataset, Splits, TrainingSet, build_training_set
from ...methods.runner import training_code_version
from ...models import ModelBundle, model_spec
from ...models.store import WeightStore, content_key
from ...pretraining import backbone_of, initial_model, pretrain
from ...training import configure_runtime, train_model
from ...validation import check_pretraining_config
from ..common import reuse_store

log = logging.getLogger(__name__)


def _spec(splits: Splits, model: dict) -> dict:
    options = {k: v for k, v in model.items() if k != "architecture"}
    return model_spec(model["architecture"], splits.num_classes, splits.image_shape, splits.mean, splits.std,
                      **options)


def pretrain_backbone(raw: RawDataset, splits: Splits, pretraining: dict, model: dict, split_config: dict,
                      runtime: dict, store: WeightStore) -> tuple[ModelBundle, dict]:
    """The backbone every model of the run starts from: trained once on `pretraining.classes` and then loaded from
    the store by content address. Off (`pretraining.enabled: false`): an empty bundle (random initialisation)."""
    config = check_pretraining_config(pretraining, split_config)  # the hook checked it too; a node may run alone
    if not config["enabled"]:
        return ModelBundle(), {"enabled": False}
    device = configure_runtime(runtime)
    experiment_classes = split_config.get("classes") or list(range(splits.num_classes))
    state, record = pretrain(raw, config["classes"], experiment_classes, _spec(splits, model), pretraining["recipe"],
                             config["seed"], store, device)
    log.info("pre-trained backbone %s: %s (%d examples of classes %s)", record["key"],
             "reused from the store" if record["reused"] else f"trained in {record['seconds']:.0f} s",
             record["examples"], config["classes"])
    return ModelBundle(backbone_of(state), record["spec"]), {"enabled": True, **record}


def prepare_training_set(splits: Splits, training_set: dict, pretrained: ModelBundle, pretraining_info: dict,
                         name: str, seed: int) -> tuple[TrainingSet, pd.DataFrame]:
    """The clean training split, or its RC-confused version, with the backbone its models start from; the table
    holds ids and labels only."""
    result = build_training_set(splits, name, training_set, seed)
    if pretrained.present:
        result = replace(result, backbone=pretrained.weights, backbone_key=pretraining_info["key"])
    return result, result.table()


def train_original(splits: Splits, training_set: TrainingSet, model: dict, training: dict, runtime: dict,
                   store: WeightStore | None = None, *, seed: int) -> tuple[ModelBundle, dict]:
    """Train the Original on the training set (labels as given, RC-confused where configured), from the
    pre-trained backbone with a fresh head when the run pre-trains, else from a random initialisation. An Original
    whose inputs did not change comes from the model store (`runtime.reuse_models`)."""
    device = configure_runtime(runtime)
    spec = _spec(splits, model)
    store = reuse_store(runtime, store)
    key = content_key({"what": "original", "spec": spec, "recipe": training, "seed": int(seed),
                       "backbone": training_set.backbone_key, "code": training_code_version()},
                      training_set.ids, training_set.labels)
    if store is not None and (state := store.get(key)) is not None:
        info = {**store.record(key), "reused": True}
        log.info("original %s: reused from the model store (trained in %.1f s)", training_set.name, info["seconds"])
        return ModelBundle(state, spec), info
    network = initial_model(spec, seed, training_set.backbone)
    trained = train_model(network, training_set.x, training_set.labels, training, device, seed,
                          what=f"original {training_set.name}")
    bundle = ModelBundle.of(network)
    info = {"seconds": trained["seconds"], "epoch_losses": trained["epoch_losses"], "status": "ok",
            "parameters": training, "backbone": training_set.backbone_key, "content_key": key}
    if store is not None:
        store.put(key, bundle.weights, info)
    return bundle, info
