"""The benchmark's reusable parts: timers and peak memory, the machine description, the Markdown writer, the plain
PyTorch baselines (`plain_train`, `plain_scrub`) and the ours-vs-plain comparisons (docs/design.md §6).

Imports nothing beyond torch, numpy and the library, so `scripts/gpu_benchmark.py` uses it on a GPU machine that
has no Kedro, MLflow or OmegaConf. The configuration (Kedro's loader) lives in `benchmarks.config`, the command in
`benchmarks.run`. Methods run through the library's `methods.runner.run_method`, as the pipelines run them.
"""

from __future__ import annotations

import copy
import datetime
import json
import math
import os
import platform
import resource
import shlex
import statistics
import sys
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

from scrub_unlearning import methods
from scrub_unlearning.data import (
    Splits,
    TrainingSet,
    UnlearningTask,
    build_forget_set,
    build_training_set,
    load_dataset,
    make_splits,
    make_task,
)
from scrub_unlearning.evaluation import evaluate_model
from scrub_unlearning.methods.runner import MethodResult, run_method
from scrub_unlearning.models import build_model, model_spec
from scrub_unlearning.training import error_percent, make_optimizer, predict_logits, seed_everything, train_model

ERROR_COLUMNS = ("forget_error", "retain_error", "test_error")
TITLE = "# Benchmarks"
PREAMBLE = (
    "Written by `python -m benchmarks` (run from the repository root; one section per environment and device; a "
    "rerun replaces its own section and keeps the others) and by `scripts/gpu_benchmark.py`. Speed is measured "
    "here, never asserted by tests (docs/design.md §6)."
)


def say(message: str) -> None:
    """A progress line."""
    print(f"[benchmark] {message}", flush=True)


# --------------------------------------------------------------------------------------------------------------
# Timers and memory
# --------------------------------------------------------------------------------------------------------------

def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def process_peak_rss_bytes() -> int:
    """The process's peak resident set size so far (Linux reports KiB, macOS bytes)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak) if sys.platform == "darwin" else int(peak) * 1024


@contextmanager
def measure(device: torch.device) -> Iterator[dict]:
    """Time a phase (perf_counter after a CUDA synchronise) and its peak memory: on CUDA the peak allocated since
    the phase started, on CPU the process's peak RSS (a running maximum for the whole process)."""
    result: dict = {}
    synchronize(device)
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    start = time.perf_counter()
    try:
        yield result
    finally:
        synchronize(device)
        result["seconds"] = time.perf_counter() - start
        result["peak_bytes"] = (torch.cuda.max_memory_allocated(device) if device.type == "cuda"
                                else process_peak_rss_bytes())


def memory_note(device: torch.device) -> str:
    if device.type == "cuda":
        return "peak memory = `torch.cuda.max_memory_allocated()` since the phase started (stats reset before it)"
    return ("peak memory = the process's peak RSS (`ru_maxrss`): a running maximum for the whole process, so it "
            "never goes down from one row to the next")


def format_bytes(n: float | None) -> str:
    if n is None or (isinstance(n, float) and math.isnan(n)):
        return "n/a"
    return f"{n / 2 ** 20:,.0f} MiB" if n >= 2 ** 20 else f"{n / 2 ** 10:,.0f} KiB"


def fmt(value, digits: int = 2) -> str:
    """A table cell: numbers with `digits` decimals, NaN/None as n/a."""
    if value is None:
        return "n/a"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, (int, np.integer)):
        return f"{int(value):,}"
    if isinstance(value, (float, np.floating)):
        return "n/a" if math.isnan(value) else f"{float(value):,.{digits}f}"
    return str(value)


def median(values: Sequence[float]) -> float:
    return float(statistics.median(values)) if values else math.nan


def ratio(numerator: float, denominator: float) -> float:
    if not denominator or math.isnan(numerator) or math.isnan(denominator):
        return math.nan
    return float(numerator) / float(denominator)


