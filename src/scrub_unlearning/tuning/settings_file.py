"""The tuned settings a `kedro run` reads back: the `tuned_<env>:` block of `conf/<env>/parameters_tuned.yml`
(selected as `tuned` by `select_environment`).

The tuning pipeline writes one entry per (scenario, method) - and optionally the Original's recipe - each with the
settings it chose and their provenance (study, trials, objective, date); `method_params_source: tuned` overlays
them on the configured parameters, `config` ignores them. The file is replaced as a whole at every
write (`updated_tuned_settings` keeps the entries a new study does not replace, and bumps the version), so a run
can always name the version it used.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Mapping
from typing import Any

import yaml

SOURCE_KEY = "method_params_source"
SOURCES = ("config", "tuned")
TUNED_KEY = "tuned"
ORIGINAL = "original"
ORIGINAL_MODEL_KEYS = ("width",)
"""Keys of the Original's tuned settings that belong to `model:`; every other key belongs to `training:`."""

HEADER = """\
# Tuned settings: written by `kedro run --pipelines=tune --env <env>`; read by every `kedro run` of this environment
# when `method_params_source: tuned` (`config` ignores this file). Do not edit by hand: every value
# keeps the provenance (study, trials, objective, date) of the search that chose it; tune again instead.
"""


def _mapping(value: Any, path: str, what: str) -> Mapping:
    if not isinstance(value, Mapping):
        raise ValueError(f"'{path}' must be a mapping of {what}, got {value!r}")
    return value


def _settings(entry: Any, path: str) -> dict:
    """The `settings` of a tuned entry ({settings, provenance}), checked to be a mapping."""
    entry = _mapping(entry, path, "settings and provenance")
    return dict(_mapping(entry.get("settings"), f"{path}.settings", "parameter -> value"))


def apply_tuned_settings(parameters: Mapping, source: str | None = None) -> dict:
    """A new parameter dict (a deep copy; `parameters` is untouched) with the tuned settings overlaid when the source
    (`source`, or the `method_params_source` parameter, "config" by default) is "tuned": each tuned method's settings
    go over `scenarios.<scenario>.method_params.<method>` (keys not tuned keep their configured value), the
    Original's over `training:` (and `model:` for `ORIGINAL_MODEL_KEYS`). "config" returns the copy unchanged.

    "tuned" without tuned settings, or with a scenario the configuration does not have (the file belongs to another
    configuration), raises a ValueError saying what to do."""
    if source is None:
        source = parameters.get(SOURCE_KEY)
        source = "config" if source is None else source
    if source not in SOURCES:
        raise ValueError(f"'{SOURCE_KEY}' must be one of {list(SOURCES)}, got {source!r}")
    result = copy.deepcopy(dict(parameters))
    if source == "config":
        return result

    tuned = result.get(TUNED_KEY)
    if tuned is not None:
        tuned = _mapping(tuned, TUNED_KEY, "tuned settings (version, scenarios, original)")
    scenarios = (tuned or {}).get("scenarios") or {}
    original = (tuned or {}).get(ORIGINAL)
    if not scenarios and not original:
        raise ValueError(f"'{SOURCE_KEY}: tuned' but there are no tuned settings (no '{TUNED_KEY}:' block, or an "
                         f"empty one, in conf/<env>/parameters_tuned.yml): run `kedro run --pipelines=tune --env "
                         f"<env>` first, or set '{SOURCE_KEY}: config'")
    scenarios = _mapping(scenarios, f"{TUNED_KEY}.scenarios", "scenario -> method -> {settings, provenance}")

    configured = result.get("scenarios") or {}
    foreign = [str(name) for name in scenarios if name not in configured]
    if foreign:
        raise ValueError(f"the tuned settings (conf/<env>/parameters_tuned.yml) have scenario(s) {foreign} that the "
                         f"configuration does not define (its scenarios are {list(configured)}): the file belongs to "
                         f"another configuration; tune again (`kedro run --pipelines=tune --env <env>`)")

    for scenario, methods in scenarios.items():
        methods = _mapping(methods, f"{TUNED_KEY}.scenarios.{scenario}", "method -> {settings, provenance}")
        target = result["scenarios"][scenario]
        if target.get("method_params") is None:
            target["method_params"] = {}
        for method, entry in methods.items():
            settings = _settings(entry, f"{TUNED_KEY}.scenarios.{scenario}.{method}")
            block = dict(target["method_params"].get(method) or {})
            block.update(copy.deepcopy(settings))
            target["method_params"][method] = block

    if original:
        settings = _settings(original, f"{TUNED_KEY}.{ORIGINAL}")
        for block_name, keys in (("training", [k for k in settings if k not in ORIGINAL_MODEL_KEYS]),
                                 ("model", [k for k in settings if k in ORIGINAL_MODEL_KEYS])):
            if keys:
                block = dict(result.get(block_name) or {})
                block.update({key: copy.deepcopy(settings[key]) for key in keys})
                result[block_name] = block
    return result


