"""The benchmark tool (`benchmarks/`, beside the library): its plain baselines, its Markdown writer, its configuration
(Kedro's own loader), methods run through the library's runner, the preset export and the GPU script's CPU smoke
mode (no timing asserts)."""

from __future__ import annotations

import importlib.util
import math
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from benchmarks import common as bench
from benchmarks import config, run
from scrub_unlearning.methods.runner import run_method
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
    params = config.load_parameters("base", ROOT)
    scenario = params["scenarios"][application]
    settings = {**bench.method_parameters("scrub", params, scenario), "epochs": 3, "max_utility_drop": None}
    before = {k: v.clone() for k, v in digits_original.state_dict().items()}

    plain, info = bench.plain_scrub(digits_original, task, settings, CPU, seed=1)
    ours = run_method("scrub", digits_original, task, settings, CPU).model

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
    params = config.load_parameters("cifar10", ROOT)
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


@pytest.mark.filterwarnings("ignore:register_new_resolver:UserWarning")
def test_configuration_is_kedros_for_the_test_env():
    """The benchmark reads what `kedro run --env test` reads: Kedro's loader with the project's settings (soft merge
    of single keys over base, `${globals:...}` resolved per environment)."""
    from scrub_unlearning.settings import CONFIG_LOADER_ARGS, CONFIG_LOADER_CLASS

    params = config.load_parameters("test", ROOT)
    assert params == CONFIG_LOADER_CLASS(str(ROOT / "conf"), env="test", **CONFIG_LOADER_ARGS)["parameters"]
    assert "tuned_base" not in params, "base's tuned block is not the test environment's"
    scrub = params["method_params"]["scrub"]
    assert scrub["epochs"] == 5 and scrub["lr_decay_epochs"] == [3, 4]  # from conf/test
    assert scrub["optimizer"] == "sgd" and scrub["max_utility_drop"] == 5.0  # kept from base (soft merge)
    selective = params["scenarios"]["rb_selective"]
    assert selective["method_params"]["neggrad"] == {"lr": 1e6}  # conf/test's `1.0e+6` is a float
    assert selective["forget"] == {"class_id": 5, "size": 30} and selective["application"] == "rb_selective"
    assert params["training"]["epochs"] == 8 and params["training"]["lr"] == 0.1
    assert params["deletion_request"]["ledger_path"] == "data/test/08_reporting/deletion_ledger.jsonl"
    assert config.load_parameters("base", ROOT)["method_params"]["scrub"]["epochs"] == 10  # base alone
    with pytest.raises(ValueError, match="unknown environment 'nope'"):
        config.load_parameters("nope", ROOT)


def test_a_failed_method_is_a_failed_row(digits_original, digits_splits, digits_training_set):
    """conf/test makes NegGrad diverge on rb_selective (lr 1e6): the runner's failure is the row, the others go on;
    SCRUB+R without a SCRUB run fails the same way."""
    params = config.load_parameters("test", ROOT)
    scenario = params["scenarios"]["rb_selective"]
    task = bench.scenario_task(digits_splits, digits_training_set, scenario, 1)
    runs = [("rb_selective", "neggrad", bench.method_parameters("neggrad", params, scenario)),
            ("rb_selective", "scrub_r", bench.method_parameters("scrub_r", params, scenario)),
            ("rb_selective", "cf_k", {**bench.method_parameters("cf_k", params, scenario), "epochs": 1})]
    assert runs[0][2]["lr"] == 1e6 and runs[0][2]["epochs"] == 5
    rows, totals = run.run_methods(digits_original, {"rb_selective": task}, runs, digits_splits, CPU, 1)
    neggrad, scrub_r, cf_k = rows
    assert neggrad["status"] == "failed" and "DivergenceError" in neggrad["failure"]
    assert scrub_r["status"] == "failed" and "scrub" in scrub_r["failure"]
    assert math.isnan(neggrad["scale_up"]) and "forget_error" not in neggrad
    assert cf_k["status"] == "ok" and cf_k["seconds"] > 0 and 0 <= cf_k["test_error"] <= 100
    assert totals["models"] == 1
    table = bench.markdown_table(run.METHOD_HEADERS, run.method_table_rows(rows))
    assert "| rb_selective | neggrad | failed: DivergenceError" in table


