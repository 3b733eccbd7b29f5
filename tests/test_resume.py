"""Resume instead of redo, and artifacts that survive a kill: every trained model is stored by content address and
reused when its inputs did not change; a model folder is replaced atomically; runs left RUNNING by a dead process
are marked KILLED."""

from __future__ import annotations

import subprocess
import sys

import pytest
import torch

from scrub_unlearning.methods.runner import result_key, run_method
from scrub_unlearning.models import ModelBundle
from scrub_unlearning.models.store import WeightStore

CPU = torch.device("cpu")
SCRUB = dict(optimizer="sgd", lr=0.01, weight_decay=5e-4, momentum=0.9, gamma=1.0, alpha=0.5, temperature=2.0,
             msteps=1, epochs=2, lr_decay_epochs=[5], retain_batch=64, forget_batch=32)
FINETUNE = dict(optimizer="sgd", lr=0.01, momentum=0.9, weight_decay=5e-4, epochs=1, batch_size=128)


def _same(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values(), strict=True))


def test_a_result_is_reused_only_while_its_inputs_are_unchanged(tmp_path, digits_original, digits_task):
    store, task = WeightStore(tmp_path), digits_task("rb_selective")
    first = run_method("finetune", digits_original, task, FINETUNE, CPU, store=store)
    assert first.ok and not first.info.get("reused") and first.info["content_key"]
    again = run_method("finetune", digits_original, task, FINETUNE, CPU, store=store)
    assert again.info["reused"] and _same(again.model, first.model)
    assert again.seconds == first.seconds, "a reused result keeps what its computation cost"
    changed = run_method("finetune", digits_original, task, {**FINETUNE, "lr": 0.02}, CPU, store=store)
    assert not changed.info.get("reused") and not _same(changed.model, first.model)
    other_seed = result_key("finetune", digits_original, digits_task("rb_selective", size=20), FINETUNE)
    assert other_seed != first.info["content_key"], "a different forget set is a different result"
    assert len(list(tmp_path.glob("*.safetensors"))) == 2


def test_a_rewinding_method_reads_a_reused_trajectory(tmp_path, digits_original, digits_task):
    store, task = WeightStore(tmp_path), digits_task("rb_selective")
    scrub = run_method("scrub", digits_original, task, SCRUB, CPU, store=store)
    rewound = run_method("scrub_r", digits_original, task, {}, CPU, scrub)
    scrub_again = run_method("scrub", digits_original, task, SCRUB, CPU, store=store)
    assert scrub_again.info["reused"] and sorted(scrub_again.handoff["checkpoints"]) == sorted(
        scrub.handoff["checkpoints"])
    rewound_again = run_method("scrub_r", digits_original, task, {}, CPU, scrub_again)
    assert rewound_again.ok and _same(rewound_again.model, rewound.model)
    assert rewound_again.info["chosen_epoch"] == rewound.info["chosen_epoch"]


def test_a_failed_method_is_not_stored(tmp_path, digits_original, digits_task):
    store = WeightStore(tmp_path)
    result = run_method("finetune", digits_original, digits_task("rb_selective"), {**FINETUNE, "lr": 1e30}, CPU,
                        store=store)
    assert not result.ok and not list(tmp_path.glob("*.safetensors"))


def test_a_model_folder_is_replaced_atomically(tmp_path, digits_original, monkeypatch):
    from scrub_unlearning.mlflow_edge import datasets

    dataset = datasets.ModelDataset(str(tmp_path / "model"))
    bundle = ModelBundle.of(digits_original)
    dataset.save(bundle)
    changed = ModelBundle({k: v + 1 if v.is_floating_point() else v for k, v in bundle.weights.items()}, bundle.spec)

    def killed(*args, **kwargs):
        raise KeyboardInterrupt("killed while writing the weights")

    monkeypatch.setattr(datasets, "save_file", killed)
    with pytest.raises(KeyboardInterrupt):
        dataset.save(changed)
    kept = dataset.load()
    assert kept.present and all(torch.equal(kept.weights[k], bundle.weights[k]) for k in bundle.weights)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["model"], "no temporary folder is left behind"
    monkeypatch.undo()
    dataset.save(changed)
    assert torch.equal(dataset.load().weights["head.weight"], changed.weights["head.weight"])
    dataset.save(ModelBundle())
    assert not dataset.load().present and not (tmp_path / "model").exists()


def test_runs_left_running_by_a_dead_process_are_marked_killed(tmp_path):
    from mlflow.tracking import MlflowClient

    from scrub_unlearning.mlflow_edge.run_status import mark_abandoned_runs, owner_tags

    client = MlflowClient(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    experiment = client.create_experiment("resume", artifact_location=str(tmp_path / "artifacts"))
    dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True,
                          text=True, check=True).stdout.strip()
    orphan = client.create_run(experiment, tags={**owner_tags(), "pid": dead}).info.run_id
    child = client.create_run(experiment, tags={"mlflow.parentRunId": orphan}).info.run_id
    alive = client.create_run(experiment, tags=owner_tags()).info.run_id  # this process: still running
    elsewhere = client.create_run(experiment, tags={"host": "another-host", "pid": dead}).info.run_id
    assert mark_abandoned_runs(client, experiment) == sorted([orphan, child])
    status = {run_id: client.get_run(run_id).info.status for run_id in (orphan, child, alive, elsewhere)}
    assert status == {orphan: "KILLED", child: "KILLED", alive: "RUNNING", elsewhere: "RUNNING"}
    assert "is gone" in client.get_run(orphan).data.tags["status_note"]