# --------------------------------------------------------------------------------------------------------------
# The plain PyTorch baselines (docs/design.md §6): DataLoader over a TensorDataset, fp32 with TF32 off, .item()
# every step
# --------------------------------------------------------------------------------------------------------------

@contextmanager
def plain_precision() -> Iterator[None]:
    """fp32 with TF32 off for cuDNN and matmuls; the previous flags come back afterwards."""
    previous = (torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32)
    torch.backends.cudnn.allow_tf32 = False
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = previous


def plain_train(model: nn.Module, x: torch.Tensor, y: torch.Tensor, config: dict, device: torch.device, seed: int,
                max_steps: int | None = None) -> dict:
    """A textbook training loop with the same recipe as `train_model` (optimizer, lr, schedule, epochs, batch size):
    a DataLoader over a TensorDataset (shuffled by a seeded generator), the batch moved to the device and converted
    to float (the model normalises 0..255 itself), fp32 with TF32 off, `.item()` on the loss every step.
    Cosine: lr = lr0/2 (1 + cos(pi step / total)) per step; step: x0.1 for each `lr_decay_epochs` entry the epoch
    exceeds. `max_steps` stops early (throughput windows). Returns losses, steps, images and seconds."""
    schedule = config.get("schedule", "constant")
    epochs, batch_size = int(config["epochs"]), int(config["batch_size"])
    start = time.perf_counter()
    with plain_precision():
        model = model.to(device)
        model.train()
        loader = DataLoader(TensorDataset(x, y), batch_size=batch_size, shuffle=True,
                            generator=torch.Generator().manual_seed(int(seed)))
        optimizer = make_optimizer(model.parameters(), config)
        total = max(1, epochs * len(loader))
        decay = list(config.get("lr_decay_epochs", []))
        if schedule == "cosine":
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda step: 0.5 * (1 + math.cos(math.pi * step / total)))
        elif schedule == "step":
            scheduler = torch.optim.lr_scheduler.LambdaLR(
                optimizer, lambda epoch: 0.1 ** sum(1 for d in decay if epoch + 1 > d))
        elif schedule == "constant":
            scheduler = None
        else:
            raise ValueError(f"unknown schedule '{schedule}'; allowed are ['constant', 'cosine', 'step']")
        losses: list[float] = []
        images, done = 0, False
        for _ in range(epochs):
            for xb, yb in loader:
                xb, yb = xb.to(device).float(), yb.to(device)
                loss = F.cross_entropy(model(xb), yb)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                if schedule == "cosine":
                    scheduler.step()
                losses.append(loss.item())
                images += len(yb)
                if max_steps is not None and len(losses) >= max_steps:
                    done = True
                    break
            if schedule == "step":
                scheduler.step()
            if done:
                break
    model.eval()
    return {"losses": losses, "steps": len(losses), "images": images, "seconds": time.perf_counter() - start}


def _kl_t(student_logits: torch.Tensor, teacher_logits: torch.Tensor, temperature: float) -> torch.Tensor:
    return F.kl_div(F.log_softmax(student_logits / temperature, dim=1),
                    F.softmax(teacher_logits / temperature, dim=1), reduction="batchmean") * temperature ** 2


