"""Progress of long loops (epochs, shadows) without tying the library to a display: the library calls
`report(what, done, total)`; whoever runs it (the Kedro hook, a notebook) installs a reporter with `reporting_to`.
With no reporter installed, `report` does nothing."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager

Reporter = Callable[[str, int, int], None]
_installed: list[Reporter] = []
_lock = threading.Lock()


def report(what: str, done: int, total: int) -> None:
    """`done` of `total` steps of `what` are finished (called after each epoch or shadow)."""
    for reporter in list(_installed):
        reporter(what, int(done), int(total))


@contextmanager
def reporting_to(reporter: Reporter) -> Iterator[None]:
    """Send every `report` made inside the block to `reporter`."""
    with _lock:
        _installed.append(reporter)
    try:
        yield
    finally:
        with _lock:
            _installed.remove(reporter)
