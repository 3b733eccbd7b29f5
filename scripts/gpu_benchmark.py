#!/usr/bin/env python3
"""A preset's speed on one GPU (cifar10 by default): the library against plain PyTorch loops (docs/design.md §6).

Library-only (torch, numpy, scrub_unlearning's library modules and `benchmarks/common.py`: no Kedro, MLflow,
OmegaConf or PyYAML), so it runs on the lent GPU machine from a plain copy of the tree (no install needed: it puts
`src/` and the repository root on the path). The settings come from a preset JSON written on a machine with Kedro by
`python -m benchmarks --env cifar10 --export-preset benchmarks/presets/cifar10.json` (the environment's parameters
as `kedro run --env cifar10` resolves them):

    python scripts/gpu_benchmark.py --npz data/01_raw/cifar10.npz            # writes $OUT/gpu_benchmark.md
    python scripts/gpu_benchmark.py --npz data/01_raw/cifar10.npz --preset benchmarks/presets/cifar5.json
    python scripts/gpu_benchmark.py --npz /tmp/tiny.npz --quick --device cpu --out /tmp/gpu.md   # smoke test

Phases (each printed as it runs, then one Markdown table):
1. the preset's network (cifar10: PreAct ResNet-18 width 1.0) training throughput at batch 256 over a fixed window
   of steps after a warm-up: ours (`train_model`: bf16 autocast + channels_last on CUDA) vs the plain fp32 loop
   (TF32 off, DataLoader, `.item()` per step);
2. Original and Retrain (rb_selective's retain set) with our loop and the preset's recipe (cifar10: 10 epochs each,
   SGD lr 0.02 cosine, batch 128), Retrain through `methods.runner.run_method`;
3. SCRUB on rb_class and rb_selective with the preset's settings (cifar10: the authors' class row; selective row
   retain batch 32, forget batch 16, 5 epochs, 100 forget examples of class 5), ours vs the plain SCRUB loop, guard
   off for both, with the errors of both models.
Aimed at under 4 minutes on an H100/H200 with the real CIFAR-10 .npz and the cifar10 preset. `--quick`: a tiny
subset, 1 epoch everywhere, a narrow network, so it runs on a CPU in seconds (the test suite runs it that way).
"""

from __future__ import annotations

import argparse
import copy
import os
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path[:0] = [str(ROOT / "src"), str(ROOT)]  # a plain checkout on the lent machine: the library and benchmarks/

import torch  # noqa: E402

from benchmarks import common as bench  # noqa: E402
from scrub_unlearning.data import RawDataset, build_training_set, load_npz_dataset, make_splits  # noqa: E402
from scrub_unlearning.methods.runner import run_method  # noqa: E402
from scrub_unlearning.models import build_model  # noqa: E402
from scrub_unlearning.training import seed_everything, select_device, train_model  # noqa: E402

DEFAULT_PRESET = ROOT / "benchmarks" / "presets" / "cifar10.json"
THROUGHPUT_BATCH = 256
PHASES = ("throughput", "original", "retrain", "scrub_class", "scrub_selective")
QUICK_PER_CLASS = {"train_per_class": 20, "val_per_class": 5, "test_per_class": 10}


def subset(raw: RawDataset, n_train: int, n_test: int) -> RawDataset:
    """The first rows of each part (quick mode; ids become row numbers of the subset)."""
    return RawDataset(raw.name, raw.x_train[:n_train], raw.y_train[:n_train], raw.x_test[:n_test],
                      raw.y_test[:n_test], raw.classes)


def shown(path: str | Path) -> str:
    """`path` relative to the repository root when it lies inside it."""
    path = Path(path).resolve()
    return str(path.relative_to(ROOT)) if path.is_relative_to(ROOT) else str(path)


