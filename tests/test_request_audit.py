"""The per-request audit's shadows (evaluation/request_audit.py): the registration plan's invariants, what each shadow
unlearns for a request, reuse after a kill, chained requests, and the statistics on synthetic margins (a candidate
that remembers is flagged, one that forgot is not)."""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import pytest
import torch

from scrub_unlearning.evaluation.request_audit import (
    ShadowMargins,
    audit_statistics,
    chance_sample,
    plan_audit_shadows,
    plan_digest,
    shadow_request_task,
    train_audit_shadows,
    unlearn_audit_shadows,
)
from scrub_unlearning.models import model_spec
from scrub_unlearning.models.store import WeightStore


def test_the_plan_cuts_the_training_set_into_complementary_seeded_halves():
    ids = torch.arange(0, 301) * 3  # 301 ids: the halves of a pair differ in size by one
    plan = plan_audit_shadows(ids, num_shadows=6, seed=4)
    assert plan.num_shadows == 6 and len(set(plan.seeds)) == 6
    for j in range(0, 6, 2):
        a, b = plan.halves[j], plan.halves[j + 1]
        assert not torch.isin(a, b).any() and torch.equal(torch.cat([a, b]).sort().values, ids)
        assert abs(len(a) - len(b)) <= 1
    held = torch.stack([torch.isin(ids, h) for h in plan.halves]).sum(dim=0)
    assert torch.all(held == 3), "every training example is IN for exactly half of the shadows"
    again = plan_audit_shadows(ids.flip(0), num_shadows=6, seed=4)
    assert plan_digest(again) == plan_digest(plan), "seeded, and independent of the order of the ids"
    assert plan_digest(plan_audit_shadows(ids, num_shadows=6, seed=5)) != plan_digest(plan)


@pytest.mark.parametrize("num_shadows", [2, 5, 0])
def test_the_plan_needs_an_even_number_of_at_least_four_shadows(num_shadows):
    with pytest.raises(ValueError, match="registry.audit.num_shadows"):
        plan_audit_shadows(torch.arange(20), num_shadows, seed=0)


def test_each_shadow_unlearns_the_part_of_the_request_it_holds(digits_training_set, digits_task):
    template = digits_task("up")
    plan = plan_audit_shadows(digits_training_set.ids, 4, seed=0)
    request = digits_training_set.ids[digits_training_set.labels == 5][:10]
    for k in range(4):
        task = shadow_request_task(digits_training_set, plan.halves[k], request, template, seed=k)
        held = request[torch.isin(request, plan.halves[k])]
        assert len(task.forget_y) == len(held) > 0
        assert len(task.retain_y) == int(torch.isin(digits_training_set.ids, plan.halves[k]).sum()) - len(held)
    # a request none of whose examples the shadow trained on: nothing to unlearn
    outside = digits_training_set.ids[~torch.isin(digits_training_set.ids, plan.halves[0])][:3]
    assert shadow_request_task(digits_training_set, plan.halves[0], outside, template, seed=0) is None


@dataclass
class Result:
    model: torch.nn.Module | None
    failure: str | None = None


class Shrink:
    """A stand-in method: scales every weight (so the unlearned shadow differs from its parent); counts calls."""

    calls = 0

    def __call__(self, model, task, device):
        Shrink.calls += 1
        with torch.no_grad():
            for parameter in model.parameters():
                parameter.mul_(0.9)
        return Result(model)


@pytest.fixture
def registered_shadows(tmp_path, digits_splits, digits_training_set):
    """Four audit shadows of a tiny CNN, 'trained' for one epoch on their halves of digits."""
    spec = model_spec("small_cnn", 10, digits_splits.image_shape, digits_splits.mean, digits_splits.std)
    plan = plan_audit_shadows(digits_training_set.ids, 4, seed=0)
    store = WeightStore(tmp_path / "audit")
    recipe = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.0, epochs=1, batch_size=128,
                  schedule="constant")
    manifest = train_audit_shadows(digits_training_set, plan, spec, recipe, store, torch.device("cpu"))
    return spec, plan, store, manifest


def test_registration_shadows_are_stored_and_reused(registered_shadows, digits_training_set):
    spec, plan, store, manifest = registered_shadows
    assert manifest["trained"] == 4 and manifest["earlier_requests"] == 0 and manifest["plan"] == plan_digest(plan)
    recipe = dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=0.0, epochs=1, batch_size=128,
                  schedule="constant")
    again = train_audit_shadows(digits_training_set, plan, spec, recipe, store, torch.device("cpu"))
    assert again["trained"] == 0 and again["reused"] == 4 and again["keys"] == manifest["keys"]


