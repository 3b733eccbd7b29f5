"""Unlearning methods behind one registry.

A method is `unlearn(original, task, params, device) -> (model, info)`: `original` is never modified, `task` is
the `UnlearningTask` (retain/forget/validation tensors and the kept classes), `params` the method's parameter
block. `info` carries at least `seconds`, and whatever the method's trajectory is (SCRUB: per-epoch checkpoints,
guard status).
"""

from __future__ import annotations

from collections.abc import Callable

from . import retrain, scrub

UnlearnFn = Callable[..., tuple]

METHODS: dict[str, UnlearnFn] = {
    "retrain": retrain.unlearn,
    "scrub": scrub.unlearn,
}
REFERENCES = ("original", "retrain")


def get_method(name: str) -> UnlearnFn:
    """The `unlearn` function registered under `name`; an unknown name lists the known ones."""
    if name not in METHODS:
        raise ValueError(f"unknown method '{name}'; known methods are {sorted(METHODS)}")
    return METHODS[name]


def check_method_names(names: list[str]) -> list[str]:
    """Validate a `methods:` list (Original and Retrain are always run as references and may be listed)."""
    unknown = [n for n in names if n not in METHODS and n not in REFERENCES]
    if unknown:
        raise ValueError(f"unknown method(s) {unknown}; known methods are {sorted(set(METHODS) | set(REFERENCES))}")
    return [n for n in names if n not in REFERENCES]