def plain_scrub(original: nn.Module, task: UnlearningTask, params: dict, device: torch.device,
                seed: int) -> tuple[nn.Module, dict]:
    """SCRUB as a plain loop (the authors' structure, no guard): DataLoaders for forget and retain, fp32 with TF32
    off, `.item()` every step. For epoch = 1..epochs: lr = lr0 x 0.1 per `lr_decay_epochs` entry the epoch exceeds;
    if epoch <= msteps one pass over the forget set minimising -KL_T(teacher || student); then one pass over the
    retain set minimising gamma CE + alpha KL_T. One optimizer for both. `original` is not modified."""
    temperature, gamma, alpha = float(params["temperature"]), float(params["gamma"]), float(params["alpha"])
    msteps, epochs, base_lr = int(params["msteps"]), int(params["epochs"]), float(params["lr"])
    decay = list(params.get("lr_decay_epochs", []))
    start = time.perf_counter()
    with plain_precision():
        teacher = copy.deepcopy(original).to(device).eval()
        for p in teacher.parameters():
            p.requires_grad_(False)
        student = copy.deepcopy(original).to(device)
        optimizer = make_optimizer(student.parameters(), params)
        forget_loader = DataLoader(TensorDataset(task.forget_x), batch_size=int(params["forget_batch"]),
                                   shuffle=True, generator=torch.Generator().manual_seed(int(seed)))
        retain_loader = DataLoader(TensorDataset(task.retain_x, task.retain_y), batch_size=int(params["retain_batch"]),
                                   shuffle=True, generator=torch.Generator().manual_seed(int(seed) + 1))
        max_losses: list[float] = []
        min_losses: list[float] = []
        images = 0
        for epoch in range(1, epochs + 1):
            lr = base_lr * 0.1 ** sum(1 for d in decay if epoch > d)
            for group in optimizer.param_groups:
                group["lr"] = lr
            student.train()
            if epoch <= msteps:
                for (xb,) in forget_loader:
                    xb = xb.to(device).float()
                    with torch.no_grad():
                        teacher_logits = teacher(xb)
                    loss = -_kl_t(student(xb), teacher_logits, temperature)
                    optimizer.zero_grad()
                    loss.backward()
                    optimizer.step()
                    max_losses.append(loss.item())
                    images += len(xb)
            for xb, yb in retain_loader:
                xb, yb = xb.to(device).float(), yb.to(device)
                with torch.no_grad():
                    teacher_logits = teacher(xb)
                logits = student(xb)
                loss = gamma * F.cross_entropy(logits, yb) + alpha * _kl_t(logits, teacher_logits, temperature)
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                min_losses.append(loss.item())
                images += len(xb)
    student.eval()
    return student, {"seconds": time.perf_counter() - start, "max_losses": max_losses, "min_losses": min_losses,
                     "images": images}


def scrub_images(task: UnlearningTask, params: dict) -> int:
    """Images SCRUB passes through the student: every epoch the retain set, the first `msteps` also the forget set."""
    epochs = int(params["epochs"])
    return epochs * len(task.retain_y) + min(int(params["msteps"]), epochs) * len(task.forget_y)


def model_test_error(model: nn.Module, x: torch.Tensor, y: torch.Tensor, device: torch.device) -> float:
    return error_percent(predict_logits(model, x, device), y)


# --------------------------------------------------------------------------------------------------------------
# Machine description and the Markdown writer
# --------------------------------------------------------------------------------------------------------------

def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine() or "unknown"


def device_name(device: torch.device) -> str:
    if device.type == "cuda":
        return f"cuda: {torch.cuda.get_device_name(device)}"
    return device.type


def machine_lines(device: torch.device) -> list[str]:
    """Bullet lines: CPU model, cores, torch version, device, threads."""
    try:
        usable = len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        usable = os.cpu_count() or 0
    lines = [
        f"- CPU: {cpu_model()}, {os.cpu_count()} cores ({usable} usable by this process)",
        f"- torch {torch.__version__}, Python {platform.python_version()}, {platform.system()} {platform.machine()}",
        f"- device: {device_name(device)}; torch threads: {torch.get_num_threads()}",
    ]
    if device.type == "cuda":
        props = torch.cuda.get_device_properties(device)
        lines.append(f"- GPU memory: {props.total_memory / 2 ** 30:.1f} GiB, {props.multi_processor_count} SMs, "
                     f"CUDA {torch.version.cuda}, cuDNN {torch.backends.cudnn.version()}")
    return lines


def _is_number(value) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, bool)


