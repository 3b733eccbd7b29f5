"""SCRUB (Kurmanji et al., NeurIPS 2023, Algorithm 1), with a utility guard.

Teacher = frozen copy of the Original (eval mode); student = copy of the Original (train mode). With
`KL_T(s, t) = KL(softmax(t/T) || softmax(s/T)) * T^2` averaged over the batch:

    for epoch = 1..epochs:
        lr = lr0 * 0.1^(number of lr_decay_epochs that epoch strictly exceeds)
        if epoch <= msteps:                      # max step: move away from the teacher on the forget set
            for each forget batch:  minimise  -KL_T(student(x_f), teacher(x_f))
        for each retain batch:                   # min step: stay close to the teacher and the labels on retain
            minimise  gamma * CE(student(x_r), y_r) + alpha * KL_T(student(x_r), teacher(x_r))

One optimizer (SGD with momentum, or Adam with coupled L2 weight decay) serves both steps.

The guard (ours, on by default; `max_utility_drop: null` turns it off and reproduces the authors' behaviour):
after every epoch, the student's predictions on the validation examples of every class the model must keep are
paired with the Original's (the teacher's) on the same examples. An epoch is rejected when the kept-class error rose
by more than `max_utility_drop` points AND an exact one-sided McNemar test on the discordant examples (Original right
and student wrong vs the opposite; `evaluation.statistics.paired_error_rise`) says the rise is not chance,
p < `guard_alpha` (`guard_alpha: null`: the bound alone decides). A rejected epoch restores student and optimizer to
the last accepted epoch; no further max steps run, and the remaining epochs run min steps only. Every epoch's p-value
is in the trajectory (`guard_p_value`). Each accepted epoch's weights are kept, so SCRUB+R can rewind along this
trajectory without running SCRUB again.
"""

from __future__ import annotations

import copy

import torch
import torch.nn.functional as F
from torch import nn

from ..data import UnlearningTask
from ..evaluation.statistics import guard_rejects, paired_error_rise
from ..parameters import REQUIRED, Param, check_parameters
from ..progress import observe_epoch, report
from ..training import (
    autocast,
    batch_indices,
    check_finite,
    error_percent,
    make_optimizer,
    optimizer_step,
    predict_logits,
    prepare_model,
    recipe_parameters,
    set_lr,
    step_decay_lr,
)

PARAMETERS: dict[str, Param] = {
    **recipe_parameters(optimizer=REQUIRED, lr=REQUIRED, weight_decay=REQUIRED, momentum=0.9),
    "gamma": Param("float", REQUIRED, low=0.0, help="weight of the cross-entropy on retain (min step)"),
    "alpha": Param("float", REQUIRED, low=0.0, help="weight of the distillation KL on retain (min step)"),
    "temperature": Param("float", REQUIRED, low=0.0, low_open=True, help="distillation temperature T"),
    "msteps": Param("int", REQUIRED, low=0, help="epochs 1..msteps start with a max step over the forget set"),
    **recipe_parameters(epochs=REQUIRED, lr_decay_epochs=REQUIRED),
    "retain_batch": Param("int", REQUIRED, low=1, help="batch size of the min steps (retain set)"),
    "forget_batch": Param("int", REQUIRED, low=1, help="batch size of the max steps (forget set)"),
    # the guard is on unless `max_utility_drop: null`
    "max_utility_drop": Param("float", 5.0, low=0.0, nullable=True,
                              help="the guard: most validation-error points the kept classes may lose; null = off"),
    "guard_alpha": Param("float", 0.05, low=0.0, high=1.0, low_open=True, nullable=True,
                         help="the guard's significance level: an epoch over the bound is rejected only when the "
                              "paired (McNemar) test on the kept-class validation examples gives p below it; "
                              "null = the bound alone"),
}