def test_requests_unlearn_every_holding_shadow_resume_and_chain(registered_shadows, digits_training_set,
                                                                digits_task, digits_splits):
    spec, plan, store, manifest = registered_shadows
    template = digits_task("up")
    fives = digits_training_set.ids[digits_training_set.labels == 5]
    first, second = fives[:12], fives[12:20]
    val_x, val_y = digits_splits.x["val"][:40], digits_splits.y["val"][:40]
    Shrink.calls = 0
    margins = unlearn_audit_shadows(Shrink(), {"method": "shrink"}, manifest["keys"], plan, spec, store,
                                    digits_training_set, first, template, val_x, val_y, torch.device("cpu"), seed=1)
    assert Shrink.calls == 4 and margins.request.shape == (4, 12) and margins.never_seen.shape == (4, 40)
    assert np.array_equal(margins.held.sum(axis=0), np.full(12, 2)), "each requested example: 2 of 4 shadows"
    assert all(new != old for new, old in zip(margins.keys, manifest["keys"], strict=True))
    # a rerun (the request interrupted after the audit): nothing unlearned again, the same margins
    rerun = unlearn_audit_shadows(Shrink(), {"method": "shrink"}, manifest["keys"], plan, spec, store,
                                  digits_training_set, first, template, val_x, val_y, torch.device("cpu"), seed=1)
    assert Shrink.calls == 4 and rerun.keys == margins.keys and np.allclose(rerun.request, margins.request)
    # other settings are other shadows
    other = unlearn_audit_shadows(Shrink(), {"method": "shrink", "lr": 2}, manifest["keys"], plan, spec, store,
                                  digits_training_set, first, template, val_x, val_y, torch.device("cpu"), seed=1)
    assert Shrink.calls == 8 and set(other.keys).isdisjoint(margins.keys)
    # the second request starts from the shadows the first left, on a training set without the first's ids
    keep = ~torch.isin(digits_training_set.ids, first)
    remaining = replace(digits_training_set, ids=digits_training_set.ids[keep], x=digits_training_set.x[keep],
                        labels=digits_training_set.labels[keep], true_labels=digits_training_set.true_labels[keep])
    chained = unlearn_audit_shadows(Shrink(), {"method": "shrink"}, margins.keys, plan, spec, store, remaining,
                                    second, template, val_x, val_y, torch.device("cpu"), seed=1)
    assert Shrink.calls == 12 and set(chained.keys).isdisjoint(margins.keys)
    record = store.record(chained.keys[0])
    assert record["parent"] == margins.keys[0]
    with pytest.raises(ValueError, match="every requested id"):
        unlearn_audit_shadows(Shrink(), {"method": "shrink"}, margins.keys, plan, spec, store, remaining, first,
                              template, val_x, val_y, torch.device("cpu"), seed=1)


def test_a_failed_shadow_stops_the_audit(registered_shadows, digits_training_set, digits_task, digits_splits):
    spec, plan, store, manifest = registered_shadows

    def fail(model, task, device):
        return Result(None, "ValueError: diverged")

    with pytest.raises(RuntimeError, match="diverged"):
        unlearn_audit_shadows(fail, {"method": "fail"}, manifest["keys"], plan, spec, store, digits_training_set,
                              digits_training_set.ids[:6], digits_task("up"), digits_splits.x["val"][:20],
                              digits_splits.y["val"][:20], torch.device("cpu"), seed=1)


def _synthetic(shift: float, n: int = 40, never_seen: int = 200, shadows: int = 16, seed: int = 0):
    """OUT margins ~ N(mu_i, 1) per example, IN margins mu_i + 2; the candidate's request margins mu_i + shift (0:
    it forgot; 2: it remembers as the IN shadows do) and its never-seen margins drawn as OUT ones."""
    rng = np.random.default_rng(seed)
    held = np.zeros((shadows, n), dtype=bool)
    for j in range(0, shadows, 2):
        side = rng.random(n) < 0.5
        held[j], held[j + 1] = side, ~side
    mu = rng.normal(0, 2, n)
    request = mu + rng.normal(0, 1, (shadows, n)) + 2.0 * held
    mu_seen = rng.normal(0, 2, never_seen)
    margins = ShadowMargins(request, mu_seen + rng.normal(0, 1, (shadows, never_seen)), held, [], 0.0)
    return margins, mu + shift + rng.normal(0, 1, n), mu_seen + rng.normal(0, 1, never_seen)


def test_a_candidate_that_remembers_is_flagged_and_one_that_forgot_is_not():
    chance = np.arange(40)
    margins, remembers, never_seen = _synthetic(shift=3.0)
    caught = audit_statistics(margins, remembers, never_seen, chance, alpha=0.05, seed=0, bootstrap=50)
    assert caught["served"]["request"]["share"] > 0.5 and caught["served"]["fisher_p"] < 0.001
    assert caught["ulira"]["auc"] > 0.8, "IN shadows kept what they held: the method-level attack sees it"
    assert caught["served"]["chance"]["n"] == 40 and caught["served"]["calibration"]["n"] == 160
    margins, forgot, never_seen = _synthetic(shift=0.0)
    clean = audit_statistics(margins, forgot, never_seen, chance, alpha=0.05, seed=0, bootstrap=50)
    assert clean["served"]["request"]["share"] <= 0.2 and clean["served"]["fisher_p"] > 0.05
    assert clean["served"]["p_request"] == sorted(clean["served"]["p_request"]), "sorted, never tied to an id"


def test_the_calibration_absorbs_a_candidate_that_is_better_on_everything():
    """A candidate trained on twice the data scores unseen examples higher than half-data shadows: shifting every
    margin (requested and never-seen alike) must not flag the request."""
    margins, forgot, never_seen = _synthetic(shift=1.5)
    shifted = audit_statistics(margins, forgot, never_seen + 1.5, np.arange(40), alpha=0.05, seed=0, bootstrap=50)
    assert shifted["served"]["excess"] <= 0.15 and shifted["served"]["calibration"]["loc"] > 1.0


def test_the_chance_sample_prefers_the_requests_classes(digits_splits):
    positions = chance_sample(digits_splits.y["val"], (5,), 20, seed=1)
    assert len(positions) == 20 == len(set(positions.tolist()))
    assert torch.all(digits_splits.y["val"][positions] == 5)
    assert torch.equal(positions, chance_sample(digits_splits.y["val"], (5,), 20, seed=1))
    many = chance_sample(digits_splits.y["val"], (5,), 100, seed=1)  # more than class 5 has: any class
    assert len(many) == 100 and len(set(digits_splits.y["val"][many].tolist())) > 1
    with pytest.raises(ValueError, match="chance sample"):
        chance_sample(digits_splits.y["val"], (5,), 10_000, seed=1)