def test_cli_writes_its_section_and_exports_presets(tmp_path):
    out = tmp_path / "bench.md"
    argv = ["--env", "test", "--epochs-scale", "0.125", "--methods", "cf_k", "--threads", "1", "--out", str(out),
            "--project-root", str(ROOT)]
    assert run.main(argv) == 0
    text = out.read_text()
    assert text.startswith(bench.TITLE) and "## test — cpu" in text
    assert "Command: `python -m benchmarks --env test --epochs-scale 0.125" in text
    for heading in ("### Original training: ours vs plain", "### Retrain and every method",
                    "### SCRUB: ours vs plain (guard off for both)", "### Evaluation"):
        assert heading in text, heading
    assert "| rb_selective | retrain | ok |" in text and "| rb_selective | cf_k | ok |" in text
    assert "| rb_class | scrub | ok |" in text

    preset = tmp_path / "test.json"
    assert run.main(["--env", "test", "--export-preset", str(preset), "--project-root", str(ROOT)]) == 0
    assert bench.read_preset(preset) == ("test", config.load_parameters("test", ROOT))
    with pytest.raises(SystemExit):
        run.parse_args(["--methods", "scrub_r"])  # SCRUB+R rewinds SCRUB's run


@pytest.mark.parametrize("env", ["cifar5", "cifar10"])
def test_committed_presets_are_current(env):
    """benchmarks/presets/<env>.json is what the loader gives now; if conf/ changed, re-export it:
    python -m benchmarks --env <env> --export-preset benchmarks/presets/<env>.json"""
    assert bench.read_preset(ROOT / "benchmarks" / "presets" / f"{env}.json") == (
        env, config.load_parameters(env, ROOT))


BLOCKED = """
import importlib.abc, runpy, sys
class Block(importlib.abc.MetaPathFinder):  # as on the lent GPU machine: none of these is installed
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in {"kedro", "kedro_datasets", "kedro_mlflow", "mlflow", "omegaconf", "yaml"}:
            raise ModuleNotFoundError(f"blocked: {name}")
sys.meta_path.insert(0, Block())
sys.argv = sys.argv[1:]
runpy.run_path(sys.argv[0], run_name="__main__")
"""


def test_gpu_script_quick_runs_on_cpu_without_kedro(tmp_path):
    rng = np.random.default_rng(0)
    npz = tmp_path / "tiny_cifar.npz"
    np.savez(npz, x_train=rng.integers(0, 256, (300, 32, 32, 3), dtype=np.uint8), y_train=np.arange(300) % 10,
             x_test=rng.integers(0, 256, (100, 32, 32, 3), dtype=np.uint8), y_test=np.arange(100) % 10)
    out = tmp_path / "gpu_benchmark.md"
    result = subprocess.run(
        [sys.executable, "-c", BLOCKED, str(ROOT / "scripts" / "gpu_benchmark.py"), "--npz", str(npz), "--quick",
         "--device", "cpu", "--threads", "1", "--out", str(out)],
        capture_output=True, text=True, timeout=300, cwd=tmp_path,
    )
    assert result.returncode == 0, result.stderr[-3000:]
    text = out.read_text()
    assert "## cifar10 (scripts/gpu_benchmark.py, quick) — cpu" in text
    assert "preset `cifar10` (benchmarks/presets/cifar10.json)" in text
    for phase in ("throughput, batch 256", "| original | ours", "retrain (rb_selective)", "scrub rb_class",
                  "scrub rb_selective | plain", "speed-up ours/plain"):
        assert phase in text, phase
    assert "| phase |" in result.stdout  # the table is printed too


def test_gpu_script_reads_a_preset():
    script = _gpu_script()
    args = script.parse_args(["--npz", "x.npz", "--quick", "--preset", str(ROOT / "benchmarks/presets/cifar5.json")])
    name, settings = script.settings_for(args)
    params = config.load_parameters("cifar5", ROOT)
    assert name == "cifar5" and settings["model"] == {**params["model"], "width": 0.125}
    assert settings["training"] == {**params["training"], "epochs": 1}
    assert settings["method_params"]["scrub"] == {**params["method_params"]["scrub"], "epochs": 1}
    assert settings["splits"]["train_per_class"] == script.QUICK_PER_CLASS["train_per_class"]
    args = script.parse_args(["--npz", "x.npz"])
    assert script.settings_for(args) == ("cifar10", config.load_parameters("cifar10", ROOT))


def _gpu_script():
    spec = importlib.util.spec_from_file_location("gpu_benchmark", ROOT / "scripts" / "gpu_benchmark.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
