"""U-LiRA on a small real setting: shadows on digits, Retrain at chance, the Original above it, shadow reuse."""

from __future__ import annotations

import pytest
import torch

from scrub_unlearning.data import build_forget_set, make_task
from scrub_unlearning.evaluation.shadows import ShadowStore, plan_shadows, train_shadows, unlearned_margins
from scrub_unlearning.evaluation.ulira import ulira
from scrub_unlearning.methods import retrain

CPU = torch.device("cpu")
RECIPE = dict(optimizer="sgd", lr=0.1, momentum=0.9, weight_decay=5e-4, epochs=12, batch_size=64, schedule="cosine")
SPEC_ARGS = ("small_cnn", 10)
K = 16


@pytest.fixture(scope="module")
def setting(digits_splits, digits_training_set, tmp_path_factory):
    from scrub_unlearning.models import model_spec

    scenario = {"application": "up", "forget": {"class_id": 5, "size": 30}}
    forget = build_forget_set(digits_training_set, scenario, 10, seed=1)
    template = make_task(digits_splits, digits_training_set, forget, "up", seed=1)
    plan = plan_shadows(digits_training_set, torch.as_tensor(forget["id"].to_numpy().copy()),
                        template.forget_classes, K, seed=1)
    spec = model_spec(*SPEC_ARGS, digits_splits.image_shape, digits_splits.mean, digits_splits.std)
    store = ShadowStore(tmp_path_factory.mktemp("shadows"))
    states, manifest = train_shadows(digits_training_set, plan, spec, RECIPE, store, CPU)
    return dict(plan=plan, spec=spec, store=store, states=states, manifest=manifest, template=template)


def test_plan_invariants(setting, digits_training_set):
    plan = setting["plan"]
    assert len(plan.pool_ids) == 60 and len(set(plan.pool_ids.tolist())) == 60
    position = torch.searchsorted(digits_training_set.ids, plan.pool_ids)
    assert (digits_training_set.labels[position] == 5).all()
    member, nonmember = plan.masks()
    assert member.shape == (K, 60) and not (member & nonmember).any()
    assert (member.sum(axis=1) == 30).all() and (nonmember.sum(axis=1) == 30).all()
    assert (member.sum(axis=0) == K // 2).all(), "complementary pairs: every example is IN for half the shadows"
    assert member.any(axis=0).all() and nonmember.any(axis=0).all(), "every example is IN and OUT somewhere"
    assert len(set(plan.seeds)) == K


def test_shadows_are_reused_when_inputs_do_not_change(setting, digits_training_set):
    assert setting["manifest"]["trained"] == K and setting["manifest"]["reused"] == 0
    again, manifest = train_shadows(digits_training_set, setting["plan"], setting["spec"], RECIPE, setting["store"],
                                    CPU)
    assert manifest["trained"] == 0 and manifest["reused"] == K
    for a, b in zip(again, setting["states"], strict=True):
        assert all(torch.equal(a[name], b[name]) for name in a)
    _, changed = train_shadows(digits_training_set, setting["plan"], setting["spec"], {**RECIPE, "epochs": 1},
                               setting["store"], CPU)
    assert changed["trained"] == K, "a different recipe is a different shadow"


def attack(setting, digits_training_set, unlearn, params):
    phi, _ = unlearned_margins(unlearn, params, setting["states"], setting["spec"], digits_training_set,
                               setting["plan"], setting["template"], CPU)
    member, nonmember = setting["plan"].masks()
    return ulira(phi, member, nonmember, seed=1, n_bootstrap=400)


def test_retrain_is_at_chance_and_the_original_is_not(setting, digits_training_set):
    original = attack(setting, digits_training_set, None, {})
    assert original.ci_low > 0.5, f"no unlearning: IN examples were trained on (AUC {original.auc:.3f})"
    retrained = attack(setting, digits_training_set, retrain.unlearn, RECIPE)
    assert retrained.ci_low <= 0.5 <= retrained.ci_high, f"Retrain AUC {retrained.auc:.3f}"
    assert original.auc > retrained.auc + 0.1
