"""The step timer: each phase is measured from the previous mark, never from the start."""

from __future__ import annotations

import pytest

from training import steps
from training.steps import Timer, noop


def test_timer_measures_each_phase_from_the_previous_mark(monkeypatch: pytest.MonkeyPatch) -> None:
    clock = iter([10.0, 10.5, 12.0, 12.0])
    monkeypatch.setattr(steps.time, "perf_counter", lambda: next(clock))
    timer = Timer()
    timer.mark("load")
    timer.mark("policy")
    timer.mark("features")
    assert timer.seconds == {"load": 0.5, "policy": 1.5, "features": 0.0}
    assert noop("anything") is None
