"""The one way to run an unlearning method: the scenario pipelines, the deletion pipeline, the shadows of the attack
and the benchmark all call `run_method` (docs/design.md §3).

It rewinds (a method that reads another's trajectory gets that run's in-memory info), checks the result is finite,
times the run, and turns an exception into a failed `MethodResult` instead of a crashed run (docs/design.md §7).
Generic code reads `status`, `failure`, `seconds`, the model and `row_fields()`; what a method keeps for its own
use (SCRUB's per-epoch weights) stays in `handoff`, which only a method that rewinds it reads.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial

import torch
from torch import nn

from ..data import UnlearningTask
from ..training import check_finite
from . import METHODS, get_method, run_order


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
               rewound: MethodResult | None = None) -> MethodResult:
    """Unlearn `task`'s forget set from `original` (never modified) with the registered `method`.

    A method that rewinds another needs that method's result on the same task (`rewound`); its cost is that run's
    plus its own. A method that raises or leaves non-finite weights gives a failed result; `MemoryError` and
    `KeyboardInterrupt` still stop the run."""
    registered = get_method(method)
    extra: tuple = ()
    if registered.rewinds:
        if rewound is None or not rewound.ok or rewound.handoff is None:
            return failed_result(method, f"{registered.rewinds} failed, so there is no trajectory to rewind")
        extra = (rewound.handoff,)
    start = time.perf_counter()
    try:
        model, info = registered.unlearn(original, task, params, device, *extra)
        check_finite(model, None, method)
    except MemoryError:
        raise
    except Exception as error:  # a failed method is a result, not a crashed run
        return failed_result(method, f"{type(error).__name__}: {error}", time.perf_counter() - start)
    seconds = time.perf_counter() - start + (rewound.seconds if registered.rewinds else 0.0)
    info = {**info, "status": "ok", "seconds": seconds}
    return MethodResult(method, model.eval(), _json_safe(info, registered.in_memory), seconds, handoff=info)


def run_with_rewound(method: str, original: nn.Module, task: UnlearningTask, params_of: Callable[[str], dict],
                     device: torch.device) -> MethodResult:
    """Run `method`, first running the method it rewinds when it rewinds one (SCRUB+R runs SCRUB first).
    `params_of(name)` gives each method's parameters."""
    result = None
    for name in run_order(method):
        result = run_method(name, original, task, params_of(name), device, result)
    return result


def _run_on_shadow(method: str, params: dict, model: nn.Module, task: UnlearningTask, device: torch.device,
                   rewound: MethodResult | None = None) -> MethodResult:
    return run_method(method, model, task, params, device, rewound)


def unlearner(method: str, params: dict) -> Callable[..., MethodResult]:
    """`method` with its parameters bound, as the attack's shadows call it: `(model, task, device, rewound)`.
    A module-level partial, so a worker process can receive it."""
    return partial(_run_on_shadow, method, params)
