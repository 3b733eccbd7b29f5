"""The one way to run an unlearning method: the scenario pipelines, the deletion pipeline, the shadows of the attack
and the benchmark all call `run_method` (docs/design.md §3).

It rewinds (a method that reads another's trajectory gets that run's in-memory info), checks the result is finite,
times the run, and turns an exception into a failed `MethodResult` instead of a crashed run (docs/design.md §7).
Generic code reads `status`, `failure`, `seconds`, the model and `row_fields()`; what a method keeps for its own
use (SCRUB's per-epoch weights) stays in `handoff`, which only a method that rewinds it reads.

With a `WeightStore`, a result is stored by content address - the method, its parameters, its code, the original's
weights, the task's data and seed, and the rewound run's address - and a later run with the same inputs loads it
instead of unlearning again (a rerun after a kill, or after changing one method's parameters, recomputes only what
changed). A reused result keeps the seconds its computation took and says `reused: true` in its info.
"""

from __future__ import annotations

import hashlib
import inspect
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from functools import cache, partial

import torch
from torch import nn

from ..data import UnlearningTask
from ..models import load_model, state_dict_for_saving
from ..models.store import WeightStore, content_key, weights_digest
from ..progress import StopWork
from ..training import check_finite
from . import METHODS, get_method, run_order

_MODEL, _HANDOFF = "model/", "handoff/"


@dataclass
class MethodResult:
    """One method's run on one task: the unlearned model (None when it failed), its JSON-safe info, its cost, and
    the in-memory info a method that rewinds this one needs (`handoff`)."""

    method: str
    model: nn.Module | None
    info: dict = field(default_factory=dict)
    seconds: float = float("nan")
    failure: str = ""
    handoff: dict | None = field(default=None, repr=False)

    @property
    def ok(self) -> bool:
        return not self.failure

    @property
    def status(self) -> str:
        return "ok" if self.ok else "failed"

    def row_fields(self) -> dict:
        """What belongs in the method's table row besides the metrics: status, failure, seconds and the fields the
        method declares (`Method.row_fields`, e.g. SCRUB's guard)."""
        return {"status": self.status, "failure": self.failure, "seconds": self.seconds,
                **info_row_fields(self.method, self.info)}


def info_row_fields(method: str, info: dict) -> dict:
    """The table fields `method` declares, read from its (saved) info; methods that declare none give {}."""
    registered = METHODS.get(method)
    return {key: info.get(key) for key in registered.row_fields} if registered else {}


def _json_safe(info: dict, in_memory: tuple[str, ...]) -> dict:
    """The info without the keys that never leave the process, with string keys (JSON objects)."""
    return {key: ({str(k): v for k, v in value.items()} if isinstance(value, dict) else value)
            for key, value in info.items() if key not in in_memory}


def failed_result(method: str, reason: str, seconds: float = float("nan")) -> MethodResult:
    """A failed run: no model, NaN metrics downstream, the reason kept."""
    return MethodResult(method, None, {"status": "failed", "failure": reason, "seconds": seconds}, seconds, reason)


def run_method(method: str, original: nn.Module, task: UnlearningTask, params: dict, device: torch.device,
               rewound: MethodResult | None = None, store: WeightStore | None = None) -> MethodResult:
    """Unlearn `task`'s forget set from `original` (never modified) with the registered `method`.

    A method that rewinds another needs that method's result on the same task (`rewound`); its cost is that run's
    plus its own. A method that raises or leaves non-finite weights gives a failed result; `MemoryError` and
    `KeyboardInterrupt` still stop the run. With `store`, a result with the same inputs is loaded instead of
    computed, and a new one is stored (failures are not: they are retried)."""
    registered = get_method(method)
    extra: tuple = ()
    if registered.rewinds:
        if rewound is None or not rewound.ok or rewound.handoff is None:
            return failed_result(method, f"{registered.rewinds} failed, so there is no trajectory to rewind")
        extra = (rewound.handoff,)
    key = result_key(method, original, task, params, rewound) if store is not None else None
    if key is not None and (reused := _load_result(store, key, method, original.spec)) is not None:
        return reused
    start = time.perf_counter()
    try:
        model, info = registered.unlearn(original, task, params, device, *extra)
        check_finite(model, None, method)
    except (MemoryError, StopWork):  # out of memory, or a tuning trial the pruner stopped: not the method's fault
        raise
    except Exception as error:  # a failed method is a result, not a crashed run
        return failed_result(method, f"{type(error).__name__}: {error}", time.perf_counter() - start)
    seconds = time.perf_counter() - start + (rewound.seconds if registered.rewinds else 0.0)
    info = {**info, "status": "ok", "seconds": seconds}
    result = MethodResult(method, model.eval(), _json_safe(info, registered.in_memory), seconds, handoff=info)
    if key is not None:
        result.info["content_key"] = key
        _store_result(store, key, result, registered.in_memory)
    return result


