"""Speed benchmark of the library against plain PyTorch loops, written as a Markdown table (docs/design.md §6).

    python -m benchmarks --env cifar5 --out docs/benchmarks.md [--device auto] [--epochs-scale 1.0]
    python -m benchmarks --env cifar10 --export-preset benchmarks/presets/cifar10.json

Run from the repository root. It reads the `conf/base` + `conf/<env>` parameters through Kedro's `OmegaConfigLoader`
with the project's settings (`benchmarks.config`), builds the data as the pipeline does (load_dataset, make_splits,
the `clean` training set) and times, on one seed:

- the Original's training with OUR loop (`training.train_model`) and with a PLAIN PyTorch loop (`plain_train`:
  a DataLoader over a TensorDataset, fp32 with TF32 off, `.item()` on the loss every step);
- Retrain and every registered method on `rb_selective` (SCRUB+R from that SCRUB run), SCRUB on `rb_class`, each
  through `methods.runner.run_method` (a method that fails is a failed row): seconds and scale_up = Retrain's
  seconds / the method's;
- SCRUB by OUR implementation vs a PLAIN SCRUB loop (`plain_scrub`), guard off for both, with both models' errors;
- `evaluate_model` over the methods' models vs the summed unlearning seconds;
- optionally (`--ulira-workers N`) U-LiRA (`evaluation.attack.ulira_attack`) on the same shadows, sequential vs a
  pool of N processes.

The file holds one section per (env, device): a rerun replaces its own section and keeps the others.
`--export-preset PATH` writes the environment's resolved parameters as JSON instead (for `scripts/gpu_benchmark.py`,
which runs where Kedro is not installed). Speed is reported, never asserted.
"""

from __future__ import annotations

import argparse
import copy
import dataclasses
import math
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch import nn

from scrub_unlearning.data import Splits, TrainingSet, UnlearningTask, build_forget_set, make_task
from scrub_unlearning.evaluation.attack import prepare_shadows, ulira_attack
from scrub_unlearning.evaluation.shadows import ShadowStore
from scrub_unlearning.methods import METHODS, check_method_names, get_method, rewinders_of
from scrub_unlearning.methods.runner import MethodResult, run_method, unlearner
from scrub_unlearning.training import select_device

from . import config
from .common import (
    ERROR_COLUMNS,
    LEGEND,
    SCRUB_HEADERS,
    TRAINING_HEADERS,
    build_data,
    command_line,
    compare_scrub,
    compare_training,
    device_name,
    errors,
    fmt,
    format_bytes,
    machine_lines,
    markdown_table,
    measure,
    memory_note,
    method_parameters,
    now_utc,
    ratio,
    say,
    scale_epochs,
    scenario_task,
    write_section,
)

PROGRAM = "python -m benchmarks"


def run_methods(original: nn.Module, tasks: dict[str, UnlearningTask], runs: list[tuple[str, str, dict]],
                splits: Splits, device: torch.device, seed: int) -> tuple[list[dict], dict]:
    """Run (scenario, method, params) in order through `run_method` (timed, its peak memory measured), then
    evaluate each model (timed separately). A failed method is a failed row and the rest go on; a method that
    rewinds another reads that method's result on the same scenario. Returns rows and the evaluation totals."""
    rows: list[dict] = []
    kept: dict[tuple[str, str], MethodResult] = {}
    names = [method for _, method, _ in runs]
    retrain_seconds: dict[str, float] = {}
    evaluation_seconds = unlearning_seconds = 0.0
    evaluated = 0
    for scenario, method, params in runs:
        registered = get_method(method)
        task = tasks[scenario]
        rewound = kept.get((scenario, registered.rewinds)) if registered.rewinds else None
        say(f"{scenario}: {method} ...")
        with measure(device) as timing:
            result = run_method(method, original, task, params, device, rewound)
        row = {"scenario": scenario, "method": method, **result.row_fields(), "wall_seconds": timing["seconds"],
               "peak_bytes": timing["peak_bytes"]}
        if not result.ok:
            say(f"{scenario}: {method} failed: {result.failure}")
            rows.append(row)
            continue
        if rewinders_of(method, names):  # keep what a rewinder reads (the handoff), not the model
            kept[(scenario, method)] = dataclasses.replace(result, model=None)
        if method == "retrain":
            retrain_seconds[scenario] = result.seconds
        with measure(device) as evaluation:
            metrics = errors(result.model, task, splits, device, seed)
        evaluation_seconds += evaluation["seconds"]
        unlearning_seconds += timing["seconds"]
        evaluated += 1
        rows.append({**row, "evaluation_seconds": evaluation["seconds"], **metrics})
        say(f"{scenario}: {method} {timing['seconds']:.2f} s, evaluated in {evaluation['seconds']:.2f} s")
    reference = retrain_seconds.get("rb_selective", math.nan)
    for row in rows:
        row["scale_up"] = ratio(reference, row["seconds"]) if row["status"] == "ok" else math.nan
    totals = {"models": evaluated, "evaluation_seconds": evaluation_seconds, "unlearning_seconds": unlearning_seconds}
    return rows, totals


