"""CF-k ("catastrophically forget the last k layers"): fine-tune only the last block of a copy of the Original -
the linear head plus the architecture's last block (`models.last_block_modules`: ResNet `layer4` and its final
BatchNorm, All-CNN's last two convs, SmallCNN's second conv block) - with cross-entropy on the retain set, and
rely on those layers forgetting what they no longer see. Everything else is frozen and stays in eval mode, so its
weights and BatchNorm statistics do not move. From Goel et al., *Towards Adversarial Evaluation of Machine
Unlearning* (arXiv:2201.06640, 2022), as used by Kurmanji et al. (SCRUB, NeurIPS 2023).

Parameters (the same at every scale, docs/design.md §5): optimizer (sgd | adam), lr 0.01, momentum 0.9,
weight_decay 5e-4,
epochs 10, batch_size 128.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data import UnlearningTask
from ..models import last_block_modules
from ..parameters import Param, check_parameters
from ..training import recipe_parameters, train_model

PARAMETERS: dict[str, Param] = recipe_parameters(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, epochs=10,
                                                   batch_size=128)


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """Cross-entropy on (retain_x, retain_y) for the last block of a copy of `original`; the rest is frozen."""
    config = check_parameters("cf_k", params, PARAMETERS)
    model = copy.deepcopy(original)
    trained = train_model(model, task.retain_x, task.retain_y, config, device, seed=task.seed,
                          modules=last_block_modules(model), what="cf_k")
    model.eval()
    return model, {"epoch_losses": trained["epoch_losses"],
                   "trained_modules": list(model.last_block)}