def markdown_table(headers: Sequence[str], rows: Sequence[Sequence]) -> str:
    """A GitHub-flavoured Markdown table; cells go through `fmt`; numeric columns are right-aligned."""
    cells = [[fmt(c) for c in row] for row in rows]
    align = ["---:" if any(_is_number(row[i]) for row in rows if i < len(row)) else "---"
             for i in range(len(headers))]
    lines = ["| " + " | ".join(headers) + " |", "| " + " | ".join(align) + " |"]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _split_sections(text: str) -> tuple[str, list[tuple[str, str]]]:
    """(preamble, [(heading line, body)]) for the level-2 headings (`## `) of `text`, outside code fences."""
    preamble: list[str] = []
    sections: list[tuple[str, list[str]]] = []
    fenced = False
    for line in text.splitlines():
        if line.startswith("```"):
            fenced = not fenced
        if not fenced and line.startswith("## "):
            sections.append((line.rstrip(), []))
        elif sections:
            sections[-1][1].append(line)
        else:
            preamble.append(line)
    return "\n".join(preamble), [(h, "\n".join(b)) for h, b in sections]


def replace_section(text: str, heading: str, body: str) -> str:
    """`text` with the section under `heading` (a `## ` line) replaced by `body`, or appended when there is none;
    every other section is kept, in order."""
    heading = heading.rstrip()
    if not heading.startswith("## "):
        raise ValueError(f"a section heading must start with '## ', got {heading!r}")
    preamble, sections = _split_sections(text)
    new = (heading, "\n" + body.strip("\n") + "\n")
    if any(h == heading for h, _ in sections):
        sections = [new if h == heading else (h, b) for h, b in sections]
    else:
        sections.append(new)
    parts = [preamble.rstrip("\n")] if preamble.strip() else [f"{TITLE}\n\n{PREAMBLE}"]
    parts += [f"{h}\n\n{b.strip(chr(10))}" for h, b in sections]
    return "\n\n".join(parts) + "\n"


def write_section(path: str | Path, heading: str, body: str) -> Path:
    """Append-or-replace the section `heading` of the Markdown file at `path` (created when missing)."""
    path = Path(path)
    text = path.read_text() if path.is_file() else ""
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_name(path.name + ".partial")
    partial.write_text(replace_section(text, heading, body))
    partial.replace(path)
    return path


def command_line(program: str, argv: Sequence[str]) -> str:
    return " ".join([program, *(shlex.quote(a) for a in argv)])


def now_utc() -> str:
    return datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")



# --------------------------------------------------------------------------------------------------------------
# Parameters, data and evaluation, as the pipeline builds them
# --------------------------------------------------------------------------------------------------------------

def method_parameters(method: str, parameters: dict, scenario: dict) -> dict:
    """`methods.method_parameters` over a whole parameters dict (method_params + training)."""
    return methods.method_parameters(method, parameters.get("method_params") or {}, scenario,
                                     parameters["training"])


def scale_epochs(parameters: dict, scale: float) -> dict:
    """Every `epochs` of the training recipe and of the method blocks (scenario overrides too) times `scale`,
    rounded, at least 1; null stays null. SCRUB's msteps and lr_decay_epochs are left as they are."""
    if scale == 1.0:
        return parameters
    out = copy.deepcopy(parameters)

    def scaled(block: dict | None) -> None:
        if block and block.get("epochs") is not None:
            block["epochs"] = max(1, int(round(float(block["epochs"]) * scale)))

    scaled(out.get("training"))
    for block in (out.get("method_params") or {}).values():
        scaled(block)
    for scenario in (out.get("scenarios") or {}).values():
        for block in (scenario.get("method_params") or {}).values():
            scaled(block)
    return out


def build_data(parameters: dict, seed: int, root: Path | None = None) -> tuple[Splits, TrainingSet, dict]:
    """Splits, the clean training set and the model spec, exactly as the pipeline builds them."""
    dataset = dict(parameters["dataset"])
    if dataset.get("path") and root is not None and not Path(dataset["path"]).is_absolute():
        dataset["path"] = str(root / dataset["path"])
    if dataset.get("root") and root is not None and not Path(dataset["root"]).is_absolute():
        dataset["root"] = str(root / dataset["root"])
    splits = make_splits(load_dataset(dataset), parameters["splits"])
    clean = (parameters.get("training_sets") or {}).get("clean") or {}
    training_set = build_training_set(splits, "clean", clean, seed)
    spec = make_spec(parameters["model"], splits)
    return splits, training_set, spec