METHOD_HEADERS = ["scenario", "method", "status", "seconds", "own wall s", "scale_up", "peak memory",
                  "forget error %", "retain error %", "test error %", "guard fired"]


def method_table_rows(rows: list[dict]) -> list[list]:
    out = []
    for r in rows:
        status = r["status"] if r["status"] == "ok" else f"failed: {r['failure']}"[:80]
        out.append([r["scenario"], r["method"], status, r.get("seconds", math.nan), r.get("wall_seconds", math.nan),
                    r.get("scale_up", math.nan), format_bytes(r.get("peak_bytes")),
                    *(r.get(c, math.nan) for c in ERROR_COLUMNS), bool(r.get("guard_fired") or False)])
    return out


def ulira_comparison(parameters: dict, splits: Splits, training_set: TrainingSet, spec: dict,
                     device: torch.device, seed: int, workers: int, method: str, num_shadows: int | None) -> list:
    """U-LiRA against `method` on the `up` scenario: the same shadows (trained once, by a pool, into a temporary
    store) unlearned sequentially and by a pool of `workers` processes, through `ulira_attack`."""
    scenarios = parameters["scenarios"]
    scenario = scenarios.get("up") or {**scenarios["rb_selective"], "application": "up"}
    ulira = parameters.get("ulira") or {}
    forget_table = build_forget_set(training_set, scenario, splits.num_classes, seed)
    template = make_task(splits, training_set, forget_table, scenario["application"], seed)
    forget_ids = torch.as_tensor(forget_table["id"].to_numpy().copy())
    k = int(num_shadows or ulira.get("num_shadows", 16))
    params = method_parameters(method, parameters, scenario)
    bootstrap = int(ulira.get("bootstrap", 1000))
    with tempfile.TemporaryDirectory(prefix="scrub-bench-shadows-") as folder:
        say(f"u-lira: training {k} shadows with {workers} workers (temporary store)")
        with measure(device) as training:
            shadows, _ = prepare_shadows(training_set, forget_ids, template.forget_classes, spec,
                                         parameters["training"], ShadowStore(folder), device, num_shadows=k,
                                         seed=seed, pool_size=ulira.get("pool_size"), workers=workers, progress=say)
    results = {}
    for n in (0, workers):
        say(f"u-lira: unlearning {k} shadows with {method}, {'sequential' if n == 0 else f'{n} workers'}")
        with measure(device) as timing:
            attack = ulira_attack(shadows, training_set, template, unlearner(method, params), device, seed=seed,
                                  bootstrap=bootstrap, workers=n, name=method)
        if not attack.ok:
            say(f"u-lira: {attack.failure}")
        results[n] = (timing["seconds"], attack.phi)
        say(f"u-lira: {timing['seconds']:.2f} s")
    sequential, pool = results[0][1], results[workers][1]
    difference = (float(np.nanmax(np.abs(sequential - pool))) if sequential is not None and pool is not None
                  else math.nan)
    return [[method, k, training["seconds"], results[0][0], results[workers][0], workers,
             ratio(results[0][0], results[workers][0]), difference]]


ULIRA_HEADERS = ["method", "shadows", "shadow training s (pool)", "unlearning s, sequential", "unlearning s, pool",
                 "workers", "speed-up", "max |Δφ| seq vs pool"]


