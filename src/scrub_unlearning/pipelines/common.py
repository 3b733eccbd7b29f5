"""Helpers every stage's pipeline uses to wire nodes."""

from __future__ import annotations

from functools import partial

RUNTIME = "params:runtime"


def bind(func, **fixed):
    """`func` with some keyword arguments fixed (seed, method, names), keeping its name for Kedro's logs."""
    bound = partial(func, **fixed)
    bound.__name__, bound.__qualname__, bound.__doc__ = func.__name__, func.__qualname__, func.__doc__
    return bound


def seeded(name: str, seed: int) -> str:
    """The namespace of `name` (a training set or scenario) for one seed."""
    return f"{name}.seed_{seed}"


def reuse_store(runtime: dict, store):
    """The run's model store, or None when `runtime.reuse_models` is false (recompute everything)."""
    return store if runtime.get("reuse_models", True) else None
