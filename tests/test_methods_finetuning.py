"""The fine-tuning baselines (docs/design.md §5): Finetune, NegGrad, NegGrad+, CF-k, EU-k."""

from __future__ import annotations

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from scrub_unlearning.data import UnlearningTask
from scrub_unlearning.methods import cf_k, eu_k, finetune, neggrad, neggrad_plus
from scrub_unlearning.methods.runner import run_method
from scrub_unlearning.models import build_model, model_spec
from scrub_unlearning.training import DivergenceError, model_error, predict_logits, seed_everything

CPU = torch.device("cpu")
MODULES = {"finetune": finetune, "neggrad": neggrad, "neggrad_plus": neggrad_plus, "cf_k": cf_k, "eu_k": eu_k}
QUICK = {"finetune": {"epochs": 1}, "neggrad": {"epochs": 1}, "neggrad_plus": {"epochs": 1}, "cf_k": {"epochs": 1},
         "eu_k": {"epochs": 1}}


def snapshot(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().clone() for k, v in model.state_dict().items()}


def in_last_block(model, key: str) -> bool:
    return key.split(".")[0] in model.last_block


def assert_only_last_block_changed(model, before: dict, after: dict, every_last_block_tensor: bool = False) -> None:
    """Bit-identical outside the last block (BatchNorm statistics and counters included); changes inside it."""
    assert before.keys() == after.keys()
    outside = [k for k in before if not in_last_block(model, k)]
    inside = [k for k in before if in_last_block(model, k)]
    assert outside and inside
    moved_outside = [k for k in outside if not torch.equal(before[k], after[k])]
    assert not moved_outside, f"frozen tensors changed: {moved_outside}"
    changed_inside = [k for k in inside if not torch.equal(before[k], after[k])]
    if every_last_block_tensor:
        assert changed_inside == inside, f"unchanged in the last block: {sorted(set(inside) - set(changed_inside))}"
    else:
        assert changed_inside, "nothing in the last block changed"


def mean_ce(model, x, y) -> float:
    return float(F.cross_entropy(predict_logits(model, x, CPU), y))


def synthetic_task(seed: int = 1, n: int = 64) -> UnlearningTask:
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (n, 1, 8, 8), dtype=torch.uint8, generator=generator)
    y = torch.randint(0, 3, (n,), generator=generator)
    return UnlearningTask(application="rb_selective", retain_x=x[:40], retain_y=y[:40], forget_x=x[40:52],
                          forget_y=y[40:52], val_x=x[52:], val_y=y[52:], num_classes=3, kept_classes=(0, 1, 2),
                          forget_classes=(0, 1, 2), seed=seed)


def synthetic_model(architecture: str):
    seed_everything(0)
    spec = model_spec(architecture, 3, (1, 8, 8), [0.5], [0.25], width=0.125 if architecture != "small_cnn" else 1)
    return build_model(spec)


def test_cf_k_changes_only_the_last_block(digits_original, digits_task):
    task = digits_task("rb_selective")
    before = snapshot(digits_original)
    model, info = cf_k.unlearn(digits_original, task, {"epochs": 2}, CPU)
    assert_only_last_block_changed(model, before, snapshot(model))
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items() if k.startswith("head."))
    for key, value in digits_original.state_dict().items():     # the Original itself is untouched
        assert torch.equal(value, before[key])
    again, _ = cf_k.unlearn(digits_original, task, {"epochs": 2}, CPU)  # same seed -> same weights on CPU
    assert all(torch.equal(a, b) for a, b in zip(snapshot(model).values(), snapshot(again).values(), strict=True))
    assert len(info["epoch_losses"]) == 2


def test_eu_k_reinitialises_the_last_block_then_trains_only_it(digits_original, digits_task):
    task = digits_task("rb_selective")
    before = snapshot(digits_original)
    reset, _ = eu_k.unlearn(digits_original, task, {"epochs": 0}, CPU)           # reset only, no training
    reset_state = snapshot(reset)
    assert_only_last_block_changed(reset, before, reset_state, every_last_block_tensor=True)
    bn = "block2.0.1"
    assert torch.equal(reset_state[f"{bn}.running_mean"], torch.zeros_like(reset_state[f"{bn}.running_mean"]))
    assert torch.equal(reset_state[f"{bn}.running_var"], torch.ones_like(reset_state[f"{bn}.running_var"]))
    assert int(reset_state[f"{bn}.num_batches_tracked"]) == 0
    assert model_error(reset, task.retain_x, task.retain_y) > 50             # the Original's knowledge there is gone
    # seeded by task.seed: the same seed redraws the same weights, another seed different ones
    same, _ = eu_k.unlearn(digits_original, task, {"epochs": 0}, CPU)
    other, _ = eu_k.unlearn(digits_original, dataclasses.replace(task, seed=2), {"epochs": 0}, CPU)
    assert torch.equal(same.head.weight, reset.head.weight)
    assert not torch.equal(other.head.weight, reset.head.weight)

    trained, info = eu_k.unlearn(digits_original, task, {"epochs": 5}, CPU)
    trained_state = snapshot(trained)
    assert_only_last_block_changed(trained, before, trained_state, every_last_block_tensor=True)
    assert any(not torch.equal(reset_state[k], trained_state[k]) for k in reset_state if in_last_block(reset, k))
    assert model_error(trained, task.retain_x, task.retain_y) < model_error(reset, task.retain_x, task.retain_y) - 30
    assert info["reset_modules"] and len(info["epoch_losses"]) == 5


