"""Retrain: the gold reference. A fresh model of the Original's architecture trained on the retain set only,
with the Original's recipe and seed."""

from __future__ import annotations

import torch
from torch import nn

from ..data import UnlearningTask
from ..models import build_model
from ..parameters import Param, check_parameters
from ..training import RECIPE_PARAMETERS, seed_everything, train_model

PARAMETERS: dict[str, Param] = RECIPE_PARAMETERS  # the Original's recipe (the registry hands Retrain `training`)


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """Train from scratch on (retain_x, retain_y); `params` is the Original's training recipe."""
    params = check_parameters("retrain", params, PARAMETERS)
    seed_everything(task.seed)
    model = build_model(original.spec)
    info = train_model(model, task.retain_x, task.retain_y, params, device, seed=task.seed, what="retrain")
    return model, info
