"""Pre-training on classes the experiment never uses: the backbone is trained once, stored by content address,
reused, retrained when its recipe changes; the Original, Retrain and the shadows start from it with a fresh head."""

from __future__ import annotations

from dataclasses import replace

import pytest
import torch

from scrub_unlearning.data import load_digits_dataset, make_splits
from scrub_unlearning.evaluation.shadows import _train_shadow, shadow_key
from scrub_unlearning.methods.runner import run_method
from scrub_unlearning.models import model_spec
from scrub_unlearning.models.store import WeightStore
from scrub_unlearning.pretraining import backbone_of, initial_model, pretrain, pretraining_data

CPU = torch.device("cpu")
RECIPE = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=1, batch_size=64, schedule="cosine")


@pytest.fixture(scope="module")
def digits():
    raw = load_digits_dataset()
    splits = make_splits(raw, {"classes": [0, 1, 2, 3, 4], "val_fraction": 0.2, "test_fraction": 0.2})
    spec = model_spec("small_cnn", 5, splits.image_shape, splits.mean, splits.std)
    return raw, splits, spec


def _equal_backbone(model: torch.nn.Module, backbone: dict) -> bool:
    return all(torch.equal(t, backbone[n]) for n, t in model.state_dict().items() if not n.startswith("head."))


def test_the_pretraining_data_is_every_example_of_the_source_classes_and_only_those(digits):
    raw, _, _ = digits
    x, y, ids = pretraining_data(raw, [7, 5], [0, 1, 2, 3, 4])
    assert len(ids) == int(torch.isin(raw.y_train, torch.tensor([5, 7])).sum())
    assert torch.equal(y, (raw.y_train[ids] == 5).long())  # relabelled in the given order: 7 -> 0, 5 -> 1
    with pytest.raises(ValueError, match=r"\[4\] are also experiment classes"):
        pretraining_data(raw, [4, 5], [0, 1, 2, 3, 4])
    with pytest.raises(ValueError, match="not in the dataset"):
        pretraining_data(raw, [12], [0])


def test_the_backbone_is_reused_and_retrained_when_its_recipe_changes(tmp_path, digits):
    raw, _, spec = digits
    store = WeightStore(tmp_path)
    state, record = pretrain(raw, [5, 6, 7, 8, 9], [0, 1, 2, 3, 4], spec, RECIPE, 0, store, CPU)
    assert not record["reused"] and record["examples"] > 800 and record["spec"]["num_classes"] == 5
    again, again_record = pretrain(raw, [5, 6, 7, 8, 9], [0, 1, 2, 3, 4], spec, RECIPE, 0, store, CPU)
    assert again_record["reused"] and again_record["key"] == record["key"]
    assert all(torch.equal(state[k], again[k]) for k in state)
    _, changed = pretrain(raw, [5, 6, 7, 8, 9], [0, 1, 2, 3, 4], spec, {**RECIPE, "lr": 0.02}, 0, store, CPU)
    assert not changed["reused"] and changed["key"] != record["key"]
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_original_retrain_and_shadows_start_from_the_backbone_with_a_fresh_head(tmp_path, digits, digits_task):
    raw, _, spec = digits
    state, record = pretrain(raw, [5, 6, 7, 8, 9], [0, 1, 2, 3, 4], spec, RECIPE, 0, WeightStore(tmp_path), CPU)
    backbone = backbone_of(state)
    assert not any(name.startswith("head.") for name in backbone)
    original = initial_model(spec, 3, backbone)
    assert _equal_backbone(original, backbone)
    assert not torch.equal(original.state_dict()["head.weight"], state["head.weight"]), "a fresh head"
    assert torch.equal(original.state_dict()["head.weight"], initial_model(spec, 3).state_dict()["head.weight"])
    # Retrain = the Original's procedure without the forget set: same start (0 epochs shows where it starts)
    digits_spec = {**spec, "num_classes": 10}
    task = replace(digits_task("rb_selective"), backbone=backbone)
    retrain = run_method("retrain", initial_model(digits_spec, 1), task, {**RECIPE, "epochs": 0}, CPU)
    assert retrain.ok and _equal_backbone(retrain.model, backbone)
    shadow = _train_shadow(digits_spec, task.retain_x, task.retain_y, {**RECIPE, "epochs": 0}, 4, "cpu", backbone)
    assert all(torch.equal(shadow[n], backbone[n]) for n in backbone)
    ids, labels = torch.arange(5), torch.zeros(5, dtype=torch.int64)
    assert shadow_key(spec, RECIPE, 1, ids, labels) != shadow_key(spec, RECIPE, 1, ids, labels, record["key"])
    with pytest.raises(ValueError, match="does not fit this architecture"):
        initial_model(model_spec("preact_resnet18", 5, (1, 8, 8), [0.5], [0.5], width=0.1), 0, backbone)