@pytest.mark.parametrize("architecture", ["preact_resnet18", "allcnn"])
@pytest.mark.parametrize("method", ["cf_k", "eu_k"])
def test_last_block_methods_on_other_architectures(architecture, method):
    """ResNet `layer4` + final BN + head, All-CNN's last two conv blocks + head; everything else frozen."""
    original = synthetic_model(architecture)
    before = snapshot(original)
    model, _ = MODULES[method].unlearn(original, synthetic_task(), {"epochs": 1, "batch_size": 16}, CPU)
    assert_only_last_block_changed(model, before, snapshot(model), every_last_block_tensor=(method == "eu_k"))


def test_neggrad_raises_the_forget_loss(digits_original, digits_task):
    task = digits_task("rb_selective")
    forget_before = mean_ce(digits_original, task.forget_x, task.forget_y)
    model, info = neggrad.unlearn(digits_original, task, {}, CPU)                 # small-scale defaults
    assert mean_ce(model, task.forget_x, task.forget_y) > forget_before + 0.2
    assert len(info["epoch_forget_ce"]) == 5


def test_neggrad_plus_keeps_the_retain_loss_below_neggrads(digits_original, digits_task):
    """Same forget set, lr, epochs and forget batch: the retain term keeps NegGrad+ close on retain while it still
    forgets."""
    task = digits_task("rb_class")
    common = {"lr": 0.01, "epochs": 5}
    plain, _ = neggrad.unlearn(digits_original, task, {**common, "batch_size": 64}, CPU)
    plus, info = neggrad_plus.unlearn(digits_original, task, {**common, "forget_batch": 64}, CPU)
    assert mean_ce(plus, task.retain_x, task.retain_y) < 0.5 * mean_ce(plain, task.retain_x, task.retain_y)
    assert mean_ce(plus, task.forget_x, task.forget_y) > mean_ce(digits_original, task.forget_x, task.forget_y) + 1
    assert len(info["epoch_retain_ce"]) == len(info["epoch_forget_ce"]) == 5


def test_finetune_keeps_retain_error_and_leaves_the_original_alone(digits_original, digits_task):
    task = digits_task("rb_selective")
    before = snapshot(digits_original)
    error_before = model_error(digits_original, task.retain_x, task.retain_y)
    loss_before = mean_ce(digits_original, task.retain_x, task.retain_y)
    model, info = finetune.unlearn(digits_original, task, {"epochs": 3}, CPU)
    assert model is not digits_original
    assert any(not torch.equal(before[k], v) for k, v in model.state_dict().items())
    for key, value in digits_original.state_dict().items():
        assert torch.equal(value, before[key]), f"finetune modified the Original's '{key}'"
    assert model_error(model, task.retain_x, task.retain_y) <= error_before
    assert mean_ce(model, task.retain_x, task.retain_y) < loss_before
    assert len(info["epoch_losses"]) == 3


@pytest.mark.parametrize("method", ["neggrad", "neggrad_plus"])
def test_divergence_raises(digits_original, digits_task, method):
    with pytest.raises(DivergenceError, match=method):
        MODULES[method].unlearn(digits_original, digits_task("rb_selective"), {"lr": 1e6, "epochs": 5}, CPU)


@pytest.mark.parametrize("method", sorted(MODULES))
def test_every_method_returns_an_eval_copy_and_the_runner_times_it(method):
    original = synthetic_model("small_cnn")
    model, _ = MODULES[method].unlearn(original, synthetic_task(), QUICK[method], CPU)
    assert model is not original
    assert not any(module.training for module in model.modules())
    result = run_method(method, original, synthetic_task(), QUICK[method], CPU)
    assert result.ok and result.seconds > 0 and result.info["seconds"] == result.seconds


@pytest.mark.parametrize("method", sorted(MODULES))
def test_unknown_parameter_is_rejected_by_name(method):
    with pytest.raises(ValueError, match="lerning_rate") as raised:
        MODULES[method].unlearn(synthetic_model("small_cnn"), synthetic_task(),
                                {**QUICK[method], "lerning_rate": 0.1}, CPU)
    assert "allowed are" in str(raised.value) and "'lr'" in str(raised.value)


@pytest.mark.parametrize(("method", "params", "pattern"), [
    ("eu_k", {}, "missing required parameter.*epochs"),
    ("finetune", {"optimizer": "rmsprop"}, "rmsprop"),
    ("neggrad", {"lr": -1.0}, "'lr' must be > 0"),
    ("neggrad_plus", {"beta": 1.5}, "'beta' must be in"),
    ("cf_k", {"batch_size": 0}, "'batch_size' must be >= 1"),
    ("cf_k", {"epochs": "ten"}, "'epochs' must be an integer"),
])
def test_bad_parameter_values_are_rejected(method, params, pattern):
    with pytest.raises(ValueError, match=pattern):
        MODULES[method].unlearn(synthetic_model("small_cnn"), synthetic_task(), params, CPU)
