"""Progress of long loops (epochs, shadows) without tying the library to a display: the library calls
`report(what, done, total)`; whoever runs it (the Kedro hook, a notebook) installs a reporter with `reporting_to`.
With no reporter installed, `report` does nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager

Reporter = Callable[[str, int, int], None]
_installed: list[Reporter] = []
_lock = threading.Lock()


def report(what: str, done: int, total: int) -> None:
    """`done` of `total` steps of `what` are finished (called after each epoch or shadow)."""
    for reporter in list(_installed):
        reporter(what, int(done), int(total))


@contextmanager
def _listening(listeners: list, listener) -> Iterator[None]:
    """`listener` is in `listeners` for the duration of the block (thread-safe)."""
    with _lock:
        listeners.append(listener)
    try:
        yield
    finally:
        with _lock:
            listeners.remove(listener)


def reporting_to(reporter: Reporter) -> AbstractContextManager[None]:
    """Send every `report` made inside the block to `reporter`."""
    return _listening(_installed, reporter)


class StopWork(Exception):  # noqa: N818 - a request, not an error
    """Raised by an epoch observer to stop the work in progress (a tuning trial the pruner stopped). Code that turns
    a method's exceptions into failed results (methods.runner) lets it through."""


EpochObserver = Callable[[str, int, int, object, tuple[float, ...]], None]
_observers: list[EpochObserver] = []


def observe_epoch(what: str, epoch: int, total: int, model, rejected_kept_errors: Sequence[float] = ()) -> None:
    """Epoch `epoch` of `total` of `what` has finished and `model` is its current state (called by the training
    loops after each epoch; a model in train mode is left in train mode). A method with a utility guard passes the
    kept-class validation errors of the epochs it rolled back so far (`model` is then the last accepted state, so
    they are the only trace of those epochs). Observers may raise `StopWork`."""
    rejected = tuple(float(e) for e in rejected_kept_errors)
    for observer in list(_observers):
        observer(what, int(epoch), int(total), model, rejected)


def observing_epochs(observer: EpochObserver) -> AbstractContextManager[None]:
    """Call `observer(what, epoch, total, model, rejected_kept_errors)` after every epoch of every training loop
    inside the block."""
    return _listening(_observers, observer)
