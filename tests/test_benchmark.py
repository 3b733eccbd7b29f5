"""The benchmark's plain baselines, its Markdown writer and the GPU script's CPU smoke mode (no timing asserts)."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from scrub_unlearning import benchmark as bench
from scrub_unlearning.methods import get_method
from scrub_unlearning.models import build_model, model_spec

ROOT = Path(__file__).resolve().parents[1]
CPU = torch.device("cpu")


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Small models: one torch thread is as fast and does not fight a busy machine's other processes."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


def tiny_spec(splits) -> dict:
    return model_spec("small_cnn", 10, splits.image_shape, splits.mean, splits.std)


@pytest.mark.parametrize("config", [
    dict(optimizer="sgd", lr=0.05, momentum=0.9, weight_decay=5e-4, epochs=2, batch_size=64, schedule="cosine"),
    dict(optimizer="adam", lr=1e-3, weight_decay=0.0, epochs=2, batch_size=50, schedule="step",
         lr_decay_epochs=[1]),
])
def test_plain_train_runs_and_learns(digits_splits, digits_training_set, config):
    x, y = digits_training_set.x[:300], digits_training_set.labels[:300]
    torch.manual_seed(0)
    model = build_model(tiny_spec(digits_splits))
    info = bench.plain_train(model, x, y, config, CPU, seed=1)
    assert info["steps"] == 2 * math.ceil(300 / config["batch_size"])
    assert info["images"] == 600
    assert all(math.isfinite(loss) for loss in info["losses"])
    assert info["seconds"] > 0 and not model.training
    assert np.mean(info["losses"][-3:]) < np.mean(info["losses"][:3])  # it trains


def test_plain_train_stops_after_max_steps(digits_splits, digits_training_set):
    torch.manual_seed(0)
    model = build_model(tiny_spec(digits_splits))
    config = dict(optimizer="sgd", lr=0.01, epochs=5, batch_size=32, schedule="constant")
    info = bench.plain_train(model, digits_training_set.x, digits_training_set.labels, config, CPU, 1, max_steps=3)
    assert info["steps"] == 3 and info["images"] == 96


@pytest.mark.parametrize("application", ["rb_class", "rb_selective"])
def test_plain_scrub_is_the_same_algorithm_as_ours(digits_original, digits_task, digits_splits, application):
    """Same settings, guard off: the plain loop's errors are within a few points of ours (batch orders differ)."""
    task = digits_task(application)
    params = bench.load_parameters("base", ROOT / "conf")
    scenario = params["scenarios"][application]
    settings = {**bench.method_parameters("scrub", params, scenario), "epochs": 3, "max_utility_drop": None}
    before = {k: v.clone() for k, v in digits_original.state_dict().items()}

    plain, info = bench.plain_scrub(digits_original, task, settings, CPU, seed=1)
    ours, _ = get_method("scrub").unlearn(digits_original, task, settings, CPU)

    assert all(torch.equal(v, before[k]) for k, v in digits_original.state_dict().items())  # Original untouched
    assert len(info["max_losses"]) == min(settings["msteps"], 3) * math.ceil(len(task.forget_y) /
                                                                             settings["forget_batch"])
    assert all(math.isfinite(v) for v in info["max_losses"] + info["min_losses"])
    assert info["images"] == bench.scrub_images(task, settings)
    errors_plain = bench.errors(plain, task, digits_splits, CPU, 1)
    errors_ours = bench.errors(ours, task, digits_splits, CPU, 1)
    for column in ("retain_error", "test_error"):
        assert abs(errors_plain[column] - errors_ours[column]) <= 3.0, (column, errors_plain, errors_ours)
    # the forget set is small on digits (30 examples: one example = 3.3 points)
    assert abs(errors_plain["forget_error"] - errors_ours["forget_error"]) <= 7.0, (errors_plain, errors_ours)
    if application == "rb_class":  # both max steps actually forget the class
        assert errors_plain["forget_error"] > 90 and errors_ours["forget_error"] > 90


