"""Finetune: keep training a copy of the Original with plain cross-entropy on the retain set only, hoping that the
forget set fades from the weights because it is no longer seen (catastrophic forgetting by continued training).
It is the simplest unlearning baseline, used as such by Golatkar et al., *Eternal Sunshine of the Spotless Net:
Selective Forgetting in Deep Networks* (CVPR 2020), and by Kurmanji et al. (SCRUB, NeurIPS 2023).

Parameters (docs/design.md §5, the same at every scale): optimizer (sgd | adam), lr 0.01, momentum 0.9,
weight_decay 5e-4,
epochs 10, batch_size 128. Training is `training.train_model` (constant lr), batch order seeded by `task.seed`.
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


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """Cross-entropy fine-tuning of a copy of `original` on (retain_x, retain_y); the Original is not touched."""
    config = check_parameters("finetune", params, PARAMETERS)
    model = copy.deepcopy(original)
    trained = train_model(model, task.retain_x, task.retain_y, config, device, seed=task.seed, what="finetune")
    model.eval()
    return model, {"epoch_losses": trained["epoch_losses"]}