_TRAINING_MODULES = ("scrub_unlearning.training", "scrub_unlearning.models", "scrub_unlearning.pretraining")


def _source_digest(modules: set[str]) -> str:
    digest = hashlib.sha256()
    for name in sorted(modules):
        digest.update(inspect.getsource(sys.modules[name]).encode())
    return digest.hexdigest()[:16]


@cache
def training_code_version() -> str:
    """A digest of the training loop's, the models' and the pre-training's source: part of a trained model's
    content address, so editing them invalidates stored Originals."""
    return _source_digest(set(_TRAINING_MODULES))


@cache
def code_version(method: str) -> str:
    """A digest of the source of everything that decides a method's output: its module, the module of the method
    it rewinds, the training loop, the models and this runner. Editing any of them invalidates stored results."""
    registered = get_method(method)
    modules = {registered.unlearn.__module__, __name__, *_TRAINING_MODULES}
    if registered.rewinds:
        modules.add(get_method(registered.rewinds).unlearn.__module__)
    return _source_digest(modules)


def result_key(method: str, original: nn.Module, task: UnlearningTask, params: dict,
               rewound: MethodResult | None = None) -> str:
    """The content address of `method`'s result on `task` from `original` with `params`."""
    described = {"method": method, "params": params, "code": code_version(method),
                 "original": weights_digest(original.state_dict()), "spec": getattr(original, "spec", None),
                 "rewound": rewound.info.get("content_key") if rewound is not None else None}
    tensors, scalars = [], {}
    for item in fields(task):
        value = getattr(task, item.name)
        if isinstance(value, torch.Tensor):
            tensors.append(value)
        elif item.name == "backbone":
            scalars[item.name] = weights_digest(value) if value else None
        else:
            scalars[item.name] = value
    return content_key({**described, "task": scalars}, *tensors)


def _store_result(store: WeightStore, key: str, result: MethodResult, in_memory: tuple[str, ...]) -> None:
    """The model's weights (and the in-memory fields a rewinding method reads, when they are weights) under `key`."""
    state = {_MODEL + name: tensor for name, tensor in state_dict_for_saving(result.model).items()}
    kept = []
    for name in in_memory:
        value = (result.handoff or {}).get(name)
        if isinstance(value, dict) and all(isinstance(v, dict) and all(isinstance(t, torch.Tensor)
                                                                         for t in v.values()) for v in value.values()):
            for step, weights in value.items():
                for tensor_name, tensor in weights.items():
                    state[f"{_HANDOFF}{name}/{step}/{tensor_name}"] = tensor.detach().to("cpu").contiguous()
            kept.append(name)
    store.put(key, state, {"method": result.method, "info": result.info, "seconds": result.seconds,
                           "handoff": kept})


def _load_result(store: WeightStore, key: str, method: str, spec: dict) -> MethodResult | None:
    """The stored result under `key`, or None (also when a field a rewinding method needs was not storable)."""
    record = store.record(key)
    if record is None or any(name not in record.get("handoff", []) for name in get_method(method).in_memory):
        return None
    state = store.get(key)
    if state is None:
        return None
    model = load_model(spec, {n[len(_MODEL):]: t for n, t in state.items() if n.startswith(_MODEL)}).eval()
    handoff = dict(record["info"])
    for name in record["handoff"]:
        steps: dict = {}
        for full, tensor in state.items():
            if full.startswith(f"{_HANDOFF}{name}/"):
                step, tensor_name = full[len(f"{_HANDOFF}{name}/"):].split("/", 1)
                steps.setdefault(int(step) if step.lstrip("-").isdigit() else step, {})[tensor_name] = tensor
        handoff[name] = dict(sorted(steps.items(), key=lambda item: str(item[0]).zfill(12)))
    info = {**record["info"], "reused": True}
    return MethodResult(method, model, info, float(record["seconds"]), handoff={**handoff, "reused": True})


def run_with_rewound(method: str, original: nn.Module, task: UnlearningTask, params_of: Callable[[str], dict],
                     device: torch.device) -> MethodResult:
    """Run `method`, first running the method it rewinds when it rewinds one (SCRUB+R runs SCRUB first).
    `params_of(name)` gives each method's parameters."""
    result = None
    for name in run_order(method):
        result = run_method(name, original, task, params_of(name), device, result)
    return result


def _run_on_shadow(method: str, params: dict, store: WeightStore | None, model: nn.Module, task: UnlearningTask,
                   device: torch.device, rewound: MethodResult | None = None) -> MethodResult:
    return run_method(method, model, task, params, device, rewound, store)


def unlearner(method: str, params: dict, store: WeightStore | None = None) -> Callable[..., MethodResult]:
    """`method` with its parameters bound, as the attack's shadows call it: `(model, task, device, rewound)`.
    A module-level partial, so a worker process can receive it. With `store`, each shadow's result is reused when
    its inputs did not change."""
    return partial(_run_on_shadow, method, params, store)
