"""Parameter declarations: every method (and the Original's training recipe) declares each of its parameters once,
as a `Param` - kind, default (or `REQUIRED`), range, choices, help - and `check_parameters` checks a parameter block
against that declaration, so a new parameter is never silently unchecked; the run's other blocks (`ulira:`,
`registry:`, `deletion_request:`, ...) are declared the same way in `validation`, whose errors name each parameter by
its dotted path (`paths`). `describe` lists a declaration for docs and tuning (search spaces come from
`low`/`high`/`choices`).

This module imports nothing from the package, so `training` (the recipe) and `methods` can both use it.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

KINDS = ("int", "float", "choice", "int_list", "float_list", "bool", "str")


class _Required:
    """The `default` of a parameter that must be given."""

    _instance = None

    def __new__(cls):
        if cls._instance is None:
            cls._instance = super().__new__(cls)
        return cls._instance

    def __repr__(self) -> str:
        return "REQUIRED"

    def __reduce__(self):
        return (_Required, ())


REQUIRED: Any = _Required()


@dataclass(frozen=True)
class Param:
    """One declared parameter.

    `kind`: "int" (an integral float is accepted and made an int), "float" (finite; ints accepted), "choice" (one of
    `choices`; `ignore_case`: matched case-insensitively and returned as the declared choice), "int_list" (a list of
    ints; `low`/`high` apply to each entry), "float_list" (the same, of finite numbers), "bool" (true or false
    only), "str" (a non-empty string). `default`: the value when left out, or `REQUIRED`. `low`/`high`: bounds,
    inclusive unless `low_open` (then value > low). `nullable`: None is accepted (e.g. "off", "no cap"). Bools are
    never numbers, numbers never bools."""

    kind: str
    default: Any = REQUIRED
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    nullable: bool = False
    choices: tuple = ()
    ignore_case: bool = False
    help: str = ""

    def __post_init__(self):
        if self.kind not in KINDS:
            raise ValueError(f"Param kind must be one of {list(KINDS)}, got {self.kind!r}")
        if self.kind == "choice" and not self.choices:
            raise ValueError("a 'choice' Param needs its choices")

    @property
    def required(self) -> bool:
        return self.default is REQUIRED

    def range_text(self) -> str:
        """The bounds in words ('> 0', 'in [0, 1]', ''), for errors and docs."""
        if self.low is not None and self.high is not None:
            return f"in {'(' if self.low_open else '['}{_num(self.low)}, {_num(self.high)}]"
        if self.low is not None:
            return f"{'>' if self.low_open else '>='} {_num(self.low)}"
        if self.high is not None:
            return f"<= {_num(self.high)}"
        return ""

    def allowed_text(self) -> str:
        """What the parameter accepts, in words (for errors and docs)."""
        if self.kind == "choice":
            text = f"one of {list(self.choices)}"
        else:
            text = {"int": "an integer", "float": "a finite number", "int_list": "a list of integers",
                    "float_list": "a list of finite numbers", "bool": "true or false",
                    "str": "a non-empty string"}[self.kind]
            bounds = self.range_text()
            if bounds:
                text += f" {'each ' if self.kind.endswith('_list') else ''}{bounds}"
        return text + (" or null" if self.nullable else "")


def _num(x: float) -> str:
    return str(int(x)) if float(x).is_integer() else repr(float(x))


def _in_range(param: Param, x: float) -> bool:
    if param.low is not None and (x <= param.low if param.low_open else x < param.low):
        return False
    return param.high is None or x <= param.high


def _as_int(value) -> int | None:
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _as_float(value) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    try:
        number = float(value)
    except OverflowError:  # an int too large for a float
        return None
    return number if math.isfinite(number) else None


def check_value(method: str, name: str, value, param: Param, *, path: str | None = None):
    """`value` checked against `param` and normalised (int, float, the declared choice, a list of ints, a bool, a
    string); a ValueError names the method, the parameter, the value and what is allowed. With `path` (the
    parameter's full dotted name in the configuration, e.g. `training.lr`) the error names that path instead."""

    def fail(what: str):
        where = f"parameter '{path}'" if path else f"{method}: parameter '{name}'"
        raise ValueError(f"{where} must be {what}, got {value!r}")

    if value is None:
        if param.nullable:
            return None
        fail(param.allowed_text())
    if param.kind == "choice":
        for choice in param.choices:
            if value == choice or (param.ignore_case and isinstance(value, str)
                                   and str(choice).lower() == value.lower()):
                return choice
        fail(param.allowed_text())
    if param.kind == "bool":
        if not isinstance(value, bool):
            fail(param.allowed_text())
        return value
    if param.kind == "str":
        if not isinstance(value, str) or not value.strip():
            fail(param.allowed_text())
        return value
    if param.kind in ("int_list", "float_list"):
        if not isinstance(value, (list, tuple)):
            fail(param.allowed_text())
        convert = _as_int if param.kind == "int_list" else _as_float
        out = [convert(v) for v in value]
        if any(v is None for v in out) or not all(_in_range(param, v) for v in out):
            fail(param.allowed_text())
        return out
    if param.kind == "int":
        number = _as_int(value)
        if number is None:
            fail("an integer" + (" or null" if param.nullable else ""))
    else:
        number = _as_float(value)
        if number is None:
            fail("a finite number" + (" or null" if param.nullable else ""))
    if not _in_range(param, number):
        fail(param.range_text() + (" or null" if param.nullable else ""))
    return number


def check_parameters(method: str, params: Mapping | None, declared: Mapping[str, Param], *,
                     paths: str | Callable[[str], str] | None = None) -> dict:
    """`params` over the declared defaults, validated: unknown names and missing required names raise a ValueError
    listing the allowed names; every value (defaults too) is type- and range-checked against its own declaration
    (`check_value`). Returns the complete, normalised parameter dict.

    `paths` names each parameter by its full dotted path in errors: a prefix (`"training"` -> `training.lr`) or a
    function of the name (where the value came from)."""
    params = {} if params is None else params
    if not isinstance(params, Mapping):
        raise ValueError(f"{method}: parameters must be a mapping of name -> value, got {params!r}")
    allowed = list(declared)
    unknown = sorted(str(name) for name in params if name not in declared)
    if unknown:
        hint = " (it takes none)" if not allowed else ""
        raise ValueError(f"{method}: unknown parameter(s) {unknown}; allowed are {allowed}{hint}")
    missing = [name for name, param in declared.items() if param.required and name not in params]
    if missing:
        raise ValueError(f"{method}: missing required parameter(s) {missing}; allowed are {allowed}")
    if isinstance(paths, str):
        prefix = paths
        paths = lambda name: f"{prefix}.{name}"  # noqa: E731
    merged = {}
    for name, param in declared.items():
        value = params[name] if name in params else param.default
        merged[name] = check_value(method, name, value, param, path=paths(name) if paths else None)
    return merged


def describe(declared: Mapping[str, Param]) -> list[dict]:
    """One row per declared parameter - name, kind, required, default (None when required), low, high, low_open,
    nullable, choices, allowed (in words), help - for docs and tuning search spaces."""
    rows = []
    for name, param in declared.items():
        default = None if param.required else param.default
        rows.append({
            "name": name, "kind": param.kind, "required": param.required,
            "default": list(default) if isinstance(default, tuple) else default,
            "low": param.low, "high": param.high, "low_open": param.low_open, "nullable": param.nullable,
            "choices": list(param.choices), "allowed": param.allowed_text(), "help": param.help,
        })
    return rows
