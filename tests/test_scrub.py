"""SCRUB against a step-by-step reference written from docs/design.md §5's formula, its schedule, and its guard."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from scrub_unlearning.data import UnlearningTask
from scrub_unlearning.methods import scrub
from scrub_unlearning.training import step_decay_lr

PARAMS = dict(optimizer="sgd", lr=0.05, weight_decay=0.01, momentum=0.9, gamma=0.7, alpha=0.3, temperature=3.0,
              msteps=1, epochs=1, lr_decay_epochs=[], retain_batch=8, forget_batch=4, max_utility_drop=None)


def two_layer_network(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(4, 8), nn.Tanh(), nn.Linear(8, 3))


def toy_task(seed: int = 3) -> UnlearningTask:
    generator = torch.Generator().manual_seed(0)
    x = torch.randn(36, 4, generator=generator)
    y = torch.randint(0, 3, (36,), generator=generator)
    return UnlearningTask(
        application="rb_selective", retain_x=x[:20], retain_y=y[:20], forget_x=x[20:30], forget_y=y[20:30],
        val_x=x[30:], val_y=y[30:], num_classes=3, kept_classes=(0, 1, 2), forget_classes=(0, 1, 2), seed=seed,
    )


def kl_by_hand(student_logits, teacher_logits, temperature):
    """sum_c p_t (log p_t - log p_s), averaged over the batch, times T^2 (teacher || student)."""
    log_p_student = student_logits / temperature - torch.logsumexp(student_logits / temperature, 1, keepdim=True)
    log_p_teacher = teacher_logits / temperature - torch.logsumexp(teacher_logits / temperature, 1, keepdim=True)
    per_example = (log_p_teacher.exp() * (log_p_teacher - log_p_student)).sum(dim=1)
    return per_example.sum() / len(per_example) * temperature ** 2


def cross_entropy_by_hand(logits, labels):
    log_p = logits - torch.logsumexp(logits, 1, keepdim=True)
    return -log_p[torch.arange(len(labels)), labels].mean()


def reference_scrub(original: nn.Module, task: UnlearningTask, p: dict) -> list[torch.Tensor]:
    """Plain autograd and a hand-written SGD-with-momentum (one momentum buffer shared by both steps)."""
    teacher = copy.deepcopy(original)
    weights = [w.detach().clone().requires_grad_(True) for w in original.parameters()]
    momentum = [None] * len(weights)

    def forward(ws, x):
        return torch.tanh(x @ ws[0].T + ws[1]) @ ws[2].T + ws[3]

    def sgd_step(loss, lr):
        grads = torch.autograd.grad(loss, weights)
        with torch.no_grad():
            for i, (w, g) in enumerate(zip(weights, grads, strict=True)):
                g = g + p["weight_decay"] * w
                momentum[i] = g.clone() if momentum[i] is None else p["momentum"] * momentum[i] + g
                w -= lr * momentum[i]

    generator = torch.Generator().manual_seed(task.seed)
    for epoch in range(1, p["epochs"] + 1):
        lr = p["lr"] * 0.1 ** sum(epoch > d for d in p["lr_decay_epochs"])
        if epoch <= p["msteps"]:
            for index in torch.randperm(len(task.forget_x), generator=generator).split(p["forget_batch"]):
                x = task.forget_x[index]
                with torch.no_grad():
                    t = teacher(x)
                sgd_step(-kl_by_hand(forward(weights, x), t, p["temperature"]), lr)
        for index in torch.randperm(len(task.retain_x), generator=generator).split(p["retain_batch"]):
            x, y = task.retain_x[index], task.retain_y[index]
            with torch.no_grad():
                t = teacher(x)
            s = forward(weights, x)
            sgd_step(p["gamma"] * cross_entropy_by_hand(s, y) + p["alpha"] * kl_by_hand(s, t, p["temperature"]), lr)
    return [w.detach() for w in weights]


@pytest.mark.parametrize("overrides", [
    {},                                                          # one epoch: a max pass then a min pass
    {"epochs": 3, "msteps": 2, "lr_decay_epochs": [1, 2]},       # max passes only while epoch <= msteps; decay
])
def test_scrub_matches_step_by_step_reference(overrides):
    params = {**PARAMS, **overrides}
    original, task = two_layer_network(), toy_task()
    before = [w.detach().clone() for w in original.parameters()]
    student, info = scrub.unlearn(original, task, params, torch.device("cpu"))
    expected = reference_scrub(original, task, params)
    for got, want, start in zip(student.parameters(), expected, before, strict=True):
        assert not torch.allclose(want, start), "the reference did not move: the test would prove nothing"
        torch.testing.assert_close(got.detach(), want, atol=1e-6, rtol=0)
    for w, start in zip(original.parameters(), before, strict=True):  # the Original is never modified
        assert torch.equal(w.detach(), start)
    epochs_with_max = [row["epoch"] for row in info["trajectory"] if row["max_loss"] is not None]
    assert epochs_with_max == list(range(1, min(params["msteps"], params["epochs"]) + 1))


def test_max_step_ascends_the_kl():
    """The sign of the max step: with max steps only (gamma = alpha = 0) the student moves ever further from the
    teacher on forget data (the KL is 0 with a zero gradient at the start; weight decay breaks the tie)."""
    params = {**PARAMS, "gamma": 0.0, "alpha": 0.0, "epochs": 30, "msteps": 30, "lr": 0.5}
    original, task = two_layer_network(), toy_task()
    student, info = scrub.unlearn(original, task, params, torch.device("cpu"))
    with torch.no_grad():
        assert scrub.kl_teacher_student(student(task.forget_x), original(task.forget_x), 3.0) > 0.05
    max_losses = [row["max_loss"] for row in info["trajectory"][1:]]
    assert max_losses[-1] < max_losses[0] - 0.05


def test_kl_direction_temperature_and_batchmean():
    student = torch.tensor([[2.0, 0.0, -1.0], [0.5, 0.5, 0.0]])
    teacher = torch.tensor([[0.0, 1.0, 0.0], [1.0, -1.0, 2.0]])
    torch.testing.assert_close(scrub.kl_teacher_student(student, teacher, 2.0), kl_by_hand(student, teacher, 2.0))
    assert not torch.allclose(scrub.kl_teacher_student(student, teacher, 2.0),
                              scrub.kl_teacher_student(teacher, student, 2.0))


def test_decay_rule():
    assert step_decay_lr(1.0, 3, [3, 5, 9]) == 1.0          # strictly exceeds: not yet at epoch 3
    assert step_decay_lr(1.0, 4, [3, 5, 9]) == pytest.approx(0.1)
    assert step_decay_lr(1.0, 6, [3, 5, 9]) == pytest.approx(0.01)
    assert step_decay_lr(1.0, 10, [3, 5, 9]) == pytest.approx(0.001)


def test_unknown_parameter_is_rejected():
    with pytest.raises(ValueError, match="lerning_rate"):
        scrub.unlearn(two_layer_network(), toy_task(), {**PARAMS, "lerning_rate": 1}, torch.device("cpu"))


AGGRESSIVE = dict(optimizer="sgd", lr=0.05, weight_decay=0.0, momentum=0.9, gamma=1.0, alpha=0.5, temperature=4.0,
                  msteps=4, epochs=4, lr_decay_epochs=[], retain_batch=256, forget_batch=8)


def test_guard_prevents_collapse(digits_original, digits_task):
    """An Original that fits its training set perfectly, and aggressive max steps: the KL ascent diverges and
    utility collapses without the guard; with it, the student stays within the bound and the run says so."""
    original, task = digits_original, digits_task("rb_selective")
    device = torch.device("cpu")
    unguarded, info_off = scrub.unlearn(original, task, {**AGGRESSIVE, "max_utility_drop": None}, device)
    guarded, info_on = scrub.unlearn(original, task, {**AGGRESSIVE, "max_utility_drop": 5.0}, device)
    base = info_off["original_val_error_kept"]
    assert info_off["final_val_error_kept"] > base + 40, "aggressive settings should collapse the unguarded model"
    assert not info_off["guard_fired"]
    assert info_on["guard_fired"] and info_on["guard_epoch"] >= 1
    assert info_on["final_val_error_kept"] <= base + 5.0
    rejected = [row["epoch"] for row in info_on["trajectory"] if not row["accepted"]]
    assert rejected and rejected[0] == info_on["guard_epoch"]
    # after the guard fired no max step ran, and rejected epochs left no checkpoint for SCRUB+R
    assert all(row["max_loss"] is None for row in info_on["trajectory"] if row["epoch"] > info_on["guard_epoch"])
    assert info_on["guard_epoch"] not in info_on["checkpoints"]
    # the paired test on ~360 kept-class validation examples: a collapse is no chance rise; every epoch has its p
    assert all(row["guard_p_value"] < 0.05 for row in info_on["trajectory"] if not row["accepted"])
    assert all(0.0 <= row["guard_p_value"] <= 1.0 for row in info_on["trajectory"][1:])


def test_guard_on_a_tiny_validation_set_cannot_reject_by_chance():
    """6 validation examples: the smallest possible one-sided McNemar p-value is 1/2^6, so at guard_alpha 1e-3 no
    rise is ever significant and the guard (even with a 0-point bound) leaves SCRUB exactly as without it."""
    params = {**PARAMS, "lr": 0.5, "msteps": 2, "epochs": 2, "max_utility_drop": 0.0, "guard_alpha": 1e-3}
    guarded, info = scrub.unlearn(two_layer_network(), toy_task(), params, torch.device("cpu"))
    unguarded, _ = scrub.unlearn(two_layer_network(), toy_task(), {**params, "max_utility_drop": None},
                                 torch.device("cpu"))
    assert not info["guard_fired"]
    assert all(row["guard_p_value"] >= 1 / 64 for row in info["trajectory"][1:])
    for a, b in zip(guarded.parameters(), unguarded.parameters(), strict=True):
        assert torch.equal(a, b)


def test_scrub_forgets_a_class_on_real_digits(digits_original, digits_task):
    """A real forgetting effect on a small real dataset: class-5 forget error from ~0% to at least 80%."""
    task = digits_task("rb_class")
    params = dict(optimizer="sgd", lr=0.01, weight_decay=5e-4, momentum=0.9, gamma=1.0, alpha=0.5,
                  temperature=2.0, msteps=3, epochs=10, lr_decay_epochs=[5, 8, 9], retain_batch=32,
                  forget_batch=32, max_utility_drop=5.0)
    from scrub_unlearning.training import model_error

    before = model_error(digits_original, task.forget_x, task.forget_y)
    student, info = scrub.unlearn(digits_original, task, params, torch.device("cpu"))
    assert before < 5
    assert model_error(student, task.forget_x, task.forget_y) >= 80
    assert not info["guard_fired"]
