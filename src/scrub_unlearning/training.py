"""The one training / prediction loop: Original, Retrain, shadows and every fine-tuning method use it.

Data stays a uint8 tensor moved to the device once; batches are index slices (docs/design.md §6). On CUDA the forward
pass runs under bf16 autocast with channels_last; the same code runs on CPU in fp32.
"""

from __future__ import annotations

import math
import os
import time
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import replace

import torch
import torch.nn.functional as F
from torch import nn

from .parameters import REQUIRED, Param
from .progress import observe_epoch, report

OPTIMIZERS = ("sgd", "adam")
SCHEDULES = ("constant", "cosine", "step")

RECIPE_PARAMETERS: dict[str, Param] = {
    "optimizer": Param("choice", "sgd", choices=OPTIMIZERS, ignore_case=True,
                       help="sgd (with momentum) or adam (coupled L2 weight_decay, not AdamW)"),
    "lr": Param("float", REQUIRED, low=0.0, low_open=True, help="learning rate (the base rate of the schedule)"),
    "momentum": Param("float", 0.9, low=0.0, high=1.0, help="SGD momentum (unused by adam)"),
    "weight_decay": Param("float", 0.0, low=0.0, help="L2 weight decay"),
    "epochs": Param("int", REQUIRED, low=0, help="passes over the training data"),
    "batch_size": Param("int", REQUIRED, low=1, help="examples per step"),
    "schedule": Param("choice", "constant", choices=SCHEDULES,
                      help="learning-rate schedule: constant, cosine (per step, to 0) or step (x0.1 at "
                           "lr_decay_epochs)"),
    "lr_decay_epochs": Param("int_list", (), low=1,
                             help="epochs (1-based) after which the rate is multiplied by 0.1"),
}
"""The training recipe `train_model` reads (the Original's, Retrain's, the shadows'), declared once."""


def recipe_parameters(**defaults) -> dict[str, Param]:
    """The recipe's declarations of the named parameters, in the given order, with the given defaults
    (`REQUIRED` for none): a method that trains with `train_model`'s knobs declares them through this."""
    unknown = sorted(set(defaults) - set(RECIPE_PARAMETERS))
    if unknown:
        raise ValueError(f"not recipe parameters: {unknown}; the recipe's are {list(RECIPE_PARAMETERS)}")
    return {name: replace(RECIPE_PARAMETERS[name], default=default) for name, default in defaults.items()}


class DivergenceError(RuntimeError):
    """A loss or weight became NaN/inf: the method failed (its row says why, the run goes on)."""


