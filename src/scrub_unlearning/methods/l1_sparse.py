"""ℓ1-sparse unlearning (Jia, Liu, Ram, Yao, Liu, Liu, Sharma and Liu, *Model Sparsity Can Simplify Machine
Unlearning*, NeurIPS 2023, "sparsity-aware unlearning"): fine-tune a copy of the Original on the retain set with an
ℓ1 penalty on the weights, so that fine-tuning also drives the model towards a sparse one - the paper shows that
sparsity closes much of the gap between approximate unlearning and retraining. The penalty's strength decays
linearly over the unlearning epochs: strong at first (sparsify while forgetting), vanishing at the end (recover
accuracy on the retain set).

    minimise   CE(retain) + gamma_k * ||theta||_1          over epoch k = 1..E (1-based)
    gamma_k  = gamma * (1 - (k - 1) / E)                   (gamma, gamma(1 - 1/E), ..., gamma / E)

`||theta||_1` is the sum of absolute values of every parameter (weights, biases, BatchNorm affine; not the
BatchNorm statistics). The paper schedules gamma to decay linearly over the unlearning epochs; the formula above is
the one of the authors' code base (`alpha * (1 - epoch / unlearn_epochs)` at 0-based epoch e, i.e. k = e + 1 here;
its first epoch has the full strength, its last gamma / E, and the mean over epochs is gamma (E + 1) / (2E)). The
exact normalisation printed in the paper could not be checked offline. Training is `training.train_model` with the
penalty as its `extra_loss` hook: seeded batch order (`task.seed`), constant lr, SGD with momentum and (L2) weight
decay as in the authors' fine-tuning. The reported per-epoch losses include the penalty; `info` also holds the
strength per epoch and the ℓ1 norm before and after.

The paper's other proposal, "prune first, then unlearn" (one-shot magnitude pruning of the Original), is not part of
this method.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data import UnlearningTask
from ..parameters import Param, check_parameters
from ..training import recipe_parameters, train_model

PARAMETERS: dict[str, Param] = {
    "gamma": Param("float", 5e-4, low=0.0,
                   help="ℓ1 strength of the first epoch; epoch k of E uses gamma * (1 - (k - 1) / E)"),
    **recipe_parameters(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, epochs=10, batch_size=128),
}


def l1_strength(gamma: float, epoch: int, epochs: int) -> float:
    """The penalty's strength in epoch `epoch` (1-based) of `epochs`: gamma * (1 - (epoch - 1) / epochs)."""
    return float(gamma) * (1.0 - (int(epoch) - 1) / int(epochs))


def l1_norm(model: nn.Module) -> torch.Tensor:
    """Sum of |theta| over every parameter (differentiable; a 0-d tensor on the parameters' device)."""
    return torch.stack([p.abs().sum() for p in model.parameters()]).sum()


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """Cross-entropy on the retain set plus the decaying ℓ1 penalty, for a copy of `original` (not touched)."""
    config = check_parameters("l1_sparse", params, PARAMETERS)
    gamma, epochs = config["gamma"], config["epochs"]
    model = copy.deepcopy(original)
    norm_before = float(l1_norm(model).detach())

    def penalty(net: nn.Module, epoch: int) -> torch.Tensor:
        return l1_strength(gamma, epoch, epochs) * l1_norm(net)

    trained = train_model(model, task.retain_x, task.retain_y, config, device, seed=task.seed, what="l1_sparse",
                          extra_loss=penalty)
    model.eval()
    return model, {
        "epoch_losses": trained["epoch_losses"],
        "l1_strength": [l1_strength(gamma, k, epochs) for k in range(1, epochs + 1)],
        "l1_norm_original": norm_before,
        "l1_norm_final": float(l1_norm(model).detach()),
    }
