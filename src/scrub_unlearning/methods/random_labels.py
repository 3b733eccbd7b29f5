"""Random Labels: relabel every forget example with a class drawn uniformly at random among the OTHER classes (never
the label it was trained with), then fine-tune a copy of the Original with cross-entropy on the relabelled forget
set together with the retain set. The model is pushed to contradict what it learnt on the forget set while the
retain set keeps the rest in place. This is the "amnesiac" unlearning of Graves, Nagisetty and Ganesh
(*Amnesiac Machine Learning*, AAAI 2021: "randomly selected incorrect labels"), and the RL baseline of SalUn's
comparisons (Fan et al., ICLR 2024, who attribute it to Golatkar et al. 2020), on which SalUn builds
(`methods.salun`).

    y'_i = (y_i + 1 + r_i) mod C,   r_i ~ Uniform{0, ..., C - 2}   (so y'_i != y_i, every other class equally likely)

drawn once, before training, from a generator seeded by `task.seed` (the same seed gives the same labels). The
labels are the ones the model was trained with (`task.forget_y`; for RC the swapped ones, so the true label is
among the candidates). Training is `training.train_model` on retain ∪ relabelled forget, shuffled together each
epoch (seeded by `task.seed`), constant lr; one epoch = one pass over the union.

Deviation: SalUn's code draws fresh labels every epoch from all C classes (the own label included, for CIFAR-10
once per batch); we follow Graves et al.'s fixed incorrect labels, as the method is specified here.

Parameters (every preset): optimizer (sgd | adam), lr, momentum 0.9, weight_decay 5e-4, epochs, batch_size; see
`conf/*/parameters_unlearning.yml` for each preset's values.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data import UnlearningTask
from ..parameters import Param, check_parameters
from ..training import recipe_parameters, train_model

PARAMETERS: dict[str, Param] = recipe_parameters(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, epochs=10,
                                                   batch_size=128)


def random_other_labels(labels: torch.Tensor, num_classes: int, generator: torch.Generator) -> torch.Tensor:
    """For each label y, a class drawn uniformly from the other `num_classes - 1` classes (never y), on the CPU
    from `generator`: y' = (y + 1 + r) mod C with r uniform in {0, ..., C - 2}."""
    if num_classes < 2:
        raise ValueError(f"random labels need at least 2 classes, got {num_classes}")
    labels = labels.to("cpu", torch.int64)
    offsets = torch.randint(0, num_classes - 1, labels.shape, generator=generator)
    return (labels + 1 + offsets) % num_classes


def relabelled_training_data(task: UnlearningTask) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x, y, forget_labels): retain ∪ forget with the forget examples relabelled by `random_other_labels`
    (generator seeded by `task.seed`); the forget examples come last."""
    generator = torch.Generator().manual_seed(int(task.seed))
    forget_labels = random_other_labels(task.forget_y, task.num_classes, generator)
    x = torch.cat([task.retain_x, task.forget_x])
    y = torch.cat([task.retain_y.to(torch.int64), forget_labels])
    return x, y, forget_labels


def train_on_random_labels(model: nn.Module, task: UnlearningTask, config: dict, device: torch.device, what: str,
                           after_step=None) -> dict:
    """`train_model` on retain ∪ relabelled forget (in place); returns its per-epoch losses."""
    x, y, _ = relabelled_training_data(task)
    trained = train_model(model, x, y, config, device, seed=task.seed, what=what, after_step=after_step)
    return {"epoch_losses": trained["epoch_losses"]}


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """Fine-tune a copy of `original` on retain ∪ randomly relabelled forget; the Original is not touched."""
    config = check_parameters("random_labels", params, PARAMETERS)
    model = copy.deepcopy(original)
    info = train_on_random_labels(model, task, config, device, "random_labels")
    model.eval()
    return model, {**info, "forget_examples": len(task.forget_x)}
