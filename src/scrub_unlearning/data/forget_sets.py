"""Forget sets per application, as ids (never images), and the task a method unlearns.

- RB class: every training example of one class.
- RB selective / UP: a seeded random subset of one class.
- RC: n/2 examples of class A relabelled B and n/2 of B relabelled A; the Original trains on these confused labels,
  and the forget set is exactly the mislabelled examples.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import pandas as pd
import torch

from .splits import Splits

APPLICATIONS = ("rb_class", "rb_selective", "rc", "up")


@dataclass
class TrainingSet:
    """The training split with the labels the Original is trained on (RC swaps some of them)."""

    name: str
    ids: torch.Tensor
    x: torch.Tensor
    labels: torch.Tensor
    true_labels: torch.Tensor
    relabelled_ids: torch.Tensor = field(default_factory=lambda: torch.empty(0, dtype=torch.int64))
    confused_classes: tuple[int, int] | None = None
    # the pre-trained weights (head excluded) every model trained on this set starts from, and their content
    # address; None: a random initialisation (docs/design.md §5, pre-training)
    backbone: dict[str, torch.Tensor] | None = field(default=None, repr=False)
    backbone_key: str | None = None

    def table(self) -> pd.DataFrame:
        """Ids with trained and true labels (no pixels), for the catalog."""
        return pd.DataFrame({
            "id": self.ids.numpy(), "label": self.labels.numpy(), "true_label": self.true_labels.numpy(),
        })


def _check_class(class_id: int, num_classes: int, what: str) -> int:
    if isinstance(class_id, bool) or not isinstance(class_id, (int, np.integer)) or not 0 <= class_id < num_classes:
        raise ValueError(
            f"{what}: class id {class_id!r} is not a class of this dataset; allowed are 0..{num_classes - 1}"
        )
    return int(class_id)


def _check_size(size: int, available: int, class_id: int, what: str) -> int:
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 1:
        raise ValueError(f"{what}: forget size {size!r} must be a positive integer")
    if size > available:
        raise ValueError(
            f"{what}: forget size {size} is larger than class {class_id}, which has {available} training examples"
        )
    return int(size)


def build_class_forget_set(ids: torch.Tensor, labels: torch.Tensor, class_id: int, num_classes: int) -> torch.Tensor:
    """RB class: the ids of every training example of `class_id`."""
    class_id = _check_class(class_id, num_classes, "rb_class")
    return ids[labels == class_id].clone()


def build_selective_forget_set(ids: torch.Tensor, labels: torch.Tensor, class_id: int, size: int,
                               num_classes: int, seed: int) -> torch.Tensor:
    """RB selective / UP: `size` ids drawn without replacement from `class_id`, reproducibly from `seed`."""
    class_id = _check_class(class_id, num_classes, "selective forget set")
    candidates = ids[labels == class_id]
    size = _check_size(size, len(candidates), class_id, "selective forget set")
    generator = torch.Generator().manual_seed(int(seed))
    chosen = candidates[torch.randperm(len(candidates), generator=generator)[:size]]
    return chosen.sort().values


def build_confusion_forget_set(ids: torch.Tensor, labels: torch.Tensor, classes: tuple[int, int], size: int,
                               num_classes: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """RC: `size` ids, half from A and half from B, and their swapped labels (A->B, B->A)."""
    if len(classes) != 2 or classes[0] == classes[1]:
        raise ValueError(f"rc: 'classes' must be two different class ids, got {classes!r}")
    a, b = (_check_class(c, num_classes, "rc") for c in classes)
    if isinstance(size, bool) or not isinstance(size, (int, np.integer)) or size < 2 or size % 2:
        raise ValueError(f"rc: forget size {size!r} must be a positive even integer (n/2 from each class)")
    generator = torch.Generator().manual_seed(int(seed))
    chosen, new_labels = [], []
    for source, target in ((a, b), (b, a)):
        candidates = ids[labels == source]
        _check_size(size // 2, len(candidates), source, "rc (half of the size from each class)")
        pick = candidates[torch.randperm(len(candidates), generator=generator)[: size // 2]]
        chosen.append(pick)
        new_labels.append(torch.full((len(pick),), target, dtype=torch.int64))
    forget_ids = torch.cat(chosen)
    order = forget_ids.argsort()
    return forget_ids[order], torch.cat(new_labels)[order]


def build_training_set(splits: Splits, name: str, config: dict | None, seed: int) -> TrainingSet:
    """The clean training split, or (with `config['confuse']`) its RC-confused version."""
    ids, x, labels = splits.ids["train"], splits.x["train"], splits.y["train"]
    confuse = (config or {}).get("confuse")
    if not confuse:
        return TrainingSet(name, ids, x, labels.clone(), labels)
    forget_ids, swapped = build_confusion_forget_set(
        ids, labels, tuple(confuse["classes"]), confuse["size"], splits.num_classes, seed
    )
    position = torch.searchsorted(ids, forget_ids)
    confused = labels.clone()
    confused[position] = swapped
    return TrainingSet(name, ids, x, confused, labels, forget_ids, tuple(int(c) for c in confuse["classes"]))


@dataclass
class UnlearningTask:
    """What a method needs: the retain and forget parts of the training set (labels as trained), the validation
    split, and which classes the model must keep (the guard's and the metrics' view)."""

    application: str
    retain_x: torch.Tensor
    retain_y: torch.Tensor
    forget_x: torch.Tensor
    forget_y: torch.Tensor
    val_x: torch.Tensor
    val_y: torch.Tensor
    num_classes: int
    kept_classes: tuple[int, ...]
    forget_classes: tuple[int, ...]
    seed: int
    swap: dict[int, int] = field(default_factory=dict)
    backbone: dict[str, torch.Tensor] | None = field(default=None, repr=False)  # what Retrain starts from

    def forget_view_labels(self, y: torch.Tensor) -> torch.Tensor:
        """Labels against which `forget_error` is scored: the RC swap A<->B, identity otherwise."""
        if not self.swap:
            return y
        out = y.clone()
        for source, target in self.swap.items():
            out[y == source] = target
        return out


def build_forget_set(training_set: TrainingSet, scenario: dict, num_classes: int, seed: int) -> pd.DataFrame:
    """The scenario's forget set as a table of ids with the label they were trained with and their true label."""
    application = scenario["application"]
    forget = scenario.get("forget", {})
    ids, labels = training_set.ids, training_set.labels
    if application == "rb_class":
        forget_ids = build_class_forget_set(ids, labels, forget.get("class_id"), num_classes)
    elif application in ("rb_selective", "up"):
        forget_ids = build_selective_forget_set(
            ids, labels, forget.get("class_id"), forget.get("size"), num_classes, seed
        )
    elif application == "rc":
        if training_set.confused_classes is None:
            raise ValueError(f"rc scenarios need a confused training set; '{training_set.name}' has no 'confuse'")
        forget_ids = training_set.relabelled_ids
    else:
        raise ValueError(f"unknown scenario application '{application}'; allowed are {list(APPLICATIONS)}")
    position = torch.searchsorted(ids, forget_ids)
    return pd.DataFrame({
        "id": forget_ids.numpy(),
        "label": training_set.labels[position].numpy(),
        "true_label": training_set.true_labels[position].numpy(),
    })


