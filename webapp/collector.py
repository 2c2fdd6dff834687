"""The cyclic garbage collector around allocation-heavy work: a report's render allocates
hundreds of thousands of objects, a probe sweep millions. At the default thresholds the
collector ran so often that it walked the whole heap of the app again and again (a fifth of a
render's CPU, a sixth of a 1,000-service sweep's, and a full collection inside a bookkeeping
transaction held SQLite's write lock ~150 ms).

Both settings are counted across threads: overlapping holders change the collector once, when
the first enters, and restore it once, when the last leaves. Nothing leaks: the next
automatic collection frees whatever cycles the work left.
"""

from __future__ import annotations

import gc
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager

SWEEP_THRESHOLD = 20_000  # allocations between young collections while a sweep runs (default 700)


def _counted(change: Callable[[], Callable[[], None]]) -> Callable[[], AbstractContextManager[None]]:
    """A context manager that calls `change` when its first holder enters and the function
    `change` returned (the undo) when its last holder leaves."""
    lock, holders, undo = threading.Lock(), 0, None

    @contextmanager
    def held() -> Iterator[None]:
        nonlocal holders, undo
        with lock:
            if holders == 0:
                undo = change()
            holders += 1
        try:
            yield
        finally:
            with lock:
                holders -= 1
                if holders == 0:
                    undo()

    return held


def _pause() -> Callable[[], None]:
    was_enabled = gc.isenabled()
    gc.disable()
    return gc.enable if was_enabled else (lambda: None)  # a collector someone else disabled stays so


def _collect_less_often() -> Callable[[], None]:
    saved = gc.get_threshold()
    gc.set_threshold(max(SWEEP_THRESHOLD, saved[0]), *saved[1:])
    return lambda: gc.set_threshold(*saved)


# While a report renders (webapp/reports.py): no collections at all.
paused = _counted(_pause)
# While a probe sweep runs (webapp/probes/tasks.py): young collections every 20,000
# allocations instead of 700; nothing is disabled, memory is freed as before.
fewer_collections = _counted(_collect_less_often)