def kl_teacher_student(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    """KL_T(teacher || student) with `batchmean` reduction, scaled by T^2 as in distillation."""
    t = float(temperature)
    return F.kl_div(
        F.log_softmax(student_logits / t, dim=1), F.softmax(teacher_logits / t, dim=1), reduction="batchmean"
    ) * t ** 2


def _state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def _guard_view(logits: torch.Tensor, task: UnlearningTask) -> tuple[float, float, torch.Tensor]:
    """(validation error on the kept classes, validation error of the forget classes scored as forget_error, which
    kept-class validation examples are predicted right: the guard's paired test compares these)."""
    kept = torch.isin(task.val_y, torch.tensor(task.kept_classes))
    of_forget_classes = torch.isin(task.val_y, torch.tensor(task.forget_classes))
    kept_error = error_percent(logits[kept], task.val_y[kept])
    forget_view = error_percent(logits[of_forget_classes], task.forget_view_labels(task.val_y[of_forget_classes]))
    kept_correct = (logits[kept].argmax(dim=1).cpu() == task.val_y[kept].cpu())
    return kept_error, forget_view, kept_correct


def unlearn(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device) -> tuple[nn.Module, dict]:
    """Run SCRUB on a copy of `original`; returns the student and an info dict with the per-epoch trajectory."""
    params = check_parameters("scrub", params, PARAMETERS)
    teacher = prepare_model(copy.deepcopy(original), device).eval()
    for p in teacher.parameters():
        p.requires_grad_(False)
    student = prepare_model(copy.deepcopy(original), device)

    temperature, gamma, alpha = float(params["temperature"]), float(params["gamma"]), float(params["alpha"])
    msteps, epochs, base_lr = int(params["msteps"]), int(params["epochs"]), float(params["lr"])
    max_drop, guard_alpha = params.get("max_utility_drop"), params.get("guard_alpha")
    optimizer = make_optimizer(student.parameters(), params)
    generator = torch.Generator().manual_seed(int(task.seed))

    retain_x, retain_y = task.retain_x.to(device), task.retain_y.to(device)
    forget_x = task.forget_x.to(device)

    original_kept, original_forget_view, original_correct = _guard_view(
        predict_logits(teacher, task.val_x, device), task)
    trajectory = [{"epoch": 0, "max_loss": None, "min_loss": None, "val_error_kept": original_kept,
                   "forget_class_val_error": original_forget_view, "guard_p_value": None, "accepted": True}]
    checkpoints = {0: {k: v.to("cpu") for k, v in _state(student).items()}}
    last_good = (_state(student), copy.deepcopy(optimizer.state_dict()))
    max_steps_allowed, guard_epoch = True, None

    for epoch in range(1, epochs + 1):
        set_lr(optimizer, step_decay_lr(base_lr, epoch, params["lr_decay_epochs"]))
        student.train()
        max_loss = None
        if epoch <= msteps and max_steps_allowed:
            total = torch.zeros((), device=device)
            batches = batch_indices(len(forget_x), params["forget_batch"], generator, True, device)
            for index in batches:
                with torch.no_grad(), autocast(device):
                    teacher_logits = teacher(forget_x[index])
                with autocast(device):
                    loss = -kl_teacher_student(student(forget_x[index]).float(), teacher_logits.float(), temperature)
                total += optimizer_step(optimizer, loss)
            max_loss = total / max(1, len(batches))
        total = torch.zeros((), device=device)
        batches = batch_indices(len(retain_x), params["retain_batch"], generator, True, device)
        for index in batches:
            with torch.no_grad(), autocast(device):
                teacher_logits = teacher(retain_x[index])
            with autocast(device):
                logits = student(retain_x[index]).float()
                loss = gamma * F.cross_entropy(logits, retain_y[index]) + alpha * kl_teacher_student(
                    logits, teacher_logits.float(), temperature)
            total += optimizer_step(optimizer, loss)
        min_loss = total / max(1, len(batches))
        check_finite(student, min_loss if max_loss is None else min_loss + max_loss, f"scrub epoch {epoch}")

        kept_error, forget_view, kept_correct = _guard_view(predict_logits(student, task.val_x, device), task)
        paired = paired_error_rise(original_correct.numpy(), kept_correct.numpy())
        accepted = not guard_rejects(kept_error - original_kept, paired.p_value, max_drop, guard_alpha)
        trajectory.append({"epoch": epoch, "max_loss": None if max_loss is None else float(max_loss),
                           "min_loss": float(min_loss), "val_error_kept": kept_error,
                           "forget_class_val_error": forget_view, "guard_p_value": paired.p_value,
                           "accepted": accepted})
        if accepted:
            last_good = (_state(student), copy.deepcopy(optimizer.state_dict()))
            checkpoints[epoch] = {k: v.to("cpu") for k, v in last_good[0].items()}
        else:
            student.load_state_dict(last_good[0])
            optimizer.load_state_dict(last_good[1])
            if guard_epoch is None:
                guard_epoch = epoch
            max_steps_allowed = False
        report("scrub", epoch, epochs)
        observe_epoch("scrub", epoch, epochs, student,
                      [row["val_error_kept"] for row in trajectory if not row["accepted"]])

    student.eval()
    final_kept, final_forget_view, _ = _guard_view(predict_logits(student, task.val_x, device), task)
    info = {
        "trajectory": trajectory,
        "checkpoints": checkpoints,
        "guard_fired": guard_epoch is not None,
        "guard_epoch": guard_epoch,
        "original_val_error_kept": original_kept,
        "final_val_error_kept": final_kept,
        "final_forget_class_val_error": final_forget_view,
    }
    return student, info