def select_device(name: str | None = "auto") -> torch.device:
    """'auto' -> CUDA when available, else CPU."""
    if name in (None, "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    return torch.device(name)


def set_deterministic(enabled: bool) -> None:
    """Deterministic kernels (docs/design.md §7: the same seed gives the same metrics on CUDA only with this switch; CPU
    runs are deterministic anyway). On CUDA this also needs CUBLAS_WORKSPACE_CONFIG=:4096:8 in the environment."""
    if enabled:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(bool(enabled))
    torch.backends.cudnn.deterministic = bool(enabled)


def configure_runtime(runtime: dict) -> torch.device:
    """The configured device (`runtime.device`), after applying `runtime.num_threads` and `runtime.deterministic`."""
    if runtime.get("num_threads"):
        torch.set_num_threads(int(runtime["num_threads"]))
    set_deterministic(bool(runtime.get("deterministic", False)))
    return select_device(runtime.get("device", "auto"))


def seed_everything(seed: int) -> None:
    """Seed torch's global RNG (model initialisation); batch order uses explicit generators."""
    torch.manual_seed(int(seed))


def autocast(device: torch.device):
    """bf16 autocast on CUDA, nothing on CPU (fp32 there keeps CPU results exact and reproducible)."""
    if device.type == "cuda":
        return torch.autocast("cuda", dtype=torch.bfloat16)
    return nullcontext()


def prepare_model(model: nn.Module, device: torch.device) -> nn.Module:
    """Move to the device; channels_last and cuDNN autotuning on CUDA."""
    model = model.to(device)
    if device.type == "cuda":
        # autotuning picks kernels by timing, which is not reproducible: off under `deterministic`
        torch.backends.cudnn.benchmark = not torch.are_deterministic_algorithms_enabled()
        model = model.to(memory_format=torch.channels_last)
    return model


def batch_indices(n: int, batch_size: int, generator: torch.Generator | None = None, shuffle: bool = True,
                  device: torch.device | str = "cpu") -> list[torch.Tensor]:
    """Index slices of one pass over `n` examples.

    When shuffling (training), a last batch smaller than half a batch joins the one before it: a train-mode
    BatchNorm step on a handful of examples normalises with their own statistics and pushes the running
    statistics towards them (450 = 7·64 + 2 kept RC's Retrain from fitting its training set; docs/design.md §6).
    Every example is still seen once per pass; without shuffling (prediction) the last batch may be smaller."""
    if n == 0:
        return []
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    batches = list(order.to(device).split(int(batch_size)))
    if shuffle and len(batches) > 1 and 2 * len(batches[-1]) < int(batch_size):
        batches[-2:] = [torch.cat(batches[-2:])]
    return batches


def training_batch_count(n: int, batch_size: int) -> int:
    """How many batches `batch_indices` makes of `n` shuffled examples (a small last batch joins the previous)."""
    full, rest = divmod(int(n), int(batch_size))
    if rest == 0 or full == 0:
        return full + (rest > 0)
    return full + (2 * rest >= int(batch_size))


def cycle_batches(n: int, batch_size: int, generator: torch.Generator,
                  device: torch.device | str = "cpu") -> Iterator[torch.Tensor]:
    """Endless shuffled passes over `n` examples (for a loader that must keep pace with another)."""
    while True:
        yield from batch_indices(n, batch_size, generator, True, device)


def make_optimizer(parameters: Iterable[torch.nn.Parameter], config: dict) -> torch.optim.Optimizer:
    """SGD with momentum, or Adam with coupled L2 `weight_decay` (not AdamW), as the SCRUB authors used."""
    name = str(config.get("optimizer", "sgd")).lower()
    lr = float(config["lr"])
    weight_decay = float(config.get("weight_decay", 0.0))
    if name == "sgd":
        return torch.optim.SGD(parameters, lr=lr, momentum=float(config.get("momentum", 0.9)),
                               weight_decay=weight_decay)
    if name == "adam":
        return torch.optim.Adam(parameters, lr=lr, weight_decay=weight_decay)
    raise ValueError(f"unknown optimizer '{name}'; allowed are {list(OPTIMIZERS)}")


def optimizer_step(optimizer: torch.optim.Optimizer, loss: torch.Tensor) -> torch.Tensor:
    """One gradient step on `loss`; returns the detached loss (kept on the device: no host sync)."""
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return loss.detach()


def step_decay_lr(base_lr: float, epoch: int, decay_epochs: Iterable[int]) -> float:
    """lr x 0.1 for every entry of `decay_epochs` that `epoch` (1-based) strictly exceeds."""
    return base_lr * 0.1 ** sum(1 for d in decay_epochs if epoch > d)


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@contextmanager
def train_only(model: nn.Module, modules: list[nn.Module] | None):
    """Train mode and gradients only for `modules` (all when None); the rest stays frozen in eval mode so its
    BatchNorm statistics do not move."""
    if modules is None:
        model.train()
        yield [p for p in model.parameters() if p.requires_grad]
        return
    previous = {p: p.requires_grad for p in model.parameters()}
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    trainable = []
    for module in modules:
        module.train()
        for p in module.parameters():
            p.requires_grad_(True)
            trainable.append(p)
    try:
        yield trainable
    finally:
        for p, flag in previous.items():
            p.requires_grad_(flag)


def check_finite(model: nn.Module, loss: torch.Tensor | None, what: str) -> None:
    """Raise DivergenceError when the loss or any weight is not finite (one host sync; call per epoch)."""
    if loss is not None and not bool(torch.isfinite(loss).all()):
        raise DivergenceError(f"{what}: loss became {float(loss)}")
    for name, tensor in model.state_dict().items():
        if torch.is_floating_point(tensor) and not bool(torch.isfinite(tensor).all()):
            raise DivergenceError(f"{what}: weights '{name}' are not finite")


def train_model(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: dict, device: torch.device,
                seed: int, modules: list[nn.Module] | None = None, what: str = "training",
                extra_loss: Callable[[nn.Module, int], torch.Tensor] | None = None,
                after_step: Callable[[nn.Module], None] | None = None) -> dict:
    """Cross-entropy training of `model` (in place) on (x, y) with `config`:
    optimizer, lr, momentum, weight_decay, epochs, batch_size, schedule (constant | cosine | step) and
    lr_decay_epochs (for step), as `RECIPE_PARAMETERS` declares them. With `modules`, only those train. Returns
    per-epoch mean losses and seconds; each epoch is reported as progress of `what`.

    Two optional hooks, for methods that are plain training plus one twist: `extra_loss(model, epoch)` (epoch
    1-based) returns a term added to every step's loss (ℓ1-sparse's penalty; the reported losses include it), and
    `after_step(model)` runs after every optimizer step (SalUn restores the weights outside its mask)."""
    schedule = config.get("schedule", "constant")
    if schedule not in SCHEDULES:
        raise ValueError(f"unknown schedule '{schedule}'; allowed are {list(SCHEDULES)}")
    epochs, batch_size = int(config["epochs"]), int(config["batch_size"])
    start = time.perf_counter()
    model = prepare_model(model, device)
    x, y = x.to(device), y.to(device)
    generator = torch.Generator().manual_seed(int(seed))
    losses: list[float] = []
    steps_per_epoch = max(1, training_batch_count(len(x), batch_size))
    total_steps, step = epochs * steps_per_epoch, 0
    base_lr = float(config["lr"])
    with train_only(model, modules) as trainable:
        optimizer = make_optimizer(trainable, config)
        for epoch in range(1, epochs + 1):
            if schedule == "step":
                set_lr(optimizer, step_decay_lr(base_lr, epoch, config.get("lr_decay_epochs", [])))
            epoch_loss = torch.zeros((), device=device)
            batches = batch_indices(len(x), batch_size, generator, True, device)
            for index in batches:
                if schedule == "cosine":
                    set_lr(optimizer, 0.5 * base_lr * (1 + math.cos(math.pi * step / total_steps)))
                with autocast(device):
                    loss = F.cross_entropy(model(x[index]), y[index])
                if extra_loss is not None:
                    loss = loss + extra_loss(model, epoch)
                epoch_loss += optimizer_step(optimizer, loss)
                if after_step is not None:
                    after_step(model)
                step += 1
            mean_loss = epoch_loss / max(1, len(batches))
            check_finite(model, mean_loss, what)
            losses.append(float(mean_loss))
            report(what, epoch, epochs)
            observe_epoch(what, epoch, epochs, model)
    model.eval()
    return {"epoch_losses": losses, "seconds": time.perf_counter() - start}


def batch_loss_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor, batch_size: int,
                         device: torch.device) -> Iterator[tuple[dict[str, torch.Tensor], int]]:
    """For each batch of (x, y), in order: name -> gradient of the batch-mean cross-entropy, and the batch's size.
    Eval mode (BatchNorm statistics untouched), fp32, nothing stored in `.grad`; the data moves to the device once.
    SalUn's saliency and SSD's importances are sums over these."""
    model.eval()
    params = dict(model.named_parameters())
    x, y = x.to(device), y.to(device)
    for index in batch_indices(len(x), batch_size, shuffle=False, device=device):
        loss = F.cross_entropy(model(x[index]).float(), y[index])
        grads = torch.autograd.grad(loss, list(params.values()), allow_unused=True)
        yield ({name: torch.zeros_like(p) if g is None else g for (name, p), g in zip(params.items(), grads,
                                                                                     strict=True)}, len(index))


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, device: torch.device | None = None,
                   batch_size: int = 2048) -> torch.Tensor:
    """Eval-mode float32 logits on the CPU for every row of `x`."""
    device = device or next(model.parameters()).device
    was_training = model.training
    model.eval()
    outputs = []
    for start in range(0, len(x), batch_size):
        with autocast(device):
            outputs.append(model(x[start:start + batch_size].to(device)).float())
    model.train(was_training)
    if not outputs:
        return torch.empty(0, model.spec["num_classes"] if hasattr(model, "spec") else 0)
    return torch.cat(outputs).cpu()


def error_percent(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Top-1 error in percent (NaN for an empty set)."""
    if len(labels) == 0:
        return float("nan")
    return 100.0 * float((logits.argmax(dim=1) != labels.to(logits.device)).float().mean())


def model_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device | None = None) -> float:
    """Top-1 error of `model` on (x, y) in percent."""
    return error_percent(predict_logits(model, x, device), y)