def test_markdown_writer_replaces_its_section_and_keeps_the_others(tmp_path):
    path = tmp_path / "benchmarks.md"
    bench.write_section(path, "## base — cpu", "first cpu run\n\n```\n## not a heading inside a fence\n```")
    bench.write_section(path, "## cifar10 — cuda: NVIDIA H200", "gpu run\n\n| a | b |\n| --- | ---: |\n| x | 1 |")
    bench.write_section(path, "## base — cpu", "second cpu run")
    text = path.read_text()
    assert text.startswith(bench.TITLE)
    assert text.count("## base — cpu") == 1 and "second cpu run" in text and "first cpu run" not in text
    assert "## not a heading inside a fence" not in text  # the old section went, fence and all
    assert "gpu run" in text and "| x | 1 |" in text
    assert text.index("## base — cpu") < text.index("## cifar10 — cuda")  # replaced in place, order kept
    bench.write_section(path, "## cifar5 — cpu", "another")
    assert bench.replace_section(path.read_text(), "## cifar5 — cpu", "another") == path.read_text()  # idempotent
    headings = [line for line in path.read_text().splitlines() if line.startswith("## ")]
    assert headings == ["## base — cpu", "## cifar10 — cuda: NVIDIA H200", "## cifar5 — cpu"]
    # a code fence holding a "## " line stays inside its section
    bench.write_section(path, "## base — cpu", "fenced\n```\n## inside\n```\nafter")
    _, sections = bench._split_sections(path.read_text())
    assert [h for h, _ in sections] == headings
    assert "## inside" in dict(sections)["## base — cpu"]


def test_markdown_table_and_cells():
    table = bench.markdown_table(["a", "b", "c"], [["x", 1.234, float("nan")], ["y", 12000, True]])
    lines = table.splitlines()
    assert lines[0] == "| a | b | c |" and lines[1] == "| --- | ---: | ---: |"
    assert lines[2] == "| x | 1.23 | n/a |" and lines[3] == "| y | 12,000 | yes |"


def test_configuration_merge_and_method_parameters():
    params = bench.load_parameters("cifar10", ROOT / "conf")
    assert params["splits"]["split_seed"] == 0  # from base
    assert params["training"]["lr"] == 0.02 and params["model"]["width"] == 1.0
    scrub_class = bench.method_parameters("scrub", params, params["scenarios"]["rb_class"])
    assert scrub_class["retain_batch"] == 256 and scrub_class["forget_batch"] == 512 and scrub_class["msteps"] == 2
    assert scrub_class["max_utility_drop"] == 5.0  # base's guard survives the env's block
    assert bench.method_parameters("retrain", params, {}) == params["training"]
    assert bench.method_parameters("eu_k", params, {})["epochs"] == params["training"]["epochs"]
    scaled = bench.scale_epochs(params, 0.2)
    assert scaled["training"]["epochs"] == 2 and scaled["method_params"]["scrub"]["epochs"] == 1
    assert scaled["method_params"]["eu_k"]["epochs"] is None and params["training"]["epochs"] == 10


def _gpu_script():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", ROOT / "scripts" / "gpu_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_gpu_script_settings_mirror_conf_cifar10():
    settings = _gpu_script().CIFAR10
    params = bench.load_parameters("cifar10", ROOT / "conf")
    assert settings["splits"] == params["splits"]
    assert settings["model"] == params["model"]
    assert settings["training"] == params["training"]
    assert settings["scrub"] == params["method_params"]["scrub"]
    for name, scenario in settings["scenarios"].items():
        conf = params["scenarios"][name]
        assert scenario["application"] == conf["application"] and scenario["forget"] == conf["forget"]
        assert scenario.get("method_params", {}).get("scrub", {}) == conf.get("method_params", {}).get("scrub", {})


def test_gpu_script_quick_runs_on_cpu(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny_cifar.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8), y_train=np.arange(300) % 10,
             x_test=rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8), y_test=np.arange(100) % 10)
    out = tmp_path / "gpu_benchmark.md"
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gpu_benchmark.py"), "--npz", str(npz), "--quick", "--device", "cpu",
         "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert "## cifar10 (scripts/gpu_benchmark.py, quick) — cpu" in text
    for phase in ("throughput, batch 256", "| original | ours", "retrain (rb_selective)", "scrub rb_class",
                  "scrub rb_selective | plain", "speed-up ours/plain"):
        assert phase in text, phase
    assert "| phase |" in result.stdout  # the table is printed too
