"""SalUn, saliency unlearning (Fan, Liu, Zhang, Wong, Wei and Liu, *SalUn: Empowering Machine Unlearning via
Gradient-based Weight Saliency in Both Image Classification and Generation*, ICLR 2024).

1. Weight saliency. The gradient of the forget loss at the Original,
       g = d/dtheta [ (1/|F|) sum_{(x, y) in F} CE(f_theta(x), y) ]  at theta = theta_orig
   (eval mode, fp32, labels as trained), taken over every parameter entry of the model together. The mask m keeps
   the `floor(mask_fraction * N)` entries with the largest |g| (N = number of parameter entries; global ranking,
   as the paper's hard threshold at the top fraction, 0.5 by default).
2. Random Labels training (`methods.random_labels`: forget examples relabelled uniformly among the other
   classes, once, seeded; together with the retain set) that updates only the salient weights: every parameter's
   gradient is multiplied by m during backward, and after every optimizer step the entries outside m are written
   back to the Original's values, so weight decay and momentum cannot move them either - they end bit-identical to
   the Original's.

BatchNorm: its affine parameters are ranked and masked like every other parameter; its running statistics are
buffers, not weights, and update in train mode as in the paper's code (they are not masked).

Deviations: the authors' code sums the gradients of batch-mean losses over forget batches (the same ranking up to
the unequal last batch); their Random Labels draws fresh labels each epoch from all classes (see
`methods.random_labels`); in their code weight decay could move masked-out weights, here they are restored.

Parameters: mask_fraction (0.5), optimizer (sgd | adam), lr, momentum 0.9, weight_decay 5e-4, epochs, batch_size.
"""

from __future__ import annotations

import copy

import torch
from torch import nn

from ..data import UnlearningTask
from ..parameters import Param, check_parameters
from ..training import batch_loss_gradients, prepare_model, recipe_parameters
from .random_labels import train_on_random_labels

PARAMETERS: dict[str, Param] = {
    "mask_fraction": Param("float", 0.5, low=0.0, high=1.0, low_open=True,
                           help="share of the parameter entries that may change: those with the largest "
                                "|forget-loss gradient|"),
    **recipe_parameters(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, epochs=10, batch_size=128),
}

GRADIENT_BATCH = 512   # forget examples per backward pass of the saliency gradient (memory only; sums are exact)


def forget_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device,
                    batch_size: int = GRADIENT_BATCH) -> dict[str, torch.Tensor]:
    """name -> d/dtheta of the mean cross-entropy over (x, y), in eval mode and fp32 (batch means weighted by their
    share of the examples)."""
    total = {name: torch.zeros_like(p) for name, p in model.named_parameters()}
    for grads, count in batch_loss_gradients(model, x, y, batch_size, device):
        for name, g in grads.items():
            total[name] += g * (count / max(1, len(x)))
    return total


def saliency_mask(gradients: dict[str, torch.Tensor], fraction: float) -> dict[str, torch.Tensor]:
    """name -> bool mask of the `floor(fraction * N)` entries with the largest |gradient| over all tensors together
    (ties at the threshold broken by `torch.topk`)."""
    flat = torch.cat([g.detach().abs().flatten() for g in gradients.values()])
    k = int(float(fraction) * flat.numel())
    chosen = torch.zeros(flat.numel(), dtype=torch.bool, device=flat.device)
    if k > 0:
        chosen[torch.topk(flat, k, sorted=False).indices] = True
    masks, start = {}, 0
    for name, g in gradients.items():
        masks[name] = chosen[start:start + g.numel()].view(g.shape)
        start += g.numel()
    return masks


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """SalUn on a copy of `original` (not touched): saliency mask from the forget loss, then Random Labels training
    of the masked weights only. Returns the model in eval mode and an info dict."""
    config = check_parameters("salun", params, PARAMETERS)
    model = prepare_model(copy.deepcopy(original), device)
    masks = saliency_mask(forget_gradient(model, task.forget_x, task.forget_y, device), config["mask_fraction"])
    named = dict(model.named_parameters())
    frozen = {name: p.detach().clone() for name, p in named.items()}
    masks = {name: m.to(named[name].device) for name, m in masks.items()}
    scales = {name: m.to(named[name].dtype) for name, m in masks.items()}

    handles = [p.register_hook(lambda grad, scale=scales[name]: grad * scale) for name, p in named.items()]

    @torch.no_grad()
    def restore_outside_mask(_: nn.Module) -> None:
        for name, p in named.items():
            p.copy_(torch.where(masks[name], p, frozen[name]))

    try:
        info = train_on_random_labels(model, task, config, device, "salun", after_step=restore_outside_mask)
    finally:
        for handle in handles:
            handle.remove()
    model.eval()
    salient = int(sum(int(m.sum()) for m in masks.values()))
    total = int(sum(m.numel() for m in masks.values()))
    return model, {**info, "salient_weights": salient, "total_weights": total,
                   "forget_examples": len(task.forget_x)}