def settings_for(args: argparse.Namespace) -> tuple[str, dict]:
    """(preset name, parameters): the preset's, with --quick, --width and --epochs applied."""
    name, settings = bench.read_preset(args.preset)
    settings = copy.deepcopy(settings)
    if args.quick:
        settings = bench.scale_epochs(settings, 1e-9)  # every epochs setting 1
        settings["model"]["width"] = 0.125
        settings["scenarios"]["rb_selective"]["forget"]["size"] = 10
        if "train_per_class" in settings["splits"]:  # per-class counts that fit the tiny subset
            settings["splits"].update(QUICK_PER_CLASS)
    if args.width is not None:
        settings["model"]["width"] = args.width
    if args.epochs is not None:
        settings["training"]["epochs"] = args.epochs
    return name, settings


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
    preset, settings = settings_for(args)
    phases = set(args.phases)
    seed = args.seed
    start = time.perf_counter()
    quick = " (quick)" if args.quick else ""
    bench.say(f"{preset} protocol ({shown(args.preset)}) on {bench.device_name(device)}{quick}")

    raw = load_npz_dataset(args.npz)
    if args.quick:
        raw = subset(raw, args.quick_train, args.quick_test)
    splits = make_splits(raw, settings["splits"])
    training_set = build_training_set(splits, "clean", (settings.get("training_sets") or {}).get("clean") or {}, seed)
    spec = bench.make_spec(settings["model"], splits)
    recipe = settings["training"]
    scenarios = {name: settings["scenarios"][name] for name in ("rb_class", "rb_selective")}
    tasks = {name: bench.scenario_task(splits, training_set, scenario, seed) for name, scenario in scenarios.items()}
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
        params = bench.method_parameters("retrain", settings, scenarios["rb_selective"])
        with bench.measure(device) as timing:
            model = bench.succeeded(run_method("retrain", original or build_model(spec), task, params, device)).model
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
        params = bench.method_parameters("scrub", settings, scenarios[scenario])
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
            f"{len(splits.y['test']):,}; model `{spec['architecture']}`"
            + (f" width {spec['width']}" if "width" in spec else "") + "; Original/Retrain "
            f"{recipe['optimizer']} lr {recipe['lr']} {recipe.get('schedule', 'constant')}, "
            f"batch {recipe['batch_size']}, "
            f"{recipe['epochs']} epochs; rb_selective {len(sel.forget_y)} forget; rb_class "
            f"{len(tasks['rb_class'].forget_y):,} forget; preset `{preset}` ({shown(args.preset)}); seed {seed}"
            + (" — QUICK smoke test: tiny subset, narrow network, 1 epoch; the numbers mean nothing" if args.quick
               else "") + f". {bench.memory_note(device)}.", "",
            bench.markdown_table(headers, rows), "", bench.LEGEND]
    heading = f"## {preset} (scripts/gpu_benchmark.py{', quick' if args.quick else ''}) — {bench.device_name(device)}"
    return heading, "\n".join(body)


def parse_args(argv: list[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--npz", required=True, help="the decoded CIFAR-10 .npz (x_train, y_train, x_test, y_test)")
    parser.add_argument("--preset", default=str(DEFAULT_PRESET),
                        help="parameters exported by `python -m benchmarks --env <env> --export-preset PATH` "
                             "(default: benchmarks/presets/cifar10.json)")
    default_out = str(Path(os.environ["OUT"]) / "gpu_benchmark.md") if os.environ.get("OUT") else None
    parser.add_argument("--out", default=default_out, help="Markdown file (default: $OUT/gpu_benchmark.md)")
    parser.add_argument("--device", default="auto", help="auto | cuda | cpu")
    parser.add_argument("--quick", action="store_true", help="tiny subset, 1 epoch, narrow network (CPU smoke test)")
    parser.add_argument("--quick-train", type=int, default=600, help="quick: source training rows kept")
    parser.add_argument("--quick-test", type=int, default=200, help="quick: test rows kept")
    parser.add_argument("--phases", nargs="+", default=list(PHASES), choices=PHASES)
    parser.add_argument("--throughput-steps", type=int, default=150, help="timed steps of the throughput window")
    parser.add_argument("--warmup-steps", type=int, default=10, help="warm-up steps before the throughput window")
    parser.add_argument("--epochs", type=int, default=None, help="Original/Retrain epochs (default: the preset's)")
    parser.add_argument("--width", type=float, default=None, help="network width (default: the preset's)")
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
