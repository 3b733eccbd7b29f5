"""Search spaces declared in configuration (`tuning.space.<owner>`), checked against the owner's declared parameters
(`parameters.Param`) before any training, and sampled with Optuna.

An entry is a range, `{low, high[, log][, step]}` (int and float parameters only: the declared kind decides
`suggest_int` or `suggest_float`), or `{choices: [...]}` (any parameter; list-valued choices are sampled as their
JSON text, since Optuna's categorical values must be scalars, and mapped back). Every bound and every choice must be
a value the declared parameter accepts, so a trial never proposes a setting the method would reject; errors name the
entry's dotted path (`tuning.space.scrub.lr`), the value and what is allowed.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, NoReturn

from ..parameters import Param, check_value

KINDS = ("int", "float", "choice")
RANGE_KEYS = ("low", "high", "log", "step")
CHOICE_KEYS = ("choices",)


@dataclass(frozen=True)
class Dimension:
    """One searched parameter: a range of `kind` "int" or "float" (`low`/`high` inclusive, `log` scale, optional
    `step`), or a "choice" among `choices` (normalised as the declared parameter returns them; list values are
    kept as tuples so a Dimension stays hashable, and `suggest` gives them back as lists)."""

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    log: bool = False
    step: float | None = None
    choices: tuple = ()


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fail(path: str, value: Any, what: str) -> NoReturn:
    raise ValueError(f"'{path}' {what}, got {value!r}")


def _accepted(owner: str, name: str, value: Any, param: Param) -> tuple[bool, Any]:
    """(True, normalised value) when `param` accepts `value`, else (False, None)."""
    try:
        return True, check_value(owner, name, value, param)
    except ValueError:
        return False, None


def _parse_range(owner: str, name: str, entry: Mapping, param: Param, path: str) -> Dimension:
    if param.kind not in ("int", "float"):
        _fail(path, dict(entry), f"is a range, but {owner}'s '{name}' is a {param.kind} parameter "
                                 f"({param.allowed_text()}): give it as {{choices: [...]}}")
    missing = [key for key in ("low", "high") if key not in entry]
    if missing:
        _fail(path, dict(entry), f"is a range without {' and '.join(missing)}: a range needs both low and high")
    low, high = entry["low"], entry["high"]
    for key, bound in (("low", low), ("high", high)):
        if not _is_number(bound):
            _fail(f"{path}.{key}", bound, "must be a finite number")
        if param.kind == "int" and not float(bound).is_integer():
            _fail(f"{path}.{key}", bound, f"must be an integer ({owner}'s '{name}' is an int parameter)")
    if low >= high:
        _fail(path, dict(entry), f"is an empty or inverted range: low ({low!r}) must be below high ({high!r})")
    for key, bound in (("low", low), ("high", high)):
        ok, _ = _accepted(owner, name, bound, param)
        if not ok:
            _fail(f"{path}.{key}", bound, f"is outside what {owner}'s '{name}' accepts ({param.allowed_text()})")
    log = entry.get("log", False)
    if not isinstance(log, bool):
        _fail(f"{path}.log", log, "must be true or false")
    if log and low <= 0:
        _fail(f"{path}.low", low, "must be > 0 with log: true (a log scale needs positive bounds)")
    step = entry.get("step")
    if step is not None:
        if log:
            _fail(f"{path}.step", step, "cannot be combined with log: true (Optuna samples a log range without steps)")
        if not _is_number(step) or step <= 0 or (param.kind == "int" and not float(step).is_integer()):
            _fail(f"{path}.step", step, f"must be a positive {'integer' if param.kind == 'int' else 'number'}")
        spans = (high - low) / step
        if abs(spans - round(spans)) > 1e-9 * max(1.0, abs(spans)):
            _fail(f"{path}.step", step, f"must divide the range high - low = {high - low!r} into whole steps")
    if param.kind == "int":
        return Dimension(name, "int", low=int(low), high=int(high), log=log,
                         step=None if step is None else int(step))
    return Dimension(name, "float", low=float(low), high=float(high), log=log,
                     step=None if step is None else float(step))


def _parse_choices(owner: str, name: str, entry: Mapping, param: Param, path: str) -> Dimension:
    choices = entry["choices"]
    if not isinstance(choices, (list, tuple)) or not choices:
        _fail(f"{path}.choices", choices, f"must be a non-empty list of values {owner}'s '{name}' accepts "
                                          f"({param.allowed_text()})")
    normalised, seen = [], {}
    for index, choice in enumerate(choices):
        ok, value = _accepted(owner, name, choice, param)
        if not ok:
            _fail(f"{path}.choices[{index}]", choice, f"is not a value {owner}'s '{name}' accepts "
                                                      f"({param.allowed_text()})")
        key = json.dumps(value)
        if key in seen:
            _fail(f"{path}.choices[{index}]", choice, f"duplicates choices[{seen[key]}] (each choice once)")
        seen[key] = index
        normalised.append(tuple(value) if isinstance(value, list) else value)
    return Dimension(name, "choice", choices=tuple(normalised))


def parse_space(owner: str, space: Any, declared: Mapping[str, Param], path: str) -> dict[str, Dimension]:
    """The search space `space` (a mapping of parameter -> entry, found at the dotted `path`, e.g.
    `tuning.space.scrub`) of `owner` (a method, or "original"), checked against `owner`'s `declared` parameters.
    Returns name -> Dimension in the configured order; a ValueError names the bad entry's path, its value and what is
    allowed, so a bad space fails before any trial trains."""
    if not isinstance(space, Mapping):
        _fail(path, space, f"must be a mapping of {owner}'s parameter -> {{low, high[, log][, step]}} or "
                           f"{{choices: [...]}}")
    dimensions: dict[str, Dimension] = {}
    for name, entry in space.items():
        entry_path = f"{path}.{name}"
        if name not in declared:
            raise ValueError(f"'{entry_path}': {owner} has no parameter '{name}'; its parameters are "
                             f"{list(declared)}")
        param = declared[name]
        if not isinstance(entry, Mapping):
            _fail(entry_path, entry, "must be a mapping: {low, high[, log][, step]} or {choices: [...]}")
        unknown = sorted(str(key) for key in entry if key not in RANGE_KEYS + CHOICE_KEYS)
        if unknown:
            _fail(entry_path, dict(entry), f"has unknown key(s) {unknown}; a range takes {list(RANGE_KEYS)} "
                                           f"(low and high required), a choice takes {list(CHOICE_KEYS)}")
        if "choices" in entry:
            mixed = sorted(key for key in entry if key in RANGE_KEYS)
            if mixed:
                _fail(entry_path, dict(entry), f"mixes choices with range key(s) {mixed}: give either "
                                               f"{{low, high[, log][, step]}} or {{choices: [...]}}")
            dimensions[name] = _parse_choices(owner, name, entry, param, entry_path)
        elif any(key in entry for key in RANGE_KEYS):
            dimensions[name] = _parse_range(owner, name, entry, param, entry_path)
        else:
            _fail(entry_path, dict(entry), "must be {low, high[, log][, step]} or {choices: [...]}")
    return dimensions


def _encode(choice: Any) -> Any:
    return json.dumps(list(choice)) if isinstance(choice, tuple) else json.dumps(choice)


def suggest(trial: Any, space: Mapping[str, Dimension]) -> dict:
    """One setting drawn by the Optuna `trial` (each parameter suggested under its own name), as plain Python values:
    ints, floats, the choices themselves (list-valued choices as lists)."""
    values: dict[str, Any] = {}
    for name, dim in space.items():
        if dim.kind == "int":
            values[name] = trial.suggest_int(name, int(dim.low), int(dim.high), step=int(dim.step or 1), log=dim.log)
        elif dim.kind == "float":
            values[name] = trial.suggest_float(name, float(dim.low), float(dim.high), step=dim.step, log=dim.log)
        elif dim.kind == "choice":
            if any(isinstance(choice, tuple) for choice in dim.choices):
                # Optuna's categorical values are scalars: draw the JSON text, give back the value
                drawn = trial.suggest_categorical(name, [_encode(choice) for choice in dim.choices])
                values[name] = json.loads(drawn)
            else:
                values[name] = trial.suggest_categorical(name, list(dim.choices))
        else:
            raise ValueError(f"dimension '{name}': unknown kind {dim.kind!r}; known are {list(KINDS)}")
    return values


def configured_point(space: Mapping[str, Dimension], configured: Mapping) -> dict:
    """The configured values of the searched parameters, as Optuna's fixed parameters of an enqueued trial: each one
    that lies in its dimension (inside the range, among the choices); the others are left to the sampler. Enqueued
    as a study's first trial, so the tuned settings are never worse than the configured ones on the objective."""
    point: dict[str, Any] = {}
    for name, dim in space.items():
        if name not in configured or configured[name] is None:
            continue
        value = configured[name]
        if dim.kind in ("int", "float"):
            if isinstance(value, bool) or not _is_number(value) or not dim.low <= float(value) <= dim.high:
                continue
            point[name] = int(value) if dim.kind == "int" else float(value)
        else:
            as_choice = tuple(value) if isinstance(value, list) else value
            if as_choice not in dim.choices:
                continue
            lists = any(isinstance(choice, tuple) for choice in dim.choices)
            point[name] = _encode(as_choice) if lists else as_choice
    return point


