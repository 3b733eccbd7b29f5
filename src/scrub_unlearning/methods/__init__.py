"""Unlearning methods behind one registry.

A method is `unlearn(original, task, params, device) -> (model, info)`: `original` is never modified, `task` is
the `UnlearningTask` (retain/forget/validation tensors and the kept classes), `params` the method's parameter
block. `info` carries at least `seconds`, and whatever the method's trajectory is (SCRUB: per-epoch checkpoints,
guard status). Adding a method = one module, one line in `METHODS`, one parameter block in
`conf/base/parameters_unlearning.yml`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from . import bad_teacher, cf_k, eu_k, finetune, fisher, neggrad, neggrad_plus, retrain, scrub, scrub_r


@dataclass(frozen=True)
class Method:
    """A registered method. `rewinds`: the method whose trajectory it reads (SCRUB+R reads SCRUB's) instead of
    running its own; `from_training`: parameters that default to the Original's recipe when left null;
    `training_recipe`: its parameters are the Original's recipe itself (Retrain)."""

    name: str
    unlearn: Callable[..., tuple]
    rewinds: str | None = None
    from_training: tuple[str, ...] = ()
    training_recipe: bool = False


METHODS: dict[str, Method] = {m.name: m for m in (
    Method("retrain", retrain.unlearn, training_recipe=True),
    Method("scrub", scrub.unlearn),
    Method("scrub_r", scrub_r.unlearn, rewinds="scrub"),
    Method("finetune", finetune.unlearn),
    Method("neggrad", neggrad.unlearn),
    Method("neggrad_plus", neggrad_plus.unlearn),
    Method("cf_k", cf_k.unlearn),
    Method("eu_k", eu_k.unlearn, from_training=("epochs",)),
    Method("fisher", fisher.unlearn),
    Method("bad_teacher", bad_teacher.unlearn),
)}
REFERENCES = ("original", "retrain")


def get_method(name: str) -> Method:
    """The method registered under `name`; an unknown name lists the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; known methods are {sorted(METHODS)}")
    return METHODS[name]


def check_method_names(names: list[str]) -> list[str]:
    """Validate a `methods:` list and return it without the references (Original and Retrain always run)."""
    unknown = [n for n in names if n not in METHODS and n not in REFERENCES]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known methods are {sorted(set(METHODS) | set(REFERENCES))}")
    for name in names:
        rewinds = METHODS[name].rewinds if name in METHODS else None
        if rewinds and rewinds not in names:
            raise ValueError(f"method '{name}' rewinds {rewinds}'s trajectory: list '{rewinds}' in methods too")
    return [n for n in dict.fromkeys(names) if n not in REFERENCES]


def method_parameters(method: str, method_params: dict, scenario: dict, training: dict) -> dict:
    """The parameters `method` runs with: its block in `method_params` with the scenario's overrides
    (`scenario["method_params"][method]`) on top; Retrain takes the Original's recipe; `from_training` parameters
    left null take the recipe's value (EU-k's epochs)."""
    registered = get_method(method)
    if registered.training_recipe:
        return dict(training)
    merged = dict((method_params or {}).get(method) or {})
    merged.update((scenario.get("method_params") or {}).get(method) or {})
    for name in registered.from_training:
        if merged.get(name) is None:
            merged[name] = training[name]
    return merged
