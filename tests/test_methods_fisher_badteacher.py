"""Fisher forgetting and Bad-Teacher (docs/design.md §5 baselines): the Fisher noise formula piece by piece, the Fisher
estimate against a hand computation, and each method's effect on a real digits Original."""

from __future__ import annotations

import copy

import pytest
import torch
from torch import nn

from scrub_unlearning.methods import bad_teacher, fisher
from scrub_unlearning.methods.scrub import kl_teacher_student
from scrub_unlearning.models import build_model
from scrub_unlearning.training import model_error, predict_logits, seed_everything

CPU = torch.device("cpu")


def state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def same_state(a: dict[str, torch.Tensor], b: dict[str, torch.Tensor]) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


class TinyLinear(nn.Module):
    """2 inputs -> 3 classes, a linear head only: d/dW log p(y|x) = (e_y - p) x^T, d/db = e_y - p."""

    def __init__(self) -> None:
        super().__init__()
        self.head = nn.Linear(2, 3)
        with torch.no_grad():
            self.head.weight.copy_(torch.tensor([[1.0, -0.5], [0.2, 0.8], [-0.7, 0.1]]))
            self.head.bias.copy_(torch.tensor([0.1, -0.2, 0.3]))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(x)


def hand_fisher(model: TinyLinear, x: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """mean over examples of the squared closed-form gradients of log p(label|x) for a linear softmax."""
    with torch.no_grad():
        p = torch.softmax(x @ model.head.weight.T + model.head.bias, dim=1)
    residual = torch.eye(3)[labels] - p                                   # (n, classes)
    weight = (residual[:, :, None] * x[:, None, :]).pow(2).mean(dim=0)    # (classes, inputs)
    return weight, residual.pow(2).mean(dim=0)


# ---------------------------------------------------------------- Fisher: the estimate

def test_fisher_diagonal_matches_hand_computation_for_the_sampled_labels():
    """Exact: the same seeded generator gives the same sampled labels, so per-example squared gradients must match
    the closed form to float precision (a squared *batch* gradient or the true labels would not)."""
    model = TinyLinear().eval()
    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    estimate = fisher.fisher_diagonal(model, x, CPU, torch.Generator().manual_seed(7))
    labels = fisher.sample_labels(model, x, CPU, torch.Generator().manual_seed(7))
    weight, bias = hand_fisher(model, x, labels)
    torch.testing.assert_close(estimate["head.weight"], weight, rtol=1e-5, atol=1e-7)
    torch.testing.assert_close(estimate["head.bias"], bias, rtol=1e-5, atol=1e-7)


def test_fisher_diagonal_samples_labels_from_the_model_and_approaches_the_exact_expectation():
    """Statistical but deterministic (fixed seed): each of 2 inputs repeated 4000 times; the sampled estimate is
    within 5% of the exact E_y[(e_y - p)^2] = p (1 - p) per class (argmax or fixed labels would be far off)."""
    model = TinyLinear().eval()
    points = torch.tensor([[0.5, -1.0], [1.5, 0.7]])
    x = points.repeat_interleave(4000, dim=0)
    estimate = fisher.fisher_diagonal(model, x, CPU, torch.Generator().manual_seed(3))
    with torch.no_grad():
        p = torch.softmax(model(points), dim=1)
    exact_bias = (p * (1 - p)).mean(dim=0)
    exact_weight = ((p * (1 - p))[:, :, None] * points[:, None, :].pow(2)).mean(dim=0)
    torch.testing.assert_close(estimate["head.bias"], exact_bias, rtol=0.05, atol=0)
    torch.testing.assert_close(estimate["head.weight"], exact_weight, rtol=0.05, atol=0)
    argmax_labels = model(x).argmax(dim=1)
    _, argmax_bias = hand_fisher(model, x, argmax_labels)
    assert not torch.allclose(argmax_bias, exact_bias, rtol=0.05)


# ---------------------------------------------------------------- Fisher: the noise variance

def test_noise_is_smaller_where_fisher_information_is_larger():
    variance = fisher.fisher_noise_variance(torch.tensor([0.1, 100.0]), alpha=1.0)
    assert variance[1] < variance[0]
    torch.testing.assert_close(variance, torch.tensor([1 / (0.1 + 1e-8), 1 / (100.0 + 1e-8)]))


def test_noise_variance_caps_and_factor_ten():
    alpha = 1e-6
    no_information = torch.tensor([0.0, 1e-6])
    torch.testing.assert_close(fisher.fisher_noise_variance(no_information, alpha),
                               torch.full((2,), alpha * 1e3))                        # cap 1e3
    torch.testing.assert_close(fisher.fisher_noise_variance(no_information, alpha, head=True),
                               torch.full((2,), alpha * 1e2 * 10))                   # head: cap 1e2, then x10
    torch.testing.assert_close(fisher.fisher_noise_variance(no_information, alpha, batchnorm=True),
                               torch.full((2,), alpha * 1e3 * 10))                   # BatchNorm: x10
    one = torch.tensor([1.0])
    assert fisher.fisher_noise_variance(one, alpha).item() == pytest.approx(alpha)
    assert fisher.fisher_noise_variance(one, alpha, head=True).item() == pytest.approx(10 * alpha)
    assert fisher.fisher_noise_variance(one, alpha, batchnorm=True).item() == pytest.approx(10 * alpha)


def test_noise_variance_of_weight_tensors_is_averaged_over_dim_one():
    matrix = torch.tensor([[1.0, 0.5, 0.25], [1e-9, 1.0, 1.0]])
    variance = fisher.fisher_noise_variance(matrix, alpha=1.0)
    assert variance.shape == matrix.shape
    torch.testing.assert_close(variance[0], torch.full((3,), 7 / 3))            # mean(1, 2, 4)
    torch.testing.assert_close(variance[1], torch.full((3,), (1e3 + 1 + 1) / 3))  # the cap applies before the mean
    conv = torch.rand(4, 3, 2, 2, generator=torch.Generator().manual_seed(0)) + 0.01
    expected = torch.clamp(1 / (conv + 1e-8), max=1e3).mean(dim=1, keepdim=True).expand_as(conv)
    torch.testing.assert_close(fisher.fisher_noise_variance(conv, alpha=1.0), expected)
    vector = torch.tensor([1.0, 0.5])                                           # 1-D tensors are not averaged
    torch.testing.assert_close(fisher.fisher_noise_variance(vector, alpha=1.0), torch.tensor([1.0, 2.0]))


# ---------------------------------------------------------------- Fisher: the method on digits

def test_fisher_applies_the_noise_formula_and_keeps_the_original(digits_original, digits_task):
    task = digits_task("rb_selective")
    before = state(digits_original)
    params = {"alpha": 1e-6, "max_retain_examples": None}
    model, info = fisher.unlearn(digits_original, task, params, CPU)
    again, _ = fisher.unlearn(digits_original, task, params, CPU)

    assert same_state(state(digits_original), before)                     # the Original is untouched
    assert same_state(state(model), state(again))                         # same seed -> identical result
    assert not model.training and info["fisher_seconds"] > 0 and info["fisher_examples"] == len(task.retain_x)
    for name, tensor in model.named_buffers():                            # BatchNorm statistics did not move
        torch.testing.assert_close(tensor, dict(digits_original.named_buffers())[name], rtol=0, atol=0)
    reseeded = copy.copy(task)
    reseeded.seed = task.seed + 1
    other, _ = fisher.unlearn(digits_original, reseeded, params, CPU)
    assert not same_state(state(model), state(other))

    # Standardised perturbations (theta - theta_orig) / sqrt(variance) must look like N(0, 1) draws, for the
    # head + BatchNorm parameters (x10) and the rest separately. The Fisher is recomputed with the method's seed.
    fisher_info = fisher.fisher_diagonal(copy.deepcopy(digits_original).eval(), task.retain_x, CPU,
                                         torch.Generator().manual_seed(task.seed))
    distribution = fisher.noise_distribution(digits_original, fisher_info, params["alpha"])
    roles = fisher.parameter_roles(digits_original)
    groups: dict[bool, list[torch.Tensor]] = {True: [], False: []}
    for name, p in model.named_parameters():
        mean, variance = distribution[name]
        groups[any(roles[name])].append(((p.detach() - mean) / variance.sqrt()).flatten())
    for special, parts in groups.items():
        z = torch.cat(parts)
        assert len(z) > 500
        assert abs(float(z.mean())) < 0.1, special
        assert abs(float(z.std()) - 1.0) < 0.1, special


def test_fisher_class_forgetting_zeroes_the_forgotten_head_row(digits_original, digits_task):
    task = digits_task("rb_class")
    (forgotten,) = task.forget_classes
    assert float(digits_original.head.weight[forgotten].detach().abs().max()) > 0.1   # the row was not ~0 before
    model, info = fisher.unlearn(digits_original, task, {"alpha": 1e-6}, CPU)
    assert info["zeroed_head_rows"] == [forgotten]
    row = torch.cat([model.head.weight[forgotten], model.head.bias[forgotten:forgotten + 1]]).detach()
    assert float(row.abs().max()) < 5 * 1e-4 ** 0.5                           # std 0.01: ~0 up to the noise
    kept = [c for c in range(10) if c != forgotten]
    assert float(model.head.weight[kept].detach().abs().max()) > 0.1                    # the other rows stay
    assert model_error(model, task.forget_x, task.forget_y) > 50.0             # the class is forgotten


def test_fisher_caps_the_retain_examples(digits_original, digits_task):
    model, info = fisher.unlearn(digits_original, digits_task("up"), {"alpha": 1e-7, "max_retain_examples": 100},
                                 CPU)
    assert info["fisher_examples"] == 100


# ---------------------------------------------------------------- Bad-Teacher

def test_bad_teacher_follows_the_random_teacher_on_forget_and_the_original_on_retain(digits_original, digits_task):
    task = digits_task("rb_class")
    before = state(digits_original)
    student, info = bad_teacher.unlearn(digits_original, task, {}, CPU)
    assert same_state(state(digits_original), before)
    assert not student.training
    assert info["retain_examples_used"] == round(0.3 * len(task.retain_x))

    seed_everything(bad_teacher.incompetent_teacher_seed(task.seed))
    incompetent = build_model(digits_original.spec).eval()
    assert info["incompetent_teacher_seed"] == bad_teacher.incompetent_teacher_seed(task.seed)

    def kl(student_model, teacher_model, x):
        return float(kl_teacher_student(predict_logits(student_model, x), predict_logits(teacher_model, x), 1.0))

    forget_before = kl(digits_original, incompetent, task.forget_x)
    forget_after = kl(student, incompetent, task.forget_x)
    assert forget_after < 0.5 * forget_before                   # moved toward the incompetent teacher on forget
    drift_forget = kl(student, digits_original, task.forget_x)
    drift_retain = kl(student, digits_original, task.retain_x)
    assert drift_retain < 0.2 * drift_forget                    # and stayed with the Original on retain
    assert model_error(student, task.retain_x, task.retain_y) < model_error(digits_original, task.retain_x,
                                                                            task.retain_y) + 5.0

    again, _ = bad_teacher.unlearn(digits_original, task, {}, CPU)
    assert same_state(state(student), state(again))             # same seed -> identical result


def test_the_incompetent_teacher_is_not_the_originals_starting_point(digits_original):
    """Its own seed (a hash of the task's): never the weights the Original (or Retrain) started from, which are
    `build_model` after `seed_everything(seed)` with the task's seed itself."""
    seeds = [bad_teacher.incompetent_teacher_seed(s) for s in (1, 2, 3)]
    assert seeds == [bad_teacher.incompetent_teacher_seed(s) for s in (1, 2, 3)]   # deterministic
    assert len(set(seeds)) == 3 and not set(seeds) & {1, 2, 3} and all(0 <= s < 2**31 for s in seeds)
    seed_everything(1)
    original_start = state(build_model(digits_original.spec))
    seed_everything(seeds[0])
    teacher = state(build_model(digits_original.spec))
    assert not same_state(original_start, teacher)


# ---------------------------------------------------------------- parameters

@pytest.mark.parametrize("method", [fisher, bad_teacher])
def test_unknown_parameter_names_are_rejected(method, digits_original, digits_task):
    with pytest.raises(ValueError, match=r"bogus_rate.*allowed are"):
        method.unlearn(digits_original, digits_task("up"), {"bogus_rate": 1.0}, CPU)


def test_bad_parameter_values_are_rejected():
    with pytest.raises(ValueError, match="alpha"):
        fisher.check_parameters("fisher", {"alpha": -1.0}, fisher.PARAMETERS)
    with pytest.raises(ValueError, match="max_retain_examples"):
        fisher.check_parameters("fisher", {"max_retain_examples": 0}, fisher.PARAMETERS)
    with pytest.raises(ValueError, match="retain_fraction"):
        bad_teacher.check_parameters("bad_teacher", {"retain_fraction": 1.5}, bad_teacher.PARAMETERS)
    with pytest.raises(ValueError, match="optimizer"):
        bad_teacher.check_parameters("bad_teacher", {"optimizer": "rmsprop"}, bad_teacher.PARAMETERS)
