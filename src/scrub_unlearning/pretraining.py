"""Pre-training on classes the experiment does not use: the paper's CIFAR-100 pre-training of its small-scale
models, made offline (docs/design.md §5). No CIFAR-100 ships with the project, so the backbone is trained on every
training example of the CIFAR-10 classes CIFAR-5 leaves out (5-9); the Original then starts from those weights with
a freshly initialised head and is fine-tuned on the experiment's training set. Retrain and U-LiRA's shadows follow
the Original's procedure, so they start from the same backbone (the training set carries it: `TrainingSet.backbone`).

The backbone is stored by content address (architecture, recipe, seed, and exactly which (id, label) pairs it
trained on) in a `WeightStore`, trained once and reused by every later run, like the shadows.
"""

from __future__ import annotations

import time

import torch
from torch import nn

from .data import RawDataset
from .models import Classifier, build_model, state_dict_for_saving
from .models.store import WeightStore, content_key
from .parameters import Param, check_parameters
from .training import RECIPE_PARAMETERS, seed_everything, train_model

HEAD_PREFIX = "head."

PARAMETERS: dict[str, Param] = {
    "enabled": Param("bool", False, help="pre-train a backbone and start every model of the run from it"),
    "classes": Param("int_list", (), help="source classes to pre-train on (every training example of them); "
                                          "must be disjoint from `splits.classes`"),
    "seed": Param("int", 0, low=0, help="seed of the backbone's initialisation and batch order"),
}
"""`pretraining.*` besides `recipe` (which `training.RECIPE_PARAMETERS` declares)."""


def pretraining_data(raw: RawDataset, classes: list[int],
                     experiment_classes: list[int]) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, ids) of every training-part example of `classes`, labels renumbered 0..len(classes)-1 in the given
    order. Refuses classes the experiment uses (its forget sets would leak into the backbone) and unknown ones."""
    classes = [int(c) for c in classes]
    if not classes:
        raise ValueError("pretraining.classes is empty; list the source classes to pre-train on")
    unknown = [c for c in classes if not 0 <= c < raw.num_classes]
    if unknown:
        raise ValueError(f"pretraining.classes {unknown} are not in the dataset; allowed are 0..{raw.num_classes - 1}")
    shared = sorted(set(classes) & {int(c) for c in experiment_classes})
    if shared:
        raise ValueError(f"pretraining.classes {shared} are also experiment classes (splits.classes); pre-training "
                         "must use classes the experiment never sees")
    if len(set(classes)) != len(classes):
        raise ValueError(f"pretraining.classes {classes} repeats a class")
    ids = torch.nonzero(torch.isin(raw.y_train, torch.tensor(classes))).flatten()
    relabel = torch.full((raw.num_classes,), -1, dtype=torch.int64)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))
    return raw.x_train[ids], relabel[raw.y_train[ids]], ids


def pretraining_spec(spec: dict, num_classes: int) -> dict:
    """The experiment's architecture (same width and normalisation) with a head for the source classes."""
    return {**spec, "num_classes": int(num_classes)}


def pretrain(raw: RawDataset, classes: list[int], experiment_classes: list[int], spec: dict, recipe: dict,
             seed: int, store: WeightStore, device: torch.device) -> tuple[dict[str, torch.Tensor], dict]:
    """The backbone's weights (head included) and a record: loaded from `store` when its content address is there,
    else trained with `recipe` and stored. The record says how long the training took and whether it was reused."""
    x, y, ids = pretraining_data(raw, classes, experiment_classes)
    source_spec = pretraining_spec(spec, len(classes))
    recipe = check_parameters("pretraining.recipe", recipe, RECIPE_PARAMETERS, paths="pretraining.recipe")  # canonical
    key = content_key({"what": "pretrained backbone", "spec": source_spec, "recipe": recipe, "seed": int(seed)},
                      ids, y)
    state = store.get(key)
    if state is not None:
        return state, {**(store.record(key) or {}), "key": key, "reused": True}
    start = time.perf_counter()
    seed_everything(seed)
    model = build_model(source_spec)
    trained = train_model(model, x, y, recipe, device, seed, what="pre-training")
    record = {"key": key, "classes": classes, "examples": len(ids), "spec": source_spec, "recipe": recipe,
              "seed": int(seed), "epoch_losses": trained["epoch_losses"],
              "seconds": time.perf_counter() - start, "reused": False}
    state = state_dict_for_saving(model)
    store.put(key, state, record)
    return state, record


def backbone_of(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Everything but the head: what a model of the experiment starts from."""
    return {name: tensor for name, tensor in state.items() if not name.startswith(HEAD_PREFIX)}


def initial_model(spec: dict, seed: int, backbone: dict[str, torch.Tensor] | None = None) -> Classifier:
    """A model to train: freshly initialised from `seed`, then, with a backbone, every weight but the head replaced
    by the backbone's (the head keeps its fresh initialisation). The Original, Retrain and the shadows start here."""
    seed_everything(seed)
    model = build_model(spec)
    if backbone:
        load_backbone(model, backbone)
    return model


def load_backbone(model: nn.Module, backbone: dict[str, torch.Tensor]) -> None:
    """Copy the backbone into `model` in place; every non-head tensor must be there with the same shape."""
    own = {name: tensor for name, tensor in model.state_dict().items() if not name.startswith(HEAD_PREFIX)}
    missing = sorted(set(own) - set(backbone))
    mismatched = sorted(n for n in own if n in backbone and tuple(backbone[n].shape) != tuple(own[n].shape))
    if missing or mismatched:
        raise ValueError(f"the pre-trained backbone does not fit this architecture: missing {missing[:3]}, "
                         f"shape mismatch {mismatched[:3]}")
    model.load_state_dict({name: backbone[name] for name in own}, strict=False)

