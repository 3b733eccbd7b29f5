"""Retrain: the gold reference. The Original's procedure without the forget set: a model of the Original's
architecture, initialised from the Original's seed (and from the pre-trained backbone when the run pre-trains),
trained on the retain set only with the Original's recipe."""

from __future__ import annotations

import torch
from torch import nn

from ..data import UnlearningTask
from ..parameters import Param, check_parameters
from ..pretraining import initial_model
from ..training import RECIPE_PARAMETERS, train_model

PARAMETERS: dict[str, Param] = RECIPE_PARAMETERS  # the Original's recipe (the registry hands Retrain `training`)


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """Train from scratch on (retain_x, retain_y); `params` is the Original's training recipe."""
    params = check_parameters("retrain", params, PARAMETERS)
    model = initial_model(original.spec, task.seed, task.backbone)
    info = train_model(model, task.retain_x, task.retain_y, params, device, seed=task.seed, what="retrain")
    return model, info
