"""NegGrad: gradient ascent on the forget set. A copy of the Original (all layers, train mode) takes optimizer
steps that *increase* the cross-entropy of the forget examples under the labels it was trained with, i.e. it
minimises `-CE(forget)`; the retain set is never used, so nothing holds the rest of the model in place. Baseline
from Golatkar et al., *Eternal Sunshine of the Spotless Net* (CVPR 2020), as used by Kurmanji et al. (SCRUB,
NeurIPS 2023). The ascent is unbounded: when the loss or a weight stops being finite the method fails with
`training.DivergenceError` ("stop on NaN"), which is how the pipeline records that it failed.

Parameters: optimizer (sgd | adam), lr, momentum 0.9, weight_decay 5e-4, epochs 5, batch_size 64. lr is 1e-3
at small scale / digits and 1e-4 at large scale (docs/design.md §5).
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..data import UnlearningTask
from ..parameters import Param, check_parameters
from ..progress import observe_epoch, report
from ..training import (
    autocast,
    batch_indices,
    check_finite,
    make_optimizer,
    optimizer_step,
    prepare_model,
    recipe_parameters,
)

PARAMETERS: dict[str, Param] = recipe_parameters(optimizer="sgd", lr=1e-3, momentum=0.9, weight_decay=5e-4, epochs=5,
                                                   batch_size=64)


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """Minimise -CE on (forget_x, forget_y) for a copy of `original`; DivergenceError when it stops being finite."""
    config = check_parameters("neggrad", params, PARAMETERS)
    model = prepare_model(copy.deepcopy(original), device)
    model.train()
    optimizer = make_optimizer(model.parameters(), config)
    generator = torch.Generator().manual_seed(int(task.seed))
    forget_x, forget_y = task.forget_x.to(device), task.forget_y.to(device)
    forget_ce: list[float] = []
    for epoch in range(1, config["epochs"] + 1):
        total = torch.zeros((), device=device)
        batches = batch_indices(len(forget_x), config["batch_size"], generator, True, device)
        for index in batches:
            with autocast(device):
                loss = -F.cross_entropy(model(forget_x[index]).float(), forget_y[index])
            total += optimizer_step(optimizer, loss)
        mean_loss = total / max(1, len(batches))
        check_finite(model, mean_loss, f"neggrad epoch {epoch} (stop on NaN)")
        forget_ce.append(-float(mean_loss))
        report("neggrad", epoch, config["epochs"])
        observe_epoch("neggrad", epoch, config["epochs"], model)
    model.eval()
    return model, {"epoch_forget_ce": forget_ce}
