"""Per training set and seed: the training set and its Original, in namespace `<training set>.seed_<n>`."""

from __future__ import annotations

from kedro.pipeline import Pipeline, node

from ..common import RUNTIME, bind, seeded
from . import nodes


def create_pretraining_pipeline() -> Pipeline:
    """The pre-trained backbone, once per run (an empty bundle when `pretraining.enabled` is false)."""
    return Pipeline([
        node(nodes.pretrain_backbone,
             ["raw_dataset", "splits", "params:pretraining", "params:model", "params:splits", RUNTIME,
              "pretrained_store"],
             ["pretrained_backbone", "pretraining_info"], name="pretrain_backbone"),
    ], tags=["training"])


def create_pipeline(name: str, seed: int, all_tags: list[str]) -> Pipeline:
    """The training set `name` and its Original for one seed. Every method's tag is on these nodes, so
    `kedro run --tags method.<name>` has its Original."""
    template = Pipeline([
        node(bind(nodes.prepare_training_set, name=name, seed=seed),
             ["splits", "params:training_set", "pretrained_backbone", "pretraining_info"],
             ["training_set", "training_labels"], name="prepare_training_set", tags=all_tags),
        node(bind(nodes.train_original, seed=seed),
             ["splits", "training_set", "params:model", "params:training", RUNTIME, "model_store"],
             ["original_model", "original_info"], name="train_original", tags=all_tags),
    ])
    return Pipeline(
        template, namespace=seeded(name, seed),
        inputs={"splits", "pretrained_backbone", "pretraining_info", "model_store"},
        parameters={"params:training_set": f"params:training_sets.{name}", "params:model": "params:model",
                    "params:training": "params:training", RUNTIME: RUNTIME},
        tags=["training"],
    )
