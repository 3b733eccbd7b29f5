"""Every model is scored by one function, `evaluate_model`, with the application's columns (docs/design.md §5)."""

from __future__ import annotations

import torch
from torch import nn

from ..data import UnlearningTask
from ..training import error_percent, predict_logits
from .mia import basic_mia, per_example_loss

BASE_METRICS = ("forget_error", "retain_error", "test_error", "val_error")
APPLICATION_METRICS = {
    "rb_class": ("forgotten_class_test_error",),
    "rb_selective": (),
    "up": ("mia_basic", "mia_basic_split_std"),
    "rc": ("ic_error_test", "ic_count_test", "ic_error_retain", "ic_count_retain",
           "ic_all_error_test", "ic_all_count_test", "ic_all_error_retain", "ic_all_count_retain"),
}


def interclass_confusion(logits: torch.Tensor, labels: torch.Tensor, a: int, b: int) -> tuple[float, int]:
    """(#true-A predicted B + #true-B predicted A) / (#true A + #true B) in %, and that numerator."""
    predicted = logits.argmax(dim=1)
    count = int(((labels == a) & (predicted == b)).sum() + ((labels == b) & (predicted == a)).sum())
    total = int(((labels == a) | (labels == b)).sum())
    return (100.0 * count / total if total else float("nan")), count


def interclass_error(logits: torch.Tensor, labels: torch.Tensor, a: int, b: int) -> tuple[float, int]:
    """The SCRUB authors' interclass-confusion error: every error on examples whose true label is A or B (predicted
    as any wrong class, not only the other of the two) / (#true A + #true B), in %, and that numerator."""
    predicted = logits.argmax(dim=1)
    of_pair = (labels == a) | (labels == b)
    count = int((of_pair & (predicted != labels)).sum())
    total = int(of_pair.sum())
    return (100.0 * count / total if total else float("nan")), count


def of_classes(labels: torch.Tensor, classes: tuple[int, ...]) -> torch.Tensor:
    """Which examples have a label among `classes` (a boolean mask)."""
    return torch.isin(labels, torch.tensor(classes, dtype=labels.dtype))


def evaluate_model(model: nn.Module, task: UnlearningTask, test_x: torch.Tensor, test_y: torch.Tensor,
                   device: torch.device, seed: int) -> dict[str, float]:
    """forget/retain/test/validation error (%) plus the application's metrics.

    RB class: test and validation errors on the kept classes, `forgotten_class_test_error` separately.
    RC: `forget_error` against the stored wrong labels; on true labels, the A<->B confusions only (`ic_error_*`,
    `interclass_confusion`) and the authors' every-error-on-A-or-B (`ic_all_error_*`, `interclass_error`).
    UP: the basic MIA, members = forget set, non-members = test examples of the forget set's classes.
    """
    model = model.to(device).eval()
    forget_logits = predict_logits(model, task.forget_x, device)
    retain_logits = predict_logits(model, task.retain_x, device)
    test_logits = predict_logits(model, test_x, device)
    val_logits = predict_logits(model, task.val_x, device)
    kept_test, kept_val = of_classes(test_y, task.kept_classes), of_classes(task.val_y, task.kept_classes)
    row = {
        "forget_error": error_percent(forget_logits, task.forget_y),
        "retain_error": error_percent(retain_logits, task.retain_y),
        "test_error": error_percent(test_logits[kept_test], test_y[kept_test]),
        "val_error": error_percent(val_logits[kept_val], task.val_y[kept_val]),
    }
    if task.application == "rb_class":
        forgotten = of_classes(test_y, task.forget_classes)
        row["forgotten_class_test_error"] = error_percent(test_logits[forgotten], test_y[forgotten])
    elif task.application == "rc":
        a, b = sorted(task.swap)[:2]
        row["ic_error_test"], row["ic_count_test"] = interclass_confusion(test_logits, test_y, a, b)
        row["ic_error_retain"], row["ic_count_retain"] = interclass_confusion(retain_logits, task.retain_y, a, b)
        row["ic_all_error_test"], row["ic_all_count_test"] = interclass_error(test_logits, test_y, a, b)
        row["ic_all_error_retain"], row["ic_all_count_retain"] = interclass_error(retain_logits, task.retain_y, a, b)
    elif task.application == "up":
        nonmembers = of_classes(test_y, task.forget_classes)
        row["mia_basic"], row["mia_basic_split_std"] = basic_mia(
            per_example_loss(forget_logits, task.forget_y),
            per_example_loss(test_logits[nonmembers], test_y[nonmembers]),
            seed,
        )
    return row
