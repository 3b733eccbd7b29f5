"""Parameter validation shared by every method: one `check_parameters`, rules by parameter name."""

from __future__ import annotations

import math
from collections.abc import Mapping

from ..training import OPTIMIZERS

_POSITIVE_INTS = ("batch_size", "retain_batch", "forget_batch")
_NON_NEGATIVE_INTS = ("epochs", "msteps")
_POSITIVE_FLOATS = ("lr", "temperature")
_NON_NEGATIVE_FLOATS = ("momentum", "weight_decay", "gamma", "alpha")
_UNIT_FLOATS = ("beta", "retain_fraction")
_OPTIONAL_POSITIVE_INTS = ("max_retain_examples",)        # null = no cap
_OPTIONAL_NON_NEGATIVE_FLOATS = ("max_utility_drop",)     # null = off


def _number(method: str, name: str, value) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(float(value)):
        raise ValueError(f"{method}: parameter '{name}' must be a finite number, got {value!r}")
    return float(value)


def _integer(method: str, name: str, value) -> int:
    if isinstance(value, bool) or not isinstance(value, int):
        if not (isinstance(value, float) and value.is_integer()):
            raise ValueError(f"{method}: parameter '{name}' must be an integer, got {value!r}")
    return int(value)


def check_parameters(method: str, params: Mapping | None, defaults: Mapping,
                     required: tuple[str, ...] = ()) -> dict:
    """`defaults` overridden by `params`, validated: unknown names and missing `required` names raise a ValueError
    that lists the allowed names; values are type- and range-checked by name (lr > 0, epochs >= 0, ...)."""
    params = {} if params is None else params
    if not isinstance(params, Mapping):
        raise ValueError(f"{method}: parameters must be a mapping of name -> value, got {type(params).__name__}")
    allowed = list(defaults) + [name for name in required if name not in defaults]
    unknown = sorted(str(name) for name in params if name not in allowed)
    if unknown:
        raise ValueError(f"{method}: unknown parameter(s) {unknown}; allowed are {allowed}")
    missing = [name for name in required if name not in params]
    if missing:
        raise ValueError(f"{method}: missing required parameter(s) {missing}; allowed are {allowed}")
    merged = {**defaults, **params}
    for name, value in merged.items():
        if name == "optimizer":
            if str(value).lower() not in OPTIMIZERS:
                raise ValueError(f"{method}: unknown optimizer {value!r}; allowed are {list(OPTIMIZERS)}")
            merged[name] = str(value).lower()
        elif value is None and (name in _OPTIONAL_POSITIVE_INTS or name in _OPTIONAL_NON_NEGATIVE_FLOATS):
            continue
        elif name in _OPTIONAL_POSITIVE_INTS:
            merged[name] = _integer(method, name, value)
            if merged[name] < 1:
                raise ValueError(f"{method}: parameter '{name}' must be >= 1 or null, got {value!r}")
        elif name in _OPTIONAL_NON_NEGATIVE_FLOATS:
            merged[name] = _number(method, name, value)
            if merged[name] < 0:
                raise ValueError(f"{method}: parameter '{name}' must be >= 0 or null, got {value!r}")
        elif name == "lr_decay_epochs":
            if not isinstance(value, (list, tuple)):
                raise ValueError(f"{method}: parameter 'lr_decay_epochs' must be a list of epochs, got {value!r}")
            merged[name] = [_integer(method, name, v) for v in value]
        elif name in _POSITIVE_INTS or name in _NON_NEGATIVE_INTS:
            merged[name] = _integer(method, name, value)
            low = 1 if name in _POSITIVE_INTS else 0
            if merged[name] < low:
                raise ValueError(f"{method}: parameter '{name}' must be >= {low}, got {value!r}")
        elif name in _POSITIVE_FLOATS or name in _NON_NEGATIVE_FLOATS or name in _UNIT_FLOATS:
            merged[name] = _number(method, name, value)
            if name in _POSITIVE_FLOATS and merged[name] <= 0:
                raise ValueError(f"{method}: parameter '{name}' must be > 0, got {value!r}")
            if name in _NON_NEGATIVE_FLOATS and merged[name] < 0:
                raise ValueError(f"{method}: parameter '{name}' must be >= 0, got {value!r}")
            if name in _UNIT_FLOATS and not 0.0 <= merged[name] <= 1.0:
                raise ValueError(f"{method}: parameter '{name}' must be in [0, 1], got {value!r}")
    return merged
