"""Bad-Teacher (Chundawat, Tarun, Mandal and Kankanhalli, *Can Bad Teaching Induce Forgetting? Unlearning in Deep
Networks Using an Incompetent Teacher*, AAAI 2023), as docs/design.md §5 specifies it.

A student (a copy of the Original) is distilled from two frozen teachers at once: the competent teacher (the
Original) on retain examples, so what should be kept stays, and an incompetent teacher (a randomly initialised
network of the same architecture) on forget examples, so the student's outputs there become as uninformative as an
untrained network's. The data is the forget set together with a seeded random `retain_fraction` (30%) of the retain
set, shuffled together; each example carries a forget/retain flag that picks its teacher. The loss is
`KL_T(T_mix || S)` at temperature T with `T_mix` = the incompetent teacher's logits on forget examples and the
Original's on retain examples (`scrub.kl_teacher_student`: batch-mean KL times T^2).

Parameters (the same on every preset, digits / small scale and large scale): optimizer adam (coupled L2
weight_decay 0; sgd with `momentum` also accepted), lr 1e-3, epochs 1, batch_size 64, temperature 4,
retain_fraction 0.3. The student trains in train mode (as in the authors' code); both teachers are in eval mode.
The incompetent teacher is a fresh `build_model(original.spec)` after `seed_everything(incompetent_teacher_seed(
task.seed))`: its own seed, derived from the task's by a hash, so it is never the Original's starting point (the
Original and Retrain are built after `seed_everything(seed)` with the task's seed itself). The retain subsample and
the batch order come from a generator seeded by `task.seed`.
"""

from __future__ import annotations

import copy
import hashlib

import torch
from torch import nn

from ..data import UnlearningTask
from ..models import build_model
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
    seed_everything,
)
from .scrub import kl_teacher_student

PARAMETERS: dict[str, Param] = {
    **recipe_parameters(optimizer="adam", lr=1e-3, weight_decay=0.0, momentum=0.9, epochs=1, batch_size=64),
    "temperature": Param("float", 4.0, low=0.0, low_open=True, help="distillation temperature T"),
    "retain_fraction": Param("float", 0.3, low=0.0, high=1.0,
                             help="share of the retain set distilled along with the forget set"),
}


def incompetent_teacher_seed(seed: int) -> int:
    """The incompetent teacher's own seed: the first 4 bytes of SHA-256("bad_teacher/incompetent_teacher/<seed>") as
    an integer below 2**31. Deterministic per task seed, and (unlike a small offset) it cannot coincide with another
    seed the run uses (the Original's and Retrain's are the task seed, the shadows' seed·1000 + k)."""
    digest = hashlib.sha256(f"bad_teacher/incompetent_teacher/{int(seed)}".encode()).digest()
    return int.from_bytes(digest[:4], "big") % 2**31


def _frozen(model: nn.Module, device: torch.device) -> nn.Module:
    model = prepare_model(model, device).eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """Bad-Teacher distillation of a copy of `original`; returns the student in eval mode and an info dict."""
    params = check_parameters("bad_teacher", params, PARAMETERS)
    competent = _frozen(copy.deepcopy(original), device)
    teacher_seed = incompetent_teacher_seed(task.seed)
    seed_everything(teacher_seed)
    incompetent = _frozen(build_model(original.spec), device)
    student = prepare_model(copy.deepcopy(original), device)
    for p in student.parameters():
        p.requires_grad_(True)

    generator = torch.Generator().manual_seed(int(task.seed))
    n_retain = int(round(float(params["retain_fraction"]) * len(task.retain_x)))
    retain_index = torch.randperm(len(task.retain_x), generator=generator)[:n_retain]
    x = torch.cat([task.forget_x, task.retain_x[retain_index]]).to(device)
    is_forget = torch.cat([torch.ones(len(task.forget_x), dtype=torch.bool),
                           torch.zeros(n_retain, dtype=torch.bool)]).to(device)

    temperature = float(params["temperature"])
    optimizer = make_optimizer(student.parameters(), params)
    losses = []
    for epoch in range(1, int(params["epochs"]) + 1):
        student.train()
        total = torch.zeros((), device=device)
        batches = batch_indices(len(x), int(params["batch_size"]), generator, True, device)
        for index in batches:
            batch = x[index]
            with torch.no_grad(), autocast(device):
                teacher_logits = torch.where(
                    is_forget[index].unsqueeze(1), incompetent(batch).float(), competent(batch).float())
            with autocast(device):
                loss = kl_teacher_student(student(batch).float(), teacher_logits, temperature)
            total += optimizer_step(optimizer, loss)
        mean_loss = total / max(1, len(batches))
        check_finite(student, mean_loss, f"bad_teacher epoch {epoch}")
        losses.append(float(mean_loss))
        report("bad_teacher", epoch, int(params["epochs"]))
        observe_epoch("bad_teacher", epoch, int(params["epochs"]), student)
    student.eval()
    info = {
        "epoch_losses": losses,
        "forget_examples": len(task.forget_x),
        "retain_examples_used": n_retain,
        "incompetent_teacher_seed": teacher_seed,
    }
    return student, info
