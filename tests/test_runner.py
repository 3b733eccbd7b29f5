"""The method runner: every method runs through it, so its failed results, rewinding and timing are the pipeline's,
the deletion pipeline's, the benchmark's and the attack's."""

from __future__ import annotations

import json

import pytest
import torch

from scrub_unlearning.methods import METHODS, Method
from scrub_unlearning.methods.runner import MethodResult, run_method, run_with_rewound

CPU = torch.device("cpu")
SCRUB = dict(optimizer="sgd", lr=0.01, weight_decay=5e-4, momentum=0.9, gamma=1.0, alpha=0.5, temperature=2.0,
             msteps=2, epochs=3, lr_decay_epochs=[5], retain_batch=64, forget_batch=32)
FINETUNE = dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, epochs=1, batch_size=128)


def _same_weights(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


@pytest.fixture(scope="module")
def scrubbed(digits_original, digits_task):
    task = digits_task("rb_selective")
    return task, run_method("scrub", digits_original, task, SCRUB, CPU)


def test_a_run_is_timed_and_leaves_the_original_untouched(digits_original, digits_task):
    before = {k: v.clone() for k, v in digits_original.state_dict().items()}
    result = run_method("finetune", digits_original, digits_task("rb_selective"), FINETUNE, CPU)
    assert result.ok and result.status == "ok" and result.failure == ""
    assert result.seconds > 0 and result.info["seconds"] == result.seconds and result.info["status"] == "ok"
    assert not result.model.training, "the result is in eval mode"
    assert all(torch.equal(before[k], v) for k, v in digits_original.state_dict().items())
    assert not _same_weights(result.model, digits_original)
    assert result.row_fields() == {"status": "ok", "failure": "", "seconds": result.seconds}, \
        "a method that declares no row fields adds none"


def test_a_diverging_method_is_a_failed_result_not_a_crash(digits_original, digits_task):
    diverging = dict(optimizer="sgd", lr=1e6, momentum=0.9, weight_decay=5e-4, epochs=3, batch_size=64)
    result = run_method("neggrad", digits_original, digits_task("rb_selective"), diverging, CPU)
    assert not result.ok and result.model is None and result.status == "failed"
    assert result.failure.startswith("DivergenceError") and result.info["failure"] == result.failure
    assert result.seconds > 0 and result.info["status"] == "failed"
    assert result.row_fields()["status"] == "failed"


def test_an_exception_is_a_failed_result_with_its_type(digits_original, digits_task):
    result = run_method("finetune", digits_original, digits_task("up"), {**FINETUNE, "lr": -1.0}, CPU)
    assert not result.ok and result.failure.startswith("ValueError") and "lr" in result.failure


def test_memory_errors_and_interrupts_still_stop_the_run(monkeypatch, digits_original, digits_task):
    def out_of_memory(*args):
        raise MemoryError("no room")

    monkeypatch.setitem(METHODS, "finetune", Method("finetune", out_of_memory, "Finetune"))
    with pytest.raises(MemoryError):
        run_method("finetune", digits_original, digits_task("up"), FINETUNE, CPU)

    def interrupted(*args):
        raise KeyboardInterrupt

    monkeypatch.setitem(METHODS, "finetune", Method("finetune", interrupted, "Finetune"))
    with pytest.raises(KeyboardInterrupt):
        run_method("finetune", digits_original, digits_task("up"), FINETUNE, CPU)


def test_in_memory_info_stays_out_of_the_saved_info(scrubbed):
    _, result = scrubbed
    assert result.ok and "checkpoints" not in result.info and "checkpoints" in result.handoff
    json.dumps(result.info)  # what the catalog saves is JSON
    assert set(result.row_fields()) == {"status", "failure", "seconds", "guard_fired", "guard_epoch"}


def test_rewinding_reads_the_rewound_run_and_adds_its_cost(digits_original, scrubbed):
    task, scrub_result = scrubbed
    result = run_method("scrub_r", digits_original, task, {}, CPU, scrub_result)
    assert result.ok and result.seconds > scrub_result.seconds
    chosen = result.info["chosen_epoch"]
    assert str(chosen) in result.info["checkpoint_forget_errors"], "JSON-safe keys"
    assert _same_weights(result.model, _with(digits_original, scrub_result.handoff["checkpoints"][chosen]))


def _with(model, state):
    import copy

    clone = copy.deepcopy(model)
    clone.load_state_dict(state)
    return clone


def test_rewinding_without_a_successful_run_fails_with_the_reason(digits_original, scrubbed):
    task, _ = scrubbed
    for rewound in (None, MethodResult("scrub", None, failure="DivergenceError: nan")):
        result = run_method("scrub_r", digits_original, task, {}, CPU, rewound)
        assert not result.ok and result.failure == "scrub failed, so there is no trajectory to rewind"


def test_run_with_rewound_runs_the_rewound_method_first(digits_original, digits_task):
    task = digits_task("up")
    asked = []

    def params_of(name):
        asked.append(name)
        return SCRUB if name == "scrub" else {}

    result = run_with_rewound("scrub_r", digits_original, task, params_of, CPU)
    assert result.ok and asked == ["scrub", "scrub_r"] and "chosen_epoch" in result.info
