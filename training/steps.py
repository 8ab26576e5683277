"""Progress reporting shared by every training stage: the `Step` callback and its timer."""

from __future__ import annotations

import time
from collections.abc import Callable

Step = Callable[[str], None]  # told, in words, what a stage is about to do


def noop(_: str) -> None:
    """The `Step` used when nobody listens."""
    return None


class Timer:
    """Seconds per named phase, each measured from the previous mark (or the start)."""

    def __init__(self, digits: int = 3) -> None:
        self.seconds: dict[str, float] = {}
        self._digits = digits
        self._last = time.perf_counter()

    def mark(self, name: str) -> None:
        now = time.perf_counter()
        self.seconds[name] = round(now - self._last, self._digits)
        self._last = now
