"""SSD, Selective Synaptic Dampening (Foster, Schoepf and Brintrup, *Fast Machine Unlearning Without Retraining
Through Selective Synaptic Dampening*, AAAI 2024). No training: one pass of gradients, then one multiplication.

1. Importances: the diagonal of the Fisher information, estimated as the mean squared gradient of the loss,
       I_S = (1/B) sum_{b=1..B} (d/dtheta CE_b)^2
   where CE_b is the mean cross-entropy of batch b of S (batches of `batch_size`, in order, the last one smaller;
   labels as trained), model in eval mode, fp32. Computed on D, the FULL training data (retain ∪ forget, in that
   order), as the paper and its code do (`full_train_dl`), and on the forget set F.
2. Selection and dampening, per parameter entry i:
       if I_F[i] > alpha * I_D[i]:   theta[i] <- beta[i] * theta[i],   beta[i] = min(lambda * I_D[i] / I_F[i], 1)
   every other entry is left bit-identical.

`alpha` (selection threshold; the paper: 10 for its ResNet-18 CIFAR runs) and `dampening` (the paper's lambda: 1)
are the two parameters; the paper tuned them in alpha in [0.1, 100], lambda in [0.1, 5]. `batch_size` (128, the
paper's loaders) sets the batches of the importance pass: with batch-mean gradients the importances depend on it.

BatchNorm: the model stays in eval mode throughout, so the running statistics are used and never change; the
BatchNorm affine weights and biases are parameters and are selected and dampened like any other.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data import UnlearningTask
from ..parameters import Param, check_parameters
from ..training import batch_loss_gradients, check_finite, prepare_model

PARAMETERS: dict[str, Param] = {
    "alpha": Param("float", 10.0, low=0.0, low_open=True,
                   help="selection: an entry is dampened when I_F > alpha * I_D (the paper searched 0.1-100)"),
    "dampening": Param("float", 1.0, low=0.0, low_open=True,
                       help="lambda: a selected entry is scaled by min(lambda * I_D / I_F, 1) (the paper searched "
                            "0.1-5)"),
    "batch_size": Param("int", 128, low=1, help="examples per batch of the importance pass"),
}


def importances(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                device: torch.device) -> dict[str, torch.Tensor]:
    """name -> mean over the batches of (x, y) (in order) of the squared gradient of the batch-mean cross-entropy;
    eval mode, fp32. Zeros for an empty set."""
    total = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    batches = 0
    for grads, _ in batch_loss_gradients(model, x, y, batch_size, device):
        batches += 1
        for name, g in grads.items():
            total[name] += g.pow(2)
    return {name: t / max(1, batches) for name, t in total.items()}


@torch.no_grad()
def dampen(model: nn.Module, importance_d: dict[str, torch.Tensor], importance_f: dict[str, torch.Tensor],
           alpha: float, dampening: float) -> dict[str, int]:
    """Scale, in place, every entry with I_F > alpha * I_D by min(dampening * I_D / I_F, 1); the others are
    untouched. Returns how many entries were selected per parameter."""
    selected = {}
    for name, p in model.named_parameters():
        i_d, i_f = importance_d[name], importance_f[name]
        chosen = i_f > alpha * i_d
        beta = torch.clamp(dampening * i_d / torch.where(chosen, i_f, torch.ones_like(i_f)), max=1.0)
        p.copy_(torch.where(chosen, p * beta, p))
        selected[name] = int(chosen.sum())
    return selected


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """SSD on a copy of `original` (not touched); returns it in eval mode and the selection counts."""
    config = check_parameters("ssd", params, PARAMETERS)
    model = prepare_model(copy.deepcopy(original), device).eval()
    train_x = torch.cat([task.retain_x, task.forget_x])
    train_y = torch.cat([task.retain_y, task.forget_y])
    importance_d = importances(model, train_x, train_y, config["batch_size"], device)
    importance_f = importances(model, task.forget_x, task.forget_y, config["batch_size"], device)
    selected = dampen(model, importance_d, importance_f, config["alpha"], config["dampening"])
    check_finite(model, None, "ssd")
    model.eval()
    dampened = sum(selected.values())
    total = sum(p.numel() for p in model.parameters())
    return model, {"dampened_weights": dampened, "total_weights": total,
                   "dampened_fraction": dampened / max(1, total)}
