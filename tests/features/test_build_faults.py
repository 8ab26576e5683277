"""The feature build stopped at each write step of `publish_snapshot`, deterministically (a step
raises, or the process SIGKILLs itself there): CURRENT and the old snapshot stay intact and
readable, and the next build completes and sweeps what the stopped one left."""

from __future__ import annotations

import errno
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import pytest
from input_world import build, current, txns, write_world

from features import snapshot, stale
from features.tables import FeatureTables

STEPS = ["_write_table", "_write_manifest", "_place_snapshot", "_write_pointer", "_swap_pointer"]
FAULTS = {
    "SystemExit": SystemExit(1),
    "KeyboardInterrupt": KeyboardInterrupt(),
    "ENOSPC": OSError(errno.ENOSPC, "No space left on device"),
}
LATER = "2024-06-20T00:00:00+00:00"  # a second cutoff: other content, another snapshot id
SUPPORT = Path(__file__).parents[1] / "support"


def _leftovers(features: Path) -> list[str]:
    return sorted(p.name for p in features.iterdir() if p.name.startswith("."))


def _assert_intact(home: Path, snapshot_id: str, tables: FeatureTables) -> None:
    assert current(home) == snapshot_id
    again, manifest = snapshot.load_snapshot(home / "features")
    assert manifest["snapshot_id"] == snapshot_id
    for name, frame in tables.as_dict().items():
        pd.testing.assert_frame_equal(again.as_dict()[name], frame, obj=name)


@pytest.fixture
def published(tmp_path: Path) -> tuple[Path, Path, str, FeatureTables]:
    """(home, data, id, tables): one snapshot published and current."""
    home, data = tmp_path / "home", write_world(tmp_path / "data", txns())
    snapshot_id = build(data, home)["snapshot_id"]
    return home, data, snapshot_id, snapshot.load_snapshot(home / "features")[0]


# Every step on a full disk; the interrupts (one `except BaseException` path) at first and last.
CASES = [(step, "ENOSPC") for step in STEPS] + [
    (step, fault) for step in (STEPS[0], STEPS[-1]) for fault in ("SystemExit", "KeyboardInterrupt")
]


@pytest.mark.parametrize(("step", "fault"), CASES)
def test_a_fault_at_each_write_step_leaves_current_intact(
    published, monkeypatch: pytest.MonkeyPatch, step: str, fault: str
) -> None:
    home, data, before, tables = published
    real, calls = getattr(snapshot, step), []

    def failing(*args, **kwargs):
        calls.append(step)
        if len(calls) == (3 if step == "_write_table" else 1):  # the third table, mid-way
            raise FAULTS[fault]
        return real(*args, **kwargs)

    monkeypatch.setattr(snapshot, step, failing)
    with pytest.raises(type(FAULTS[fault])):
        build(data, home, cutoff=LATER)
    _assert_intact(home, before, tables)
    assert _leftovers(home / "features") == []  # cleaned on the way out

    monkeypatch.setattr(snapshot, step, real)
    after = build(data, home, cutoff=LATER)
    assert current(home) == after["snapshot_id"] != before
    assert _leftovers(home / "features") == []
    snapshot.load_snapshot(home / "features", before)  # the old snapshot is still readable


KILLER = """
import os, signal, sys
from pathlib import Path
from features import snapshot
from input_world import build

step, nth, data, home, cutoff = sys.argv[1:]
real, calls = getattr(snapshot, step), []

def dying(*args, **kwargs):
    calls.append(step)
    if len(calls) == int(nth):
        os.kill(os.getpid(), signal.SIGKILL)
    return real(*args, **kwargs)

setattr(snapshot, step, dying)
build(Path(data), Path(home), cutoff=cutoff)
"""


@pytest.mark.parametrize(
    ("step", "nth", "left"),
    [("_write_table", 3, ".staging-"), ("_swap_pointer", 1, ".CURRENT.")],
)
def test_a_killed_build_is_swept_by_the_next(
    published, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, step: str, nth: int, left: str
) -> None:
    home, data, before, tables = published
    tmp = tmp_path / "tmp"
    tmp.mkdir()
    env = {**os.environ, "TMPDIR": str(tmp), "PYTHONPATH": str(SUPPORT)}
    argv = [sys.executable, "-c", KILLER, step, str(nth), str(data), str(home), LATER]
    killed = subprocess.Popen(argv, env=env, stderr=subprocess.PIPE, text=True)
    _, err = killed.communicate(timeout=300)
    assert killed.returncode == -signal.SIGKILL, err[-2000:]

    features = home / "features"
    stranded = [p for p in features.iterdir() if p.name.startswith(left)]
    assert [p.name.startswith(f"{left}{killed.pid}-") for p in stranded] == [True]
    spill = sorted(tmp.glob(f"offers-duckdb-{killed.pid}-*"))
    assert len(spill) == 1, "the killed build's DuckDB spill folder stays behind"
    _assert_intact(home, before, tables)

    monkeypatch.setattr(tempfile, "tempdir", str(tmp))  # sweep this temp folder
    notes: list[str] = []
    after = build(data, home, cutoff=LATER, on_note=notes.append)
    assert current(home) == after["snapshot_id"] != before
    assert _leftovers(features) == []
    assert not any(p.exists() for p in spill)
    assert sorted(notes) == sorted(
        f"swept {p}, left by a build that was killed" for p in [*stranded, *spill]
    )


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_sweeping_spares_live_owners(tmp_path: Path) -> None:
    mine, dead = stale.owner_tag(), f"{_dead_pid()}-1000"
    pid, start = mine.split("-")
    reused = f"{pid}-{int(start) + 1}"  # this pid, but another process's start time
    features, tmp = tmp_path / "features", tmp_path / "tmp"
    names = {
        features: [f".staging-{mine}-a", f".staging-{dead}-b", f".staging-{reused}-c"]
        + [".staging-0123abcd", f".CURRENT.{dead}-d", f".CURRENT.{mine}-e", "20240101-x"],
        tmp: [f"offers-duckdb-{mine}-f", f"offers-duckdb-{dead}-g", "offers-duckdb-legacy"]
        + [f"offers-spark-{dead}-h", f"other-{dead}-i"],
    }
    for folder, entries in names.items():
        for name in entries:
            (folder / name).mkdir(parents=True)
    swept = stale.sweep_features_dir(features) + stale.sweep_spill(tmp)
    assert sorted(p.name for p in swept) == sorted(
        [f".staging-{dead}-b", f".staging-{reused}-c", ".staging-0123abcd", f".CURRENT.{dead}-d"]
        + [f"offers-duckdb-{dead}-g", f"offers-spark-{dead}-h"]
    )
    assert sorted(p.name for p in features.iterdir()) == sorted(
        [f".staging-{mine}-a", f".CURRENT.{mine}-e", "20240101-x"]
    )
    assert sorted(p.name for p in tmp.iterdir()) == sorted(
        [f"offers-duckdb-{mine}-f", "offers-duckdb-legacy", f"other-{dead}-i"]
    )


def test_a_live_owner_stays_alive_when_the_boot_time_reading_moves(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """/proc/stat's btime follows the wall clock and can move by a second between reads: the
    owner's identity must not depend on it, or a running job's spill folder is swept."""
    import psutil._pslinux as pslinux

    spill = tmp_path / f"offers-duckdb-{stale.owner_tag()}-x"
    spill.mkdir()
    real = pslinux.boot_time
    monkeypatch.setattr(pslinux, "boot_time", lambda: real() + 1.0)
    assert stale.sweep_spill(tmp_path) == [] and spill.is_dir()