def run_benchmark(args: argparse.Namespace, argv: Sequence[str]) -> tuple[str, str]:
    """Run every phase; returns (section heading, section body)."""
    root = Path(args.project_root) if args.project_root else config.find_project_root()
    parameters = config.load_parameters(args.env, root)
    parameters = scale_epochs(parameters, args.epochs_scale)
    threads = args.threads or (parameters.get("runtime") or {}).get("num_threads")
    if threads:
        torch.set_num_threads(int(threads))
    device = select_device(args.device or (parameters.get("runtime") or {}).get("device", "auto"))
    seed = int(args.seed)
    scenarios = copy.deepcopy(parameters["scenarios"])
    if args.scenario_size is not None:
        for name in ("rb_selective", "up"):
            if name in scenarios:
                scenarios[name]["forget"] = {**scenarios[name].get("forget", {}), "size": int(args.scenario_size)}
    parameters["scenarios"] = scenarios
    say(f"env {args.env} on {device_name(device)}, {torch.get_num_threads()} threads")

    splits, training_set, spec = build_data(parameters, seed, root)
    recipe = parameters["training"]
    say(f"data: train {len(splits.y['train'])}, val {len(splits.y['val'])}, test {len(splits.y['test'])}; "
        f"model {spec['architecture']}")
    test = (splits.x["test"], splits.y["test"])

    body = [f"Command: `{command_line(PROGRAM, argv)}`", "",
            f"Date: {now_utc()}", "", "Machine:", "", *machine_lines(device), "",
            f"Data and settings: `{args.env}` — train {len(splits.y['train']):,}, validation "
            f"{len(splits.y['val']):,}, test {len(splits.y['test']):,} images of shape {tuple(splits.image_shape)}; "
            f"model `{spec['architecture']}`" + (f" width {spec['width']}" if "width" in spec else "")
            + f"; Original recipe {recipe['optimizer']} lr {recipe['lr']} {recipe.get('schedule', 'constant')}, "
            f"batch {recipe['batch_size']}, {recipe['epochs']} epochs; seed {seed}; epochs scale "
            f"{args.epochs_scale}; repeats {args.repeats}. {memory_note(device)}.", ""]

    # 1. the Original: ours vs plain
    rows, original, speedup = compare_training(spec, training_set.x, training_set.labels, recipe, device, seed,
                                               args.repeats, test, label="original")
    body += ["### Original training: ours vs plain", "", markdown_table(TRAINING_HEADERS, rows), "",
             f"Speed-up ours/plain: **{fmt(speedup)}×** (median of {args.repeats}).", ""]

    # 2-3. Retrain and every method on rb_selective, SCRUB on rb_class
    tasks = {name: scenario_task(splits, training_set, scenarios[name], seed)
             for name in ("rb_selective", "rb_class") if name in scenarios}
    names = args.methods or list(METHODS)
    names = ["retrain"] + [n for n in names if n != "retrain"]
    runs = [("rb_selective", n, method_parameters(n, parameters, scenarios["rb_selective"])) for n in names]
    if "rb_class" in tasks:
        runs.append(("rb_class", "scrub", method_parameters("scrub", parameters, scenarios["rb_class"])))
    method_rows, totals = run_methods(original, tasks, runs, splits, device, seed)
    selective = tasks["rb_selective"]
    body += ["### Retrain and every method", "",
             f"`rb_selective`: {len(selective.forget_y)} forget / {len(selective.retain_y):,} retain examples"
             + (f"; `rb_class`: {len(tasks['rb_class'].forget_y):,} forget" if "rb_class" in tasks else "")
             + ". Settings as configured (SCRUB's guard as configured).", "",
             markdown_table(METHOD_HEADERS, method_table_rows(method_rows)), ""]

    # 4. SCRUB: ours vs plain, guard off
    scrub_rows, speedups = [], {}
    for name, task in tasks.items():
        params = method_parameters("scrub", parameters, scenarios[name])
        rows, speedups[name] = compare_scrub(original, task, params, splits, device, seed, args.repeats, name)
        scrub_rows += rows
    body += ["### SCRUB: ours vs plain (guard off for both)", "", markdown_table(SCRUB_HEADERS, scrub_rows), "",
             "Speed-up ours/plain: " + ", ".join(f"{n} **{fmt(s)}×**" for n, s in speedups.items())
             + f" (median of {args.repeats}).", ""]

    # 5. evaluation vs unlearning
    share = ratio(totals["evaluation_seconds"], totals["unlearning_seconds"])
    body += ["### Evaluation", "",
             markdown_table(["models", "evaluate_model s (sum)", "unlearning s (sum)", "evaluation / unlearning",
                             "target"],
                            [[totals["models"], totals["evaluation_seconds"], totals["unlearning_seconds"],
                              f"{fmt(100 * share, 1)}%", "< 10%"]]), ""]

    # 6. optional: U-LiRA's shadow unlearning, sequential vs a pool
    if args.ulira_workers:
        rows = ulira_comparison(parameters, splits, training_set, spec, device, seed, args.ulira_workers,
                                args.ulira_method, args.ulira_shadows)
        bootstrap = int((parameters.get("ulira") or {}).get("bootstrap", 1000))
        body += ["### U-LiRA shadow unlearning: sequential vs a worker pool", "",
                 "`evaluation.attack.ulira_attack(..., workers=N)` on the `up` scenario, the same shadows: N spawned "
                 "single-threaded processes unlearn them vs the sequential loop in this process "
                 f"(torch threads: {torch.get_num_threads()}); both times include the attack's scoring "
                 f"({bootstrap} bootstrap resamples). Pool times include starting the spawned processes (each "
                 "imports torch and the library), as the pipeline's `ulira.workers` pays them.", "",
                 markdown_table(ULIRA_HEADERS, rows), ""]

    body += [LEGEND]
    heading = f"## {args.env} — {device_name(device)}"
    return heading, "\n".join(body)


