#!/usr/bin/env python3
"""The cifar10 protocol's speed on one GPU: the library against plain PyTorch loops (DESIGN §6).

Library-only (torch, numpy and scrub_unlearning's library modules: no Kedro, MLflow or PyYAML), so it runs on the
lent GPU machine from a plain copy of the tree (no install needed: it puts `src/` on the path):

    python scripts/gpu_benchmark.py --npz data/01_raw/cifar10.npz            # writes $OUT/gpu_benchmark.md
    python scripts/gpu_benchmark.py --npz /tmp/tiny.npz --quick --device cpu --out /tmp/gpu.md   # smoke test

Phases (each printed as it runs, then one Markdown table):
1. PreAct ResNet-18 (width 1.0) training throughput at batch 256 over a fixed window of steps after a warm-up:
   ours (`train_model`: bf16 autocast + channels_last on CUDA) vs the plain fp32 loop (TF32 off, DataLoader,
   `.item()` per step);
2. Original and Retrain (rb_selective's retain set) with our loop: 10 epochs each, SGD lr 0.02 cosine, batch 128;
3. SCRUB on rb_class (the authors' class row) and rb_selective (selective row: retain batch 32, forget batch 16,
   5 epochs, 100 forget examples of class 5), ours vs the plain SCRUB loop, guard off for both, with the errors of
   both models.
Aimed at under 4 minutes on an H100/H200 with the real CIFAR-10 .npz. `--quick`: a tiny subset, 1 epoch, a narrow
network, so it runs on a CPU in seconds (the test suite runs it that way).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))  # a plain checkout on the lent machine

import torch  # noqa: E402

from scrub_unlearning import benchmark as bench  # noqa: E402
from scrub_unlearning.data import (  # noqa: E402
    RawDataset,
    build_training_set,
    load_npz_dataset,
    make_splits,
)
from scrub_unlearning.methods import get_method  # noqa: E402
from scrub_unlearning.models import build_model  # noqa: E402
from scrub_unlearning.training import seed_everything, select_device, train_model  # noqa: E402

# The cifar10 preset as the pipeline sees it: conf/base + conf/cifar10 parameters*.yml merged (base's split_seed
# and the guard's max_utility_drop come from base). Embedded because the lent machine runs without the config
# loader; tests/test_benchmark.py checks that it still mirrors conf/.
CIFAR10 = {
    "splits": {"val_fraction": 0.2, "test_fraction": 0.2, "split_seed": 0,
               "mean": [0.4914, 0.4822, 0.4465], "std": [0.2023, 0.1994, 0.2010]},
    "model": {"architecture": "preact_resnet18", "width": 1.0},
    "training": {"optimizer": "sgd", "lr": 0.02, "momentum": 0.9, "weight_decay": 5.0e-4, "epochs": 10,
                 "batch_size": 128, "schedule": "cosine"},
    "scrub": {"optimizer": "sgd", "lr": 5.0e-4, "weight_decay": 5.0e-4, "momentum": 0.9, "gamma": 1.0, "alpha": 0.5,
              "temperature": 4.0, "msteps": 3, "epochs": 5, "lr_decay_epochs": [3, 5, 9], "retain_batch": 32,
              "forget_batch": 16, "max_utility_drop": 5.0},
    "scenarios": {
        "rb_class": {"application": "rb_class", "training_set": "clean", "forget": {"class_id": 5},
                     "method_params": {"scrub": {"msteps": 2, "forget_batch": 512, "gamma": 0.99, "alpha": 0.001,
                                                 "temperature": 4.0, "epochs": 3, "lr_decay_epochs": [3, 5, 9],
                                                 "retain_batch": 256}}},
        "rb_selective": {"application": "rb_selective", "training_set": "clean",
                         "forget": {"class_id": 5, "size": 100}},
    },
}
THROUGHPUT_BATCH = 256
PHASES = ("throughput", "original", "retrain", "scrub_class", "scrub_selective")


def subset(raw: RawDataset, n_train: int, n_test: int) -> RawDataset:
    """The first rows of each part (quick mode; ids become row numbers of the subset)."""
    return RawDataset(raw.name, raw.x_train[:n_train], raw.y_train[:n_train], raw.x_test[:n_test],
                      raw.y_test[:n_test], raw.classes)


def settings_for(args: argparse.Namespace) -> dict:
    settings = copy.deepcopy(CIFAR10)
    if args.quick:
        settings["model"]["width"] = 0.125
        settings["training"]["epochs"] = 1
        settings["scrub"]["epochs"] = 1
        settings["scenarios"]["rb_class"]["method_params"]["scrub"]["epochs"] = 1
        settings["scenarios"]["rb_selective"]["forget"]["size"] = 10
    if args.width is not None:
        settings["model"]["width"] = args.width
    if args.epochs is not None:
        settings["training"]["epochs"] = args.epochs
    return settings


def scrub_params(settings: dict, scenario: str) -> dict:
    """SCRUB's block with the scenario's override on top (as the pipeline's `method_parameters`)."""
    return {**settings["scrub"], **settings["scenarios"][scenario].get("method_params", {}).get("scrub", {})}


def throughput(spec: dict, x: torch.Tensor, y: torch.Tensor, recipe: dict, device: torch.device, seed: int,
               steps: int, warmup: int) -> list[list]:
    """Images/s of ours vs plain at batch 256 over `steps` steps (one pass over steps x 256 images), after
    `warmup` steps of each loop on the same model (cuDNN autotuning, allocator, lazy init)."""
    recipe = {**recipe, "batch_size": THROUGHPUT_BATCH, "epochs": 1, "schedule": "constant"}
    n = min(len(y), steps * THROUGHPUT_BATCH)
    warm = min(len(y), max(1, warmup) * THROUGHPUT_BATCH)
    rows, seconds = [], {}
    for loop in ("ours", "plain"):
        seed_everything(seed)
        model = build_model(spec)
        train = train_model if loop == "ours" else bench.plain_train
        bench.say(f"throughput: {loop} warm-up ({warm} images)")
        train(model, x[:warm], y[:warm], recipe, device, seed)
        bench.say(f"throughput: {loop} timed window ({n} images, batch {THROUGHPUT_BATCH})")
        with bench.measure(device) as timing:
            train(model, x[:n], y[:n], recipe, device, seed)
        seconds[loop] = timing["seconds"]
        rows.append(["throughput, batch 256", loop, timing["seconds"], n / timing["seconds"],
                     bench.format_bytes(timing["peak_bytes"]), "", "", ""])
        bench.say(f"throughput: {loop} {n / timing['seconds']:,.0f} images/s")
    rows.append(["throughput, batch 256", "speed-up ours/plain", "",
                 bench.ratio(seconds["plain"], seconds["ours"]), "", "", "", ""])
    return rows


def run(args: argparse.Namespace, argv: list[str]) -> tuple[str, str]:
    if args.threads:
        torch.set_num_threads(args.threads)
    device = select_device(args.device)
    settings = settings_for(args)
    phases = set(args.phases)
    seed = args.seed
    start = time.perf_counter()
    bench.say(f"cifar10 protocol on {bench.device_name(device)}{' (quick)' if args.quick else ''}")

    raw = load_npz_dataset(args.npz)
    if args.quick:
        raw = subset(raw, args.quick_train, args.quick_test)
    splits = make_splits(raw, settings["splits"])
    training_set = build_training_set(splits, "clean", {}, seed)
    spec = bench.make_spec(settings["model"], splits)
    recipe = settings["training"]
    tasks = {name: bench.scenario_task(splits, training_set, scenario, seed)
             for name, scenario in settings["scenarios"].items()}
    bench.say(f"data: train {len(splits.y['train'])}, val {len(splits.y['val'])}, test {len(splits.y['test'])}")
    rows: list[list] = []

    if "throughput" in phases:
        steps = 2 if args.quick else args.throughput_steps
        rows += throughput(spec, training_set.x, training_set.labels, recipe, device, seed, steps,
                           1 if args.quick else args.warmup_steps)

    original = None
    if phases & {"original", "scrub_class", "scrub_selective"}:
        seed_everything(seed)
        original = build_model(spec)
        bench.say(f"original: {recipe['epochs']} epochs on {len(training_set.labels)} images (ours)")
        with bench.measure(device) as timing:
            train_model(original, training_set.x, training_set.labels, recipe, device, seed)
        images = recipe["epochs"] * len(training_set.labels)
        test = bench.model_test_error(original, splits.x["test"], splits.y["test"], device)
        rows.append(["original", "ours", timing["seconds"], images / timing["seconds"],
                     bench.format_bytes(timing["peak_bytes"]), "", "", test])
        bench.say(f"original: {timing['seconds']:.1f} s, test error {test:.2f}%")

    if "retrain" in phases:
        task = tasks["rb_selective"]
        bench.say(f"retrain: {recipe['epochs']} epochs on {len(task.retain_y)} retain images (ours)")
        with bench.measure(device) as timing:
            model, _ = get_method("retrain").unlearn(original or build_model(spec), task, dict(recipe),
                                                           device)
        metrics = bench.errors(model, task, splits, device, seed)
        rows.append(["retrain (rb_selective)", "ours", timing["seconds"],
                     recipe["epochs"] * len(task.retain_y) / timing["seconds"],
                     bench.format_bytes(timing["peak_bytes"]),
                     *(metrics[c] for c in bench.ERROR_COLUMNS)])
        bench.say(f"retrain: {timing['seconds']:.1f} s")

    speedups = {}
    for phase, scenario in (("scrub_class", "rb_class"), ("scrub_selective", "rb_selective")):
        if phase not in phases:
            continue
        params = scrub_params(settings, scenario)
        scrub_rows, speedups[scenario] = bench.compare_scrub(original, tasks[scenario], params, splits, device, seed,
                                                             args.repeats, scenario)
        rows += [[f"scrub {r[0]}", *r[1:]] for r in scrub_rows]
        rows.append([f"scrub {scenario}", "speed-up ours/plain", "", speedups[scenario], "", "", "", ""])

    total = time.perf_counter() - start
    sel = tasks["rb_selective"]
    headers = ["phase", "loop", "seconds", "images/s (speed-up rows: ×)", "peak memory", "forget error %",
               "retain error %", "test error %"]
    body = [f"Command: `{bench.command_line('python scripts/gpu_benchmark.py', argv)}`", "",
            f"Date: {bench.now_utc()}; whole script {total:.0f} s.", "", "Machine:", "",
            *bench.machine_lines(device), "",
            f"Data: train {len(splits.y['train']):,}, validation {len(splits.y['val']):,}, test "
            f"{len(splits.y['test']):,}; model PreAct ResNet-18 width {spec['width']}; Original/Retrain "
            f"{recipe['optimizer']} lr {recipe['lr']} {recipe['schedule']}, batch {recipe['batch_size']}, "
            f"{recipe['epochs']} epochs; rb_selective {len(sel.forget_y)} forget; rb_class "
            f"{len(tasks['rb_class'].forget_y):,} forget; seed {seed}"
            + (" — QUICK smoke test: tiny subset, narrow network, 1 epoch; the numbers mean nothing" if args.quick
               else "") + f". {bench.memory_note(device)}.", "",
            bench.markdown_table(headers, rows), "", bench.LEGEND]
    heading = f"## cifar10 (scripts/gpu_benchmark.py{', quick' if args.quick else ''}) — {bench.device_name(device)}"
    return heading, "\n".join(body)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--npz", required=True, help="the decoded CIFAR-10 .npz (x_train, y_train, x_test, y_test)")
    default_out = str(Path(os.environ["OUT"]) / "gpu_benchmark.md") if os.environ.get("OUT") else None
    parser.add_argument("--out", default=default_out, help="Markdown file (default: $OUT/gpu_benchmark.md)")
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu")
    parser.add_argument("--quick", action="store_true", help="tiny subset, 1 epoch, narrow network (CPU smoke test)")
    parser.add_argument("--quick-train", type=int, default=600, help="quick: source training rows kept")
    parser.add_argument("--quick-test", type=int, default=200, help="quick: test rows kept")
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    parser.add_argument("--throughput-steps", type=int, default=150, help="timed steps of the throughput window")
    parser.add_argument("--warmup-steps", type=int, default=10, help="warm-up steps before the throughput window")
    parser.add_argument("--epochs", type=int, default=None, help="Original/Retrain epochs (default: the preset's 10)")
    parser.add_argument("--width", type=float, default=None, help="ResNet-18 width (default: the preset's 1.0)")
    parser.add_argument("--repeats", type=int, default=1, help="repeats of the SCRUB ours-vs-plain comparisons")
    parser.add_argument("--threads", type=int, default=None, help="torch threads")
    parser.add_argument("--seed", type=int, default=1)
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    heading, body = run(args, argv)
    print(f"\n{heading}\n\n{body}\n", flush=True)
    if args.out:
        path = bench.write_section(args.out, heading, body)
        bench.say(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