def _plain(value: Any) -> Any:
    """`value` as YAML-safe plain data: mappings as dicts with string keys, tuples as lists, numpy scalars as
    Python numbers, and a non-finite number (a part that does not apply, e.g. `guard_epoch` when the guard did not
    fire) as null, which YAML and strict JSON (the exported presets) read alike."""
    if isinstance(value, Mapping):
        return {str(key): _plain(item) for key, item in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(item) for item in value]
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if hasattr(value, "item"):  # a numpy scalar
        return _plain(value.item())
    return str(value)


def updated_tuned_settings(previous: Mapping | None, results: list[dict], environment: str, written: str) -> dict:
    """The new `tuned` block: `previous` (the current one, or None/empty) with `results` written in - each
    {"scenario", "method", "settings", "provenance"}, scenario None and method "original" for the Original's recipe -
    and version = previous version + 1 (1 for the first), `environment` and `written` (an ISO timestamp). Entries no
    result replaces are kept as they were."""
    previous = {} if previous is None else _mapping(previous, TUNED_KEY, "tuned settings")
    version = previous.get("version") or 0
    if isinstance(version, bool) or not isinstance(version, int) or version < 0:
        raise ValueError(f"'{TUNED_KEY}.version' must be a non-negative integer, got {version!r}")
    original = copy.deepcopy(previous.get(ORIGINAL))
    scenarios = {str(s): dict(m or {}) for s, m in
                 copy.deepcopy(dict(previous.get("scenarios") or {})).items()}
    for index, result in enumerate(results):
        scenario, method = result.get("scenario"), result.get("method")
        if (scenario is None) != (method == ORIGINAL):
            raise ValueError(f"tuning result {index}: the Original's recipe has scenario None and method "
                             f"'{ORIGINAL}', a method's has a scenario; got scenario {scenario!r}, method {method!r}")
        if not isinstance(result.get("settings"), Mapping):
            raise ValueError(f"tuning result {index} ({scenario}/{method}): 'settings' must be a mapping, got "
                             f"{result.get('settings')!r}")
        entry = {"settings": _plain(result["settings"]), "provenance": _plain(result.get("provenance") or {})}
        if scenario is None:
            original = entry
        else:
            scenarios.setdefault(str(scenario), {})[str(method)] = entry
    tuned: dict[str, Any] = {"version": version + 1, "environment": environment, "written": written}
    if original:
        tuned[ORIGINAL] = original
    tuned["scenarios"] = scenarios
    return tuned


def file_key(environment: str) -> str:
    """The top-level key of an environment's tuned settings file, `tuned_<env>`: every environment loads base's
    parameters, so with one shared key base's (digits) settings would merge into another environment's."""
    return f"{TUNED_KEY}_{environment}"


def select_environment(parameters: Mapping, environment: str) -> dict:
    """The parameters with `environment`'s tuned block (`tuned_<env>`) under `tuned` and every `tuned_*` block of
    other environments dropped (a shallow copy)."""
    selected = {k: v for k, v in parameters.items() if not str(k).startswith(f"{TUNED_KEY}_")}
    block = parameters.get(file_key(environment))
    if block is not None:
        selected[TUNED_KEY] = block
    return selected


def tuned_file_text(tuned: Mapping) -> str:
    """The text of `parameters_tuned.yml`: a header saying who writes and reads it, then `{"tuned_<env>": tuned}`."""
    key = file_key(str(tuned.get("environment") or "base"))
    body = yaml.safe_dump({key: _plain(tuned)}, sort_keys=False, allow_unicode=True, default_flow_style=False)
    return HEADER + body
