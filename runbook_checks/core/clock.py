"""Waiting for something to happen: one loop for the whole kit."""

from __future__ import annotations

import time
from typing import Callable

from .errors import KitError


def wait_until(predicate: Callable[[], object], timeout: float, what: str, fix: str,
               error: type[KitError] = KitError, interval: float = 0.1) -> float:
    """Seconds until `predicate()` holds (rounded to 10 ms); `error(problem, fix)` naming
    `what` when it has not held within `timeout` seconds."""
    start = time.monotonic()
    while True:
        if predicate():
            return round(time.monotonic() - start, 2)
        if time.monotonic() - start >= timeout:
            raise error(f"{what} did not happen within {timeout:.0f}s", fix)
        time.sleep(interval)