def make_task(splits: Splits, training_set: TrainingSet, forget_table: pd.DataFrame, application: str,
              seed: int) -> UnlearningTask:
    """Retain = training set minus forget ids; kept classes exclude the forgotten class for RB class only."""
    forget_ids = torch.as_tensor(forget_table["id"].to_numpy().copy(), dtype=torch.int64)
    is_forget = torch.isin(training_set.ids, forget_ids)
    if int(is_forget.sum()) != len(forget_ids):
        raise ValueError("forget ids are not all in the training set")
    forget_classes = tuple(sorted(set(int(c) for c in forget_table["true_label"])))
    all_classes = tuple(range(splits.num_classes))
    kept = tuple(c for c in all_classes if c not in forget_classes) if application == "rb_class" else all_classes
    swap = {}
    if application == "rc" and training_set.confused_classes is not None:
        a, b = training_set.confused_classes
        swap = {a: b, b: a}
    return UnlearningTask(
        application=application,
        retain_x=training_set.x[~is_forget], retain_y=training_set.labels[~is_forget],
        forget_x=training_set.x[is_forget], forget_y=training_set.labels[is_forget],
        val_x=splits.x["val"], val_y=splits.y["val"],
        num_classes=splits.num_classes, kept_classes=kept, forget_classes=forget_classes, seed=seed, swap=swap,
        backbone=training_set.backbone,
    )
