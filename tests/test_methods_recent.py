"""The methods since the paper (docs/methods.md): Random Labels, ℓ1-sparse, SalUn, SSD - and train_model's hooks."""

from __future__ import annotations

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from scrub_unlearning.data import UnlearningTask
from scrub_unlearning.methods import METHODS, finetune, l1_sparse, random_labels, salun, ssd
from scrub_unlearning.methods.runner import run_method
from scrub_unlearning.training import model_error, train_model

CPU = torch.device("cpu")
NEW = ("random_labels", "l1_sparse", "salun", "ssd")


def snapshot(model: nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def test_registered_with_display_names_and_declared_parameters():
    assert {name: METHODS[name].display for name in NEW} == {
        "random_labels": "Random Labels", "l1_sparse": "ℓ1-sparse", "salun": "SalUn", "ssd": "SSD"}
    assert METHODS["salun"].parameters["mask_fraction"].default == 0.5
    assert {"alpha", "dampening", "batch_size"} == set(METHODS["ssd"].parameters)
    assert "gamma" in METHODS["l1_sparse"].parameters


# --- train_model's hooks ---


def test_train_model_hooks_add_a_loss_per_epoch_and_run_after_every_step():
    generator = torch.Generator().manual_seed(0)
    x, y = torch.randn(20, 4, generator=generator), torch.randint(0, 3, (20,), generator=generator)
    torch.manual_seed(0)
    model = nn.Linear(4, 3)
    epochs_seen, steps = [], []
    config = {"optimizer": "sgd", "lr": 0.1, "epochs": 3, "batch_size": 8}

    def extra(net, epoch):
        epochs_seen.append(epoch)
        return torch.zeros((), requires_grad=False) + 0.0 * net.weight.sum()

    info = train_model(model, x, y, config, CPU, seed=1, extra_loss=extra, after_step=lambda net: steps.append(1))
    assert epochs_seen == [1, 1, 1, 2, 2, 2, 3, 3, 3] and len(steps) == 9 and len(info["epoch_losses"]) == 3
    # a zero extra loss changes nothing: same weights as without the hook
    torch.manual_seed(0)
    plain = nn.Linear(4, 3)
    train_model(plain, x, y, config, CPU, seed=1)
    assert torch.equal(plain.weight, model.weight) and torch.equal(plain.bias, model.bias)


# --- Random Labels ---


def test_random_labels_are_never_the_own_label_uniform_over_the_others_and_seeded():
    labels = torch.arange(10).repeat(2000)
    drawn = random_labels.random_other_labels(labels, 10, torch.Generator().manual_seed(3))
    assert not bool((drawn == labels).any())
    assert int(drawn.min()) == 0 and int(drawn.max()) == 9
    for c in range(10):                                  # every other class about equally often (1/9 each)
        counts = torch.bincount(drawn[labels == c], minlength=10).float()
        assert counts[c] == 0 and bool((counts[torch.arange(10) != c] > 2000 / 9 * 0.8).all())
    again = random_labels.random_other_labels(labels, 10, torch.Generator().manual_seed(3))
    other = random_labels.random_other_labels(labels, 10, torch.Generator().manual_seed(4))
    assert torch.equal(drawn, again) and not torch.equal(drawn, other)
    assert torch.equal(random_labels.random_other_labels(torch.tensor([0, 1, 0]), 2, torch.Generator()),
                       torch.tensor([1, 0, 1]))


def test_random_labels_training_data_is_retain_plus_relabelled_forget(digits_task):
    task = digits_task("rb_selective")
    x, y, forget_labels = random_labels.relabelled_training_data(task)
    n = len(task.retain_x)
    assert torch.equal(x[:n], task.retain_x) and torch.equal(y[:n], task.retain_y)
    assert torch.equal(x[n:], task.forget_x) and torch.equal(y[n:], forget_labels)
    assert not bool((forget_labels == task.forget_y).any())
    assert torch.equal(forget_labels, random_labels.relabelled_training_data(task)[2])   # seeded by task.seed


# --- ℓ1-sparse ---


def test_l1_strength_decays_linearly_as_the_formula_says():
    assert [l1_sparse.l1_strength(1e-3, k, 4) for k in (1, 2, 3, 4)] == pytest.approx([1e-3, 7.5e-4, 5e-4, 2.5e-4])
    assert l1_sparse.l1_strength(0.2, 1, 10) == 0.2 and l1_sparse.l1_strength(0.2, 10, 10) == pytest.approx(0.02)


def test_l1_sparse_uses_the_schedule_and_shrinks_the_l1_norm_against_finetune(digits_original, digits_task):
    task = digits_task("rb_selective")
    recipe = {"epochs": 3, "lr": 0.01, "batch_size": 128}
    plain, _ = finetune.unlearn(digits_original, task, recipe, CPU)
    zero, _ = l1_sparse.unlearn(digits_original, task, {**recipe, "gamma": 0.0}, CPU)
    for key, value in snapshot(plain).items():           # gamma 0 is plain fine-tuning, exactly
        assert torch.equal(snapshot(zero)[key], value), key
    model, info = l1_sparse.unlearn(digits_original, task, {**recipe, "gamma": 0.01}, CPU)
    assert info["l1_strength"] == pytest.approx([0.01, 0.01 * 2 / 3, 0.01 / 3])
    assert len(info["epoch_losses"]) == 3
    with torch.no_grad():
        plain_norm, model_norm = float(l1_sparse.l1_norm(plain)), float(l1_sparse.l1_norm(model))
    assert info["l1_norm_final"] == pytest.approx(model_norm) and model_norm < 0.95 * plain_norm, (model_norm,
                                                                                                 plain_norm)


# --- SalUn ---


def test_salun_mask_is_the_top_fraction_by_forget_gradient_magnitude(digits_original, digits_task):
    task = digits_task("rb_selective")
    model = digits_original
    loss = F.cross_entropy(model.eval()(task.forget_x).float(), task.forget_y)
    names = [name for name, _ in model.named_parameters()]
    grads = dict(zip(names, torch.autograd.grad(loss, list(model.parameters())), strict=True))
    computed = salun.forget_gradient(model, task.forget_x, task.forget_y, CPU)
    for name in names:
        assert torch.allclose(computed[name], grads[name], atol=1e-6, rtol=1e-4), name
    mask = salun.saliency_mask(computed, 0.3)
    flat_g = torch.cat([computed[n].abs().flatten() for n in names])
    flat_m = torch.cat([mask[n].flatten() for n in names])
    assert int(flat_m.sum()) == int(0.3 * flat_g.numel())
    assert float(flat_g[flat_m].min()) >= float(flat_g[~flat_m].max())
    assert all(mask[n].shape == computed[n].shape for n in names)


@pytest.mark.parametrize("optimizer", ["sgd", "adam"])
def test_salun_changes_only_the_masked_weights(digits_original, digits_task, optimizer):
    """Weight decay and momentum (SGD) or Adam's moments cannot move a weight outside the mask: bit-identical."""
    task = digits_task("rb_selective")
    before = snapshot(digits_original)
    params = {"mask_fraction": 0.2, "epochs": 2, "lr": 0.01, "weight_decay": 5e-3, "optimizer": optimizer}
    model, info = salun.unlearn(digits_original, task, params, CPU)
    mask = salun.saliency_mask(salun.forget_gradient(digits_original, task.forget_x, task.forget_y, CPU), 0.2)
    after = dict(model.named_parameters())
    moved_inside = 0
    for name, m in mask.items():
        assert torch.equal(after[name].detach()[~m], before[name][~m]), f"{name} moved outside the mask"
        moved_inside += int((after[name].detach()[m] != before[name][m]).sum())
    assert moved_inside > 0.5 * info["salient_weights"]
    assert info["salient_weights"] == int(0.2 * info["total_weights"])
    assert not model.training and all(not p._backward_hooks for p in model.parameters())
    for key, value in digits_original.state_dict().items():     # the Original is untouched
        assert torch.equal(value, before[key])


# --- SSD ---


class Tiny(nn.Module):
    def __init__(self):
        super().__init__()
        self.head = nn.Linear(3, 2)

    def forward(self, x):
        return self.head(x.float())


def tiny_task() -> UnlearningTask:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(11, 3, generator=g)
    y = torch.tensor([0, 1, 0, 1, 1, 0, 0, 1, 1, 0, 1])
    return UnlearningTask(application="rb_selective", retain_x=x[:8], retain_y=y[:8], forget_x=x[8:],
                          forget_y=y[8:], val_x=x[:2], val_y=y[:2], num_classes=2, kept_classes=(0, 1),
                          forget_classes=(0, 1), seed=1)


def hand_importance(w, b, x, y, batch):
    """Mean over batches of the squared gradient of the batch-mean cross-entropy of softmax regression, by hand:
    dCE/dlogits = softmax - onehot, dW = (p - t)^T x / n, db = mean(p - t)."""
    dw_total, db_total, count = torch.zeros_like(w), torch.zeros_like(b), 0
    for start in range(0, len(x), batch):
        xb, yb = x[start:start + batch].double(), y[start:start + batch]
        p = torch.softmax(xb @ w.T + b, dim=1)
        delta = p - F.one_hot(yb, 2).double()
        dw_total += (delta.T @ xb / len(xb)) ** 2
        db_total += delta.mean(0) ** 2
        count += 1
    return dw_total / count, db_total / count


def test_ssd_dampens_exactly_by_the_formula_and_leaves_the_rest_bit_identical():
    torch.manual_seed(0)
    original = Tiny()
    task = tiny_task()
    alpha, lam, batch = 1.5, 0.7, 4
    w, b = original.head.weight.detach().double(), original.head.bias.detach().double()
    full_x, full_y = torch.cat([task.retain_x, task.forget_x]), torch.cat([task.retain_y, task.forget_y])
    d_w, d_b = hand_importance(w, b, full_x, full_y, batch)
    f_w, f_b = hand_importance(w, b, task.forget_x, task.forget_y, batch)
    model, info = ssd.unlearn(original, task, {"alpha": alpha, "dampening": lam, "batch_size": batch}, CPU)
    total_selected = 0
    for new, old, i_d, i_f in ((model.head.weight, original.head.weight, d_w, f_w),
                               (model.head.bias, original.head.bias, d_b, f_b)):
        new, old = new.detach(), old.detach()
        chosen = i_f > alpha * i_d
        beta = torch.clamp(lam * i_d / i_f, max=1.0)
        assert torch.equal(new[~chosen], old[~chosen])                      # untouched: bit-identical
        assert torch.allclose(new[chosen].double(), old[chosen].double() * beta[chosen], rtol=1e-5, atol=1e-7)
        total_selected += int(chosen.sum())
    assert 0 < total_selected < 8, "the example must select some entries and leave others"
    assert info["dampened_weights"] == total_selected and not model.training


def test_ssd_without_a_forget_signal_changes_nothing():
    torch.manual_seed(0)
    original = Tiny()
    model, info = ssd.unlearn(original, tiny_task(), {"alpha": 1e6, "dampening": 1.0, "batch_size": 4}, CPU)
    assert info["dampened_weights"] == 0
    assert all(torch.equal(a, b) for a, b in zip(model.state_dict().values(), original.state_dict().values(),
                                                    strict=True))


# --- every new method on a real digits task ---

QUICK = {
    "random_labels": {"epochs": 2},
    "l1_sparse": {"epochs": 3, "gamma": 0.01, "lr": 0.05},
    "salun": {"epochs": 2},
    "ssd": {"alpha": 7.0, "dampening": 3.0, "batch_size": 16},   # the digits rb_class setting (conf/base)
}


@pytest.mark.parametrize("method", NEW)
def test_each_new_method_raises_forget_error_on_digits_class_forgetting(digits_original, digits_task, method):
    task = digits_task("rb_class")
    before = snapshot(digits_original)
    original_error = model_error(digits_original, task.forget_x, task.forget_y, CPU)
    result = run_method(method, digits_original, task, QUICK[method], CPU)
    assert result.ok, result.failure
    assert model_error(result.model, task.forget_x, task.forget_y, CPU) > original_error + 20
    assert not result.model.training
    assert "seconds" not in METHODS[method].unlearn(digits_original, task, QUICK[method], CPU)[1]
    json.dumps(result.info)
    for key, value in digits_original.state_dict().items():
        assert torch.equal(value, before[key])
