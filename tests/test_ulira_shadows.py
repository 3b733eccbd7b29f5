"""U-LiRA on a small real setting, through the attack orchestrator: shadows on digits, Retrain at chance, the
Original above it, shadow reuse, rewinding on shadows, a method that fails on a shadow."""

from __future__ import annotations

import math

import pytest
import torch

from scrub_unlearning.data import build_forget_set, make_task
from scrub_unlearning.evaluation.attack import ULIRA_METRICS, prepare_shadows, ulira_attack
from scrub_unlearning.evaluation.shadows import ShadowStore, train_shadows
from scrub_unlearning.methods.runner import unlearner

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
    spec = model_spec(*SPEC_ARGS, digits_splits.image_shape, digits_splits.mean, digits_splits.std)
    store = ShadowStore(tmp_path_factory.mktemp("shadows"))
    shadows, manifest = prepare_shadows(digits_training_set, torch.as_tensor(forget["id"].to_numpy().copy()),
                                        template.forget_classes, spec, RECIPE, store, CPU, num_shadows=K, seed=1)
    return dict(plan=shadows.plan, spec=spec, store=store, states=shadows.states, manifest=manifest,
                template=template, shadows=shadows)


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


def test_each_shadow_is_stored_as_soon_as_it_is_trained(setting, digits_training_set, tmp_path, monkeypatch):
    """A run killed while training shadows keeps the ones that finished: the rerun trains only the rest."""
    from scrub_unlearning.evaluation import shadows as shadows_module

    trained = shadows_module._train_shadow
    calls = []

    def dies_on_the_third(*job):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt("killed")
        return trained(*job)

    store = ShadowStore(tmp_path)
    recipe = {**RECIPE, "epochs": 1}
    monkeypatch.setattr(shadows_module, "_train_shadow", dies_on_the_third)
    with pytest.raises(KeyboardInterrupt):
        train_shadows(digits_training_set, setting["plan"], setting["spec"], recipe, store, CPU)
    monkeypatch.setattr(shadows_module, "_train_shadow", trained)
    _, manifest = train_shadows(digits_training_set, setting["plan"], setting["spec"], recipe, store, CPU)
    assert manifest["reused"] == 2 and manifest["trained"] == K - 2


def attack(setting, digits_training_set, unlearn, rewound=None, name="method"):
    return ulira_attack(setting["shadows"], digits_training_set, setting["template"], unlearn, CPU, seed=1,
                        bootstrap=400, rewound=rewound, name=name)


def test_retrain_is_at_chance_and_the_original_is_not(setting, digits_training_set):
    original = attack(setting, digits_training_set, None)
    assert original.ok and set(ULIRA_METRICS) <= set(original.metrics)
    assert original.metrics["ulira_auc_ci_low"] > 0.5, \
        f"no unlearning: IN examples were trained on (AUC {original.metrics['ulira_auc']:.3f})"
    retrained = attack(setting, digits_training_set, unlearner("retrain", RECIPE))
    low, auc, high = (retrained.metrics[k] for k in ("ulira_auc_ci_low", "ulira_auc", "ulira_auc_ci_high"))
    assert low <= 0.5 <= high, f"Retrain AUC {auc:.3f}"
    assert original.metrics["ulira_auc"] > auc + 0.1
    assert retrained.phi.shape == (K, len(setting["plan"].pool_ids))
    pool = set(setting["plan"].pool_ids.tolist())
    member, nonmember = setting["plan"].masks()
    assert set(retrained.scores["id"]) <= pool and len(retrained.scores) == (member | nonmember).sum()


SCRUB_SHORT = dict(optimizer="sgd", lr=0.01, weight_decay=5e-4, momentum=0.9, gamma=1.0, alpha=0.5, temperature=2.0,
                   msteps=1, epochs=2, lr_decay_epochs=[5], retain_batch=64, forget_batch=32)


def test_a_rewinding_method_reads_the_shadows_runs_of_the_method_it_rewinds(setting, digits_training_set):
    scrubbed = attack(setting, digits_training_set, unlearner("scrub", SCRUB_SHORT))
    assert scrubbed.ok and len(scrubbed.per_shadow) == K
    assert all(r.handoff and "checkpoints" in r.handoff and r.model is None for r in scrubbed.per_shadow), \
        "workers send back the info, not the model"
    rewound = attack(setting, digits_training_set, unlearner("scrub_r", {}), rewound=scrubbed.per_shadow)
    assert rewound.ok and 0.0 <= rewound.metrics["ulira_auc"] <= 1.0
    missing = attack(setting, digits_training_set, unlearner("scrub_r", {}), rewound=scrubbed.per_shadow[:2],
                     name="scrub_r")
    assert not missing.ok and "did not run on the 16 shadows" in missing.failure


def test_a_method_that_fails_on_a_shadow_fails_the_attack_not_the_run(setting, digits_training_set):
    invalid = dict(optimizer="sgd", lr=-1.0, momentum=0.9, weight_decay=5e-4, epochs=2, batch_size=64)
    result = attack(setting, digits_training_set, unlearner("finetune", invalid), name="finetune")
    assert not result.ok and result.failure.startswith("finetune failed on shadow 0: ValueError")
    assert all(math.isnan(result.metrics[k]) for k in ULIRA_METRICS if k != "ulira_seconds")
    assert result.metrics["ulira_seconds"] >= 0 and result.scores.empty and result.per_shadow == []