def _number_text(x: float) -> str:
    if float(x).is_integer() and abs(x) < 1e6:
        return str(int(x))
    if abs(x) < 1e-3 or abs(x) >= 1e6:
        mantissa, exponent = f"{x:.3e}".split("e")
        mantissa = mantissa.rstrip("0").rstrip(".")
        return f"{mantissa}e{int(exponent)}"
    return f"{x:.4g}"


def _choice_text(choice: Any) -> str:
    if isinstance(choice, str):
        return choice
    if isinstance(choice, tuple):
        return "[" + ", ".join(_choice_text(c) for c in choice) + "]"
    if _is_number(choice):
        return _number_text(choice)
    return json.dumps(choice)


def describe_space(space: Mapping[str, Dimension]) -> dict[str, str]:
    """Each dimension in words, for logs and docs: `"[1e-4, 0.1] log"`, `"[1, 5] step 2"`, `"{sgd, adam}"`."""
    texts = {}
    for name, dim in space.items():
        if dim.kind == "choice":
            texts[name] = "{" + ", ".join(_choice_text(c) for c in dim.choices) + "}"
        else:
            text = f"[{_number_text(dim.low)}, {_number_text(dim.high)}]"
            if dim.log:
                text += " log"
            if dim.step is not None:
                text += f" step {_number_text(dim.step)}"
            texts[name] = text
    return texts
