"""Fisher forgetting (Golatkar, Achille and Soatto, *Eternal Sunshine of the Spotless Net: Selective Forgetting in
Deep Networks*, CVPR 2020), as docs/design.md §5 specifies it.

No training: the Original's weights are perturbed with Gaussian noise whose variance is large where the retain set
does not constrain the weights (low Fisher information) and small where it does, so what only the forget set had
put in the weights is drowned while what the retain set needs survives.

1. Diagonal Fisher on the retain set, with labels drawn from the model's own predictive distribution
   (the "true" Fisher, not the empirical one):
       F = E_{x in retain, y ~ p_theta(.|x)} [ (d/dtheta log p_theta(y|x))^2 ]
   estimated with one sampled y per example and per-example gradients (torch.func vmap), model in eval mode (its
   BatchNorm statistics do not move), fp32. `max_retain_examples` caps the examples used (a seeded subsample).
2. Noise variance per parameter entry: `min(1/(F + 1e-8), 1e3)` (the head capped at 1e2), times `alpha`; for weight
   tensors (ndim >= 2) averaged over dim 1 and broadcast back; times 10 for the head and BatchNorm parameters.
3. Class forgetting (`rb_class`): the forgotten classes' head rows (weight row and bias entry) get mean 0 and
   variance 1e-4 (set last: the x10 does not apply to them).
4. theta = mean + sqrt(variance) * eps, eps ~ N(0, I) from a generator seeded by `task.seed`.

The authors' code computed the expectation over y exactly (a sum over classes weighted by p(y|x)); the formula
of docs/design.md §5
samples y, which we follow.

Parameters: `alpha` (digits / small scale 1e-6, large scale 1e-7) and `max_retain_examples` (null = the whole
retain set on digits / small scale; 1000 on the large scale).
"""

from __future__ import annotations

import copy
import time

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call, grad, vmap

from ..data import UnlearningTask
from ..parameters import Param, check_parameters
from ..training import check_finite, prepare_model

PARAMETERS: dict[str, Param] = {
    "alpha": Param("float", 1e-6, low=0.0, help="scale of the noise variance"),
    "max_retain_examples": Param("int", None, low=1, nullable=True,
                                 help="cap on the retain examples the Fisher is estimated on; null = no cap"),
}

FISHER_EPS = 1e-8          # 1 / (F + eps)
VARIANCE_CAP = 1e3         # cap on 1/F for every parameter ...
HEAD_VARIANCE_CAP = 1e2    # ... and for the linear head
HEAD_BN_FACTOR = 10.0      # variance x10 for head and BatchNorm parameters
FORGOTTEN_ROW_VARIANCE = 1e-4
GRADIENT_MEMORY = 2 ** 30  # bytes of per-example gradients held at once (sets the vmap chunk size)


@torch.no_grad()
def sample_labels(model: nn.Module, x: torch.Tensor, device: torch.device, generator: torch.Generator,
                  batch_size: int = 1024) -> torch.Tensor:
    """One label per row of `x` drawn from the model's own predictive distribution p_theta(.|x) (eval mode, fp32;
    one multinomial draw on the CPU from `generator`, so the result does not depend on the device)."""
    model.eval()
    probabilities = [F.softmax(model(x[start:start + batch_size].to(device)).float(), dim=1).cpu()
                     for start in range(0, len(x), batch_size)]
    return torch.multinomial(torch.cat(probabilities), 1, generator=generator).squeeze(1)


