"""Unlearning methods behind one registry.

A method is `unlearn(original, task, params, device) -> (model, info)`: `original` is never modified, `task` is
the `UnlearningTask` (retain/forget/validation tensors and the kept classes), `params` the method's parameter
block, checked against the `PARAMETERS` its module declares. `info` carries what the method wants to report (its
per-epoch losses; SCRUB: the trajectory, per-epoch weights, guard status). Callers run methods through
`methods.runner.run_method`, which times them, checks the result, rewinds and turns failures into results.
Adding a method = one module, one line in `METHODS`, one parameter block in `conf/base/parameters_unlearning.yml`.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field

from ..parameters import Param, check_parameters
from . import (
    bad_teacher,
    cf_k,
    eu_k,
    finetune,
    fisher,
    l1_sparse,
    neggrad,
    neggrad_plus,
    random_labels,
    retrain,
    salun,
    scrub,
    scrub_r,
    ssd,
)


@dataclass(frozen=True)
class Method:
    """A registered method.

    `display`: its name in tables and figures. `rewinds`: the method whose trajectory it reads (SCRUB+R reads
    SCRUB's) instead of running its own. `in_memory`: keys of its info that never leave the process (SCRUB's
    per-epoch weights): they travel to a method that rewinds this one, never into a saved info. `row_fields`: keys
    of its info that belong in its table row (SCRUB's guard). `from_training`: parameters that default to the
    Original's recipe when left null; `training_recipe`: its parameters are the Original's recipe itself
    (Retrain). `parameters`: its declared parameters (the module's `PARAMETERS`), checked by
    `check_method_params`."""

    name: str
    unlearn: Callable[..., tuple]
    display: str
    rewinds: str | None = None
    in_memory: tuple[str, ...] = ()
    row_fields: tuple[str, ...] = ()
    from_training: tuple[str, ...] = ()
    training_recipe: bool = False
    parameters: Mapping[str, Param] = field(default_factory=dict)


GUARD_FIELDS = ("guard_fired", "guard_epoch")

METHODS: dict[str, Method] = {m.name: m for m in (
    Method("retrain", retrain.unlearn, "Retrain", training_recipe=True, parameters=retrain.PARAMETERS),
    Method("scrub", scrub.unlearn, "SCRUB", in_memory=("checkpoints",), row_fields=GUARD_FIELDS,
           parameters=scrub.PARAMETERS),
    Method("scrub_r", scrub_r.unlearn, "SCRUB+R", rewinds="scrub", row_fields=GUARD_FIELDS,
           parameters=scrub_r.PARAMETERS),
    Method("finetune", finetune.unlearn, "Finetune", parameters=finetune.PARAMETERS),
    Method("neggrad", neggrad.unlearn, "NegGrad", parameters=neggrad.PARAMETERS),
    Method("neggrad_plus", neggrad_plus.unlearn, "NegGrad+", parameters=neggrad_plus.PARAMETERS),
    Method("cf_k", cf_k.unlearn, "CF-k", parameters=cf_k.PARAMETERS),
    Method("eu_k", eu_k.unlearn, "EU-k", from_training=("epochs",), parameters=eu_k.PARAMETERS),
    Method("fisher", fisher.unlearn, "Fisher", parameters=fisher.PARAMETERS),
    Method("bad_teacher", bad_teacher.unlearn, "Bad-Teacher", parameters=bad_teacher.PARAMETERS),
    Method("random_labels", random_labels.unlearn, "Random Labels", parameters=random_labels.PARAMETERS),
    Method("l1_sparse", l1_sparse.unlearn, "ℓ1-sparse", parameters=l1_sparse.PARAMETERS),
    Method("salun", salun.unlearn, "SalUn", parameters=salun.PARAMETERS),
    Method("ssd", ssd.unlearn, "SSD", parameters=ssd.PARAMETERS),
)}
REFERENCES = ("original", "retrain")
DISPLAY_NAMES: dict[str, str] = {"original": "Original", **{name: m.display for name, m in METHODS.items()}}
"""Display name of every model a run table can hold, in the registry's order (the reports' method order)."""


def run_order(method: str) -> list[str]:
    """The methods to run, in order, to get `method`'s result: the method it rewinds first (SCRUB+R: SCRUB)."""
    rewinds = get_method(method).rewinds
    return [rewinds, method] if rewinds else [method]


def rewinders_of(method: str, names: list[str]) -> list[str]:
    """The methods among `names` that rewind `method`'s trajectory (SCRUB+R for SCRUB)."""
    return [n for n in names if n in METHODS and METHODS[n].rewinds == method]


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


def check_method_params(method: str, params: dict) -> dict:
    """`params` (as `method_parameters` gives them) checked against `method`'s declared parameters: the complete,
    normalised parameter dict, or a ValueError naming the method, the parameter, the value and what is allowed."""
    return check_parameters(method, params, get_method(method).parameters)