def make_spec(model: dict, splits: Splits) -> dict:
    options = {k: v for k, v in model.items() if k != "architecture"}
    return model_spec(model["architecture"], splits.num_classes, splits.image_shape, splits.mean, splits.std,
                      **options)


def scenario_task(splits: Splits, training_set: TrainingSet, scenario: dict, seed: int) -> UnlearningTask:
    table = build_forget_set(training_set, scenario, splits.num_classes, seed)
    return make_task(splits, training_set, table, scenario["application"], seed)


def errors(model: nn.Module, task: UnlearningTask, splits: Splits, device: torch.device, seed: int) -> dict:
    return evaluate_model(model, task, splits.x["test"], splits.y["test"], device, seed)


# --------------------------------------------------------------------------------------------------------------
# Phases (shared with scripts/gpu_benchmark.py)
# --------------------------------------------------------------------------------------------------------------

def compare_training(spec: dict, x: torch.Tensor, y: torch.Tensor, recipe: dict, device: torch.device, seed: int,
                     repeats: int, test: tuple[torch.Tensor, torch.Tensor] | None = None,
                     label: str = "training") -> tuple[list[list], nn.Module, float]:
    """Ours (`train_model`) vs plain (`plain_train`), `repeats` times each (alternating); medians.
    Returns the table rows, our first model (the Original), and the speed-up ours/plain."""
    runs: dict[str, list[dict]] = {"ours": [], "plain": []}
    original = None
    images = int(recipe["epochs"]) * len(y)
    warm_up(spec, x, y, recipe, device, seed)
    for repeat in range(1, repeats + 1):
        for loop in ("ours", "plain"):
            seed_everything(seed)
            model = build_model(spec)
            say(f"{label}: {loop} loop, repeat {repeat}/{repeats} ({recipe['epochs']} epochs, {len(y)} images)")
            with measure(device) as timing:
                if loop == "ours":
                    info = train_model(model, x, y, recipe, device, seed)
                    final_loss = info["epoch_losses"][-1]
                else:
                    info = plain_train(model, x, y, recipe, device, seed)
                    final_loss = float(np.mean(info["losses"][-max(1, math.ceil(len(y) / recipe["batch_size"])):]))
            record = {**timing, "final_loss": final_loss}
            if test is not None:
                record["test_error"] = model_test_error(model, test[0], test[1], device)
            runs[loop].append(record)
            say(f"{label}: {loop} {timing['seconds']:.2f} s ({images / timing['seconds']:,.0f} images/s)")
            if loop == "ours" and original is None:
                original = model
    rows, seconds = [], {}
    for loop, records in runs.items():
        seconds[loop] = median([r["seconds"] for r in records])
        rows.append([loop, seconds[loop], images / seconds[loop], format_bytes(max(r["peak_bytes"] for r in records)),
                     records[0].get("test_error", math.nan), records[0]["final_loss"]])
    return rows, original, ratio(seconds["plain"], seconds["ours"])


def warm_up(spec: dict, x: torch.Tensor, y: torch.Tensor, recipe: dict, device: torch.device, seed: int,
            steps: int = 3) -> None:
    """A few untimed steps of each loop on a throwaway model (lazy initialisation, kernel selection, allocator), so
    the first timed loop does not pay for them."""
    batch = int(recipe["batch_size"])
    n = min(len(y), steps * batch)
    short = {**recipe, "epochs": 1}
    seed_everything(seed)
    train_model(build_model(spec), x[:n], y[:n], short, device, seed)
    seed_everything(seed)
    plain_train(build_model(spec), x[:n], y[:n], short, device, seed)