def squared_gradient_mean(model: nn.Module, x: torch.Tensor, labels: torch.Tensor,
                          device: torch.device) -> dict[str, torch.Tensor]:
    """mean over examples of (d/dtheta log p_theta(label|x))^2, per parameter (per-example gradients with vmap, eval
    mode, fp32)."""
    model.eval()
    params = {name: p.detach() for name, p in model.named_parameters()}
    buffers = {name: b.detach() for name, b in model.named_buffers()}

    def negative_log_likelihood(weights, example, label):
        logits = functional_call(model, (weights, buffers), (example.unsqueeze(0),))
        return F.cross_entropy(logits.float(), label.unsqueeze(0))

    per_example_grad = vmap(grad(negative_log_likelihood), in_dims=(None, 0, 0))
    total = {name: torch.zeros_like(p) for name, p in params.items()}
    n_params = sum(p.numel() for p in params.values())
    chunk = max(1, min(256, GRADIENT_MEMORY // (4 * max(1, n_params))))
    for start in range(0, len(x), chunk):
        grads = per_example_grad(params, x[start:start + chunk].to(device), labels[start:start + chunk].to(device))
        for name, g in grads.items():
            total[name] += g.pow(2).sum(dim=0)
    return {name: t / max(1, len(x)) for name, t in total.items()}


def fisher_diagonal(model: nn.Module, x: torch.Tensor, device: torch.device,
                    generator: torch.Generator) -> dict[str, torch.Tensor]:
    """Diagonal Fisher information E_{x, y ~ p_theta(.|x)}[(d/dtheta log p_theta(y|x))^2], one sampled y per example
    (`sample_labels` with `generator`), keyed by parameter name."""
    labels = sample_labels(model, x, device, generator)
    return squared_gradient_mean(model, x, labels, device)


def fisher_noise_variance(fisher: torch.Tensor, alpha: float, head: bool = False,
                          batchnorm: bool = False) -> torch.Tensor:
    """Noise variance for one parameter tensor from its diagonal Fisher: alpha * min(1/(F + 1e-8), cap) with cap
    1e3 (1e2 for the head); averaged over dim 1 for tensors with ndim >= 2; x10 for head and BatchNorm tensors."""
    cap = HEAD_VARIANCE_CAP if head else VARIANCE_CAP
    variance = alpha * torch.clamp(1.0 / (fisher + FISHER_EPS), max=cap)
    if variance.ndim >= 2:
        variance = variance.mean(dim=1, keepdim=True).expand_as(fisher).clone()
    if head or batchnorm:
        variance = variance * HEAD_BN_FACTOR
    return variance


def parameter_roles(model: nn.Module) -> dict[str, tuple[bool, bool]]:
    """name -> (belongs to the linear head `model.head`, belongs to a BatchNorm layer)."""
    head = getattr(model, "head", None)
    head_ids = {id(p) for p in head.parameters()} if isinstance(head, nn.Module) else set()
    bn_ids = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
              for p in m.parameters(recurse=False)}
    return {name: (id(p) in head_ids, id(p) in bn_ids) for name, p in model.named_parameters()}


def noise_distribution(model: nn.Module, fisher: dict[str, torch.Tensor], alpha: float,
                       forget_classes: tuple[int, ...] = ()) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """name -> (mean, variance) of the Gaussian the new weights are drawn from: mean = the current weights, variance
    from `fisher_noise_variance`; the head rows of `forget_classes` get mean 0 and variance 1e-4."""
    roles = parameter_roles(model)
    if forget_classes and not any(is_head for is_head, _ in roles.values()):
        raise ValueError("fisher: class forgetting needs a model with a linear `head` to zero the class rows")
    rows = torch.as_tensor(list(forget_classes), dtype=torch.int64)
    out = {}
    for name, p in model.named_parameters():
        is_head, is_bn = roles[name]
        mean = p.detach().clone()
        variance = fisher_noise_variance(fisher[name].to(mean.device), alpha, is_head, is_bn)
        if is_head and len(rows):
            mean[rows.to(mean.device)] = 0.0
            variance[rows.to(mean.device)] = FORGOTTEN_ROW_VARIANCE
        out[name] = (mean, variance)
    return out


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """Fisher forgetting of a copy of `original`; returns it in eval mode and an info dict with timings."""
    params = check_parameters("fisher", params, PARAMETERS)
    start = time.perf_counter()
    model = prepare_model(copy.deepcopy(original), device).eval()
    generator = torch.Generator().manual_seed(int(task.seed))

    retain_x = task.retain_x
    cap = params["max_retain_examples"]
    if cap is not None and len(retain_x) > cap:
        retain_x = retain_x[torch.randperm(len(retain_x), generator=generator)[:cap]]
    fisher = fisher_diagonal(model, retain_x, device, generator)
    fisher_seconds = time.perf_counter() - start

    forget_classes = tuple(task.forget_classes) if task.application == "rb_class" else ()
    distribution = noise_distribution(model, fisher, float(params["alpha"]), forget_classes)
    with torch.no_grad():
        for name, p in model.named_parameters():
            mean, variance = distribution[name]
            eps = torch.randn(p.shape, generator=generator).to(device=p.device, dtype=p.dtype)
            p.copy_(mean + variance.sqrt() * eps)
    check_finite(model, None, "fisher")
    model.eval()
    info = {
        "fisher_seconds": fisher_seconds,
        "fisher_examples": len(retain_x),
        "zeroed_head_rows": list(forget_classes),
    }
    return model, info
