"""NegGrad+: NegGrad with an anchor. A copy of the Original (all layers, train mode) minimises
`beta * CE(retain) - (1 - beta) * CE(forget)`: the ascent on the forget set is balanced by ordinary descent on
the retain set, so the model forgets without drifting as far as plain NegGrad does. Each epoch is one pass over the
retain set; the forget batches come from a loader that cycles (reshuffled every pass) to keep pace. Introduced by
Kurmanji et al., *Towards Unbounded Machine Unlearning* (SCRUB, NeurIPS 2023) as a strengthened NegGrad. A NaN or
infinite loss or weight raises `training.DivergenceError`.

Parameters: beta, optimizer (sgd | adam), lr 0.01, momentum 0.9, weight_decay 5e-4, epochs, retain_batch 128,
forget_batch 128. Small scale / digits: beta 0.95, 10 epochs; large scale: beta 0.9999, 5 epochs (docs/design.md §5).
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
    cycle_batches,
    make_optimizer,
    optimizer_step,
    prepare_model,
    recipe_parameters,
)

PARAMETERS: dict[str, Param] = {
    "beta": Param("float", 0.95, low=0.0, high=1.0, help="weight of the retain cross-entropy (1 - beta: the forget's)"),
    **recipe_parameters(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, epochs=10),
    "retain_batch": Param("int", 128, low=1, help="retain examples per step (one epoch = one retain pass)"),
    "forget_batch": Param("int", 128, low=1, help="forget examples per step (cycled)"),
}


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """Minimise beta*CE(retain) - (1-beta)*CE(forget) for a copy of `original`; one epoch = one retain pass."""
    config = check_parameters("neggrad_plus", params, PARAMETERS)
    beta = config["beta"]
    model = prepare_model(copy.deepcopy(original), device)
    model.train()
    optimizer = make_optimizer(model.parameters(), config)
    generator = torch.Generator().manual_seed(int(task.seed))
    retain_x, retain_y = task.retain_x.to(device), task.retain_y.to(device)
    forget_x, forget_y = task.forget_x.to(device), task.forget_y.to(device)
    forget_batches = cycle_batches(len(forget_x), config["forget_batch"], generator, device) if len(forget_x) else None
    history: dict[str, list[float]] = {"epoch_losses": [], "epoch_retain_ce": [], "epoch_forget_ce": []}
    for epoch in range(1, config["epochs"] + 1):
        total_retain = torch.zeros((), device=device)
        total_forget = torch.zeros((), device=device)
        batches = batch_indices(len(retain_x), config["retain_batch"], generator, True, device)
        for index in batches:
            with autocast(device):
                retain_ce = F.cross_entropy(model(retain_x[index]).float(), retain_y[index])
                if forget_batches is not None:
                    forget_index = next(forget_batches)
                    forget_ce = F.cross_entropy(model(forget_x[forget_index]).float(), forget_y[forget_index])
                else:
                    forget_ce = torch.zeros((), device=device)
                loss = beta * retain_ce - (1.0 - beta) * forget_ce
            optimizer_step(optimizer, loss)
            total_retain += retain_ce.detach()
            total_forget += forget_ce.detach()
        count = max(1, len(batches))
        mean_retain, mean_forget = total_retain / count, total_forget / count
        mean_loss = beta * mean_retain - (1.0 - beta) * mean_forget
        check_finite(model, mean_loss, f"neggrad_plus epoch {epoch}")
        history["epoch_losses"].append(float(mean_loss))
        history["epoch_retain_ce"].append(float(mean_retain))
        history["epoch_forget_ce"].append(float(mean_forget))
        report("neggrad_plus", epoch, config["epochs"])
        observe_epoch("neggrad_plus", epoch, config["epochs"], model)
    model.eval()
    return model, history