TRAINING_HEADERS = ["loop", "seconds (median)", "images/s", "peak memory", "test error %", "last-epoch loss"]


def compare_scrub(original: nn.Module, task: UnlearningTask, params: dict, splits: Splits, device: torch.device,
                  seed: int, repeats: int, label: str) -> tuple[list[list], float]:
    """Our SCRUB vs the plain loop with the same settings, guard off for both (`max_utility_drop: None`), so they
    do the same work; `repeats` times each, medians; errors of the first models. Returns rows and ours/plain."""
    params = {**params, "max_utility_drop": None}
    images = scrub_images(task, params)
    runs: dict[str, list[dict]] = {"ours": [], "plain": []}
    for repeat in range(1, repeats + 1):
        for loop in ("ours", "plain"):
            say(f"scrub {label}: {loop} loop, repeat {repeat}/{repeats} ({params['epochs']} epochs, "
                f"{len(task.retain_y)} retain / {len(task.forget_y)} forget)")
            with measure(device) as timing:
                if loop == "ours":
                    model = succeeded(run_method("scrub", original, task, params, device)).model
                else:
                    model, _ = plain_scrub(original, task, params, device, seed)
            record = dict(timing)
            if repeat == 1:
                record.update(errors(model, task, splits, device, seed))
            runs[loop].append(record)
            say(f"scrub {label}: {loop} {timing['seconds']:.2f} s")
    rows, seconds = [], {}
    for loop, records in runs.items():
        seconds[loop] = median([r["seconds"] for r in records])
        rows.append([label, loop, seconds[loop], images / seconds[loop],
                     format_bytes(max(r["peak_bytes"] for r in records)),
                     *(records[0][c] for c in ERROR_COLUMNS)])
    ours, plain = runs["ours"][0], runs["plain"][0]
    rows.append([label, "ours − plain", "", "", "",
                 *(ours[c] - plain[c] for c in ERROR_COLUMNS)])
    return rows, ratio(seconds["plain"], seconds["ours"])


def succeeded(result: MethodResult) -> MethodResult:
    """`result` when the method ran; a comparison cannot go on without its model, so a failure raises."""
    if not result.ok:
        raise RuntimeError(f"{result.method} failed: {result.failure}")
    return result


SCRUB_HEADERS = ["scenario", "loop", "seconds (median)", "images/s", "peak memory", "forget error %",
                 "retain error %", "test error %"]


LEGEND = """\
**Legend.** *ours* = the library (`training.train_model`, `methods.scrub`): data moved to the device once as uint8,
batches as index slices, the loss kept on the device (no `.item()` per step); on CUDA bf16 autocast and
channels_last. *plain* = the textbook loop written in `benchmarks/common.py`: a `DataLoader` over a
`TensorDataset` (seeded shuffle, same batch size), fp32 with TF32 off, `.item()` on the loss every step, same
model, optimizer, schedule and epochs. *speed-up* = plain seconds / ours (> 1: ours is faster). *scale_up* =
Retrain's seconds on `rb_selective` / the method's; SCRUB+R's seconds include the SCRUB run it rewinds (its *own
wall s* is the selection alone). Our SCRUB also scores the validation split after every epoch (its guard and
SCRUB+R's trajectory), which the plain loop does not. *ours − plain*: difference of the errors (points); the two
loops draw batches in different orders, so small differences are expected. Errors are `evaluate_model`'s, in
percent (rb_class: retain/test on the kept classes). Times are one seed, wall-clock, `time.perf_counter()` after a
CUDA synchronise."""


def read_preset(path: str | Path) -> tuple[str, dict]:
    """(environment, parameters) of a preset written by `python -m benchmarks --env <env> --export-preset <path>`."""
    document = json.loads(Path(path).read_text())
    if not isinstance(document, dict) or not isinstance(document.get("parameters"), dict):
        raise ValueError(f"{path} is not a preset written by `python -m benchmarks --export-preset`")
    return str(document.get("env", Path(path).stem)), document["parameters"]
