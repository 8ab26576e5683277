"""`make demo`: the whole system end to end on synthetic data, read top to bottom."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.rule import Rule

DEMO_USERS = 10_000  # synthetic customers; about 1M transactions
DEMO_SEED = 7  # same seed, same data, same models


def _step(console: Console, title: str, fn: Callable[[], Any]) -> Any:
    console.print(Rule(title))
    started = time.perf_counter()
    result = fn()
    console.print(f"[dim]{title}: {time.perf_counter() - started:.1f} s[/dim]")
    return result


def run_demo(home: Path, users: int = DEMO_USERS, seed: int = DEMO_SEED) -> dict[str, Any]:
    """Synthesise, validate, build features; each later stage adds itself here."""
    from features.validate import validate_dir
    from offers.synth import write_synthetic

    console = Console()
    data = home / "demo-data"
    counts = _step(
        console, f"synthesise {users:,} users", lambda: write_synthetic(data, users, seed)
    )
    console.print(counts)
    report = _step(console, "validate the contract tables", lambda: validate_dir(data))
    console.print(report.format())
    if report.failed:
        raise SystemExit(2)
    return {"data": data, "counts": counts}