def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog=PROGRAM, description=__doc__.split("\n")[0])
    parser.add_argument("--env", default="base", help="configuration environment: conf/base + conf/<env>")
    parser.add_argument("--out", default="docs/benchmarks.md", help="Markdown file (one section per env and device)")
    parser.add_argument("--export-preset", default=None, metavar="PATH",
                        help="write the environment's resolved parameters (Kedro's OmegaConfigLoader) as JSON to "
                             "PATH and exit, without benchmarking (read by scripts/gpu_benchmark.py --preset)")
    parser.add_argument("--device", default=None, help="auto | cpu | cuda (default: runtime.device, else auto)")
    parser.add_argument("--epochs-scale", type=float, default=1.0,
                        help="multiply every epochs setting (training recipe and methods) by this, at least 1")
    parser.add_argument("--scenario-size", type=int, default=None,
                        help="forget-set size of rb_selective (and up) instead of the configured one")
    parser.add_argument("--repeats", type=int, default=1, help="repeats of the two ours-vs-plain comparisons")
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--threads", type=int, default=None, help="torch threads (default: runtime.num_threads)")
    parser.add_argument("--methods", nargs="+", default=None, choices=sorted(METHODS),
                        help="methods to time on rb_selective (default: every registered method)")
    parser.add_argument("--ulira-workers", type=int, default=0,
                        help="also time U-LiRA's shadow unlearning sequential vs N workers (sensible on digits)")
    parser.add_argument("--ulira-method", default="scrub", choices=sorted(m for m, r in METHODS.items()
                                                                           if not r.rewinds))
    parser.add_argument("--ulira-shadows", type=int, default=None, help="number of shadows (default: ulira config)")
    parser.add_argument("--project-root", default=None, help="folder holding conf/ (default: found)")
    args = parser.parse_args(argv)
    if args.repeats < 1:
        parser.error("--repeats must be >= 1")
    if args.epochs_scale <= 0:
        parser.error("--epochs-scale must be > 0")
    if args.methods:
        try:
            check_method_names(args.methods)
        except ValueError as error:
            parser.error(str(error))
    return args


def main(argv: Sequence[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = parse_args(argv)
    if args.export_preset:
        path = config.export_preset(args.env, args.export_preset, args.project_root)
        say(f"wrote the resolved parameters of '{args.env}' to {path}")
        return 0
    heading, body = run_benchmark(args, argv)
    path = write_section(args.out, heading, body)
    say(f"wrote section '{heading[3:]}' of {path}")
    return 0
