"""Erasure reaches every byte: staging folders and temp files of killed jobs, its own leftovers
after a SIGKILL at each write step, a full disk mid-rewrite, and batch outputs outside
OFFERS_HOME (recorded when written)."""

from __future__ import annotations

import errno
import os
import shutil
import subprocess
import sys
from datetime import datetime
from pathlib import Path

import pandas as pd
import pytest
from serving_world import NOW, World

from features.erasures import read_erasures
from features.snapshot import current_snapshot_id, load_snapshot
from serving import sweep
from serving.audit import AuditLog
from serving.batch import score_batch
from serving.erase import erase
from serving.outputs import recorded_outputs

USER = "u_ok"
ROOT = Path(__file__).resolve().parents[2]
RECORDS = ("audit", "erasures", "outputs")  # hold ids and paths by design, never rows


def _rows_of(path: Path, user: str = USER) -> int:
    frame = pd.read_csv(path, dtype=str) if ".csv" in path.name else pd.read_parquet(path)
    return int((frame["user_id"].astype(str) == user).sum()) if "user_id" in frame else 0


def _tables(root: Path) -> list[Path]:
    """Every file under root that reads as a table (temp and staging files included)."""
    found = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        if path.relative_to(root).parts[0] in RECORDS or sweep.table_kind(path) is None:
            continue
        found.append(path)
    return found


def _holding(root: Path, user: str = USER) -> dict[str, int]:
    """Files that still hold rows of `user`; unreadable files count as holding (-1)."""
    out = {}
    for path in _tables(root):
        try:
            n = _rows_of(path, user)
        except Exception:  # noqa: BLE001 - any unreadable table is a failure of the sweep
            n = -1
        if n:
            out[str(path.relative_to(root))] = n
    return out


def _leftovers(root: Path) -> list[str]:
    """Hidden files and folders under features/ and cache/ (never published)."""
    return sorted(
        str(p.relative_to(root))
        for d in ("features", "cache")
        for p in (root / d).rglob(".*")
        if (root / d).exists()
    )


def _crashed_build_and_writers(world: World) -> None:
    """What killed jobs leave: a staging folder (one whole table, one cut short), temp files."""
    snapshot = world.home / "features" / current_snapshot_id(world.home / "features")
    staging = world.home / "features" / ".staging-0123456789abcdef"
    staging.mkdir()
    shutil.copy(snapshot / "user_merchant.parquet", staging / "user_merchant.parquet")
    data = (snapshot / "user_mcc.parquet").read_bytes()
    (staging / "user_mcc.parquet").write_bytes(data[: len(data) // 2])  # killed mid-write
    shutil.copy(snapshot / "user.parquet", snapshot / ".user.0f0f0f0f.parquet")  # erase_user tmp
    cache = world.home / "cache"
    cache.mkdir()
    mine = pd.DataFrame({"user_id": [USER, "u_cold", USER], "score": [1.0, 2.0, 3.0]})
    mine.to_parquet(cache / ".scores.parquet.abcdef.tmp", index=False)  # a killed batch's tmp
    mine.to_parquet(cache / "train.parquet", index=False)
    mine.to_csv(cache / "labels.csv", index=False)


def test_staging_folders_and_temp_files_lose_the_users_rows(world: World) -> None:
    _crashed_build_and_writers(world)
    before = _holding(world.home)
    assert {
        "features/.staging-0123456789abcdef/user_merchant.parquet",
        "features/.staging-0123456789abcdef/user_mcc.parquet",
        "cache/.scores.parquet.abcdef.tmp",
    } <= set(before)

    receipt = erase(world.home, world.data, USER)

    assert _holding(world.home) == {}
    assert receipt.complete, receipt.problems
    by_location = {s.location: s for s in receipt.stores}
    staged = by_location["features/.staging-0123456789abcdef/user_merchant.parquet"]
    assert (staged.store, staged.rows_removed) == ("feature staging", before[staged.location])
    cut = by_location["features/.staging-0123456789abcdef/user_mcc.parquet"]
    assert (cut.store, cut.note) == ("leftover file", "unreadable leftover of a crashed writer")
    assert by_location["cache/.scores.parquet.abcdef.tmp"].rows_removed == 2
    assert pd.read_parquet(world.home / "cache" / ".scores.parquet.abcdef.tmp")[
        "user_id"
    ].tolist() == ["u_cold"]  # other users' rows kept: only the user's leave
    assert receipt.rows_removed == sum(before.values()) + 1  # + the cut file (unreadable: -1)
    assert "u_cold" in set(pd.read_parquet(world.home / "cache" / "train.parquet")["user_id"])


# ---------------------------------------------------------------- SIGKILL at each write step

KILL_SCRIPT = r"""
import os, signal, sys
from pathlib import Path

step, home, data = sys.argv[1], Path(sys.argv[2]), Path(sys.argv[3])

def die(*args, **kwargs):
    os.kill(os.getpid(), signal.SIGKILL)

def half_then_die(real):
    def write(obj, where, *args, **kwargs):
        real(obj, where, *args, **kwargs)
        os.truncate(where, os.path.getsize(where) // 2)  # the write was cut short
        die()
    return write

if step == "register-fsync":  # the record written, killed before it was fsynced
    from features import appendlog
    appendlog.os.fsync = die
elif step == "snapshot-rewrite":  # features.snapshot.erase_user writes a snapshot table aside
    import pandas as pd
    pd.DataFrame.to_parquet = half_then_die(pd.DataFrame.to_parquet)
elif step == "sweep-rewrite":  # a cached table written aside
    from serving import sweep
    sweep.write_parquet = half_then_die(sweep.write_parquet)
elif step == "sweep-rename":  # written aside and fsynced, killed before the rename
    from serving import sweep
    sweep.os.replace = die
elif step == "tombstone":  # every row gone, killed before the audit record
    from serving import audit
    audit.append_record = die
else:
    raise SystemExit(f"unknown step {step}")

from serving.erase import erase
erase(home, data, "u_ok")
raise SystemExit("not killed")
"""

STEPS = ("register-fsync", "snapshot-rewrite", "sweep-rewrite", "sweep-rename", "tombstone")


@pytest.mark.parametrize("step", STEPS)
def test_killed_at_each_write_step_leaves_the_user_denied_and_the_rerun_completes(
    world: World, step: str
) -> None:
    _crashed_build_and_writers(world)
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE"}
    done = subprocess.run(
        [sys.executable, "-c", KILL_SCRIPT, step, str(world.home), str(world.data)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert done.returncode == -9, done.stderr[-2000:]

    # consistent after the crash: recorded, denied, logs readable, snapshot loads
    assert USER in read_erasures(world.home / "erasures")
    scorer = world.scorer()
    decision = scorer.decide_many([USER], "offer_ranking", datetime.fromisoformat(NOW))[0]
    assert decision.reason_code == "CONSENT_REVOKED"
    AuditLog(world.home / "audit").records()  # raises on an unreadable line
    load_snapshot(world.home / "features")

    receipt = erase(world.home, world.data, USER)  # the rerun
    assert receipt.complete, receipt.problems
    assert _holding(world.home) == {}
    assert [p for p in _leftovers(world.home) if sweep.ERASE_MARK in p] == []
    tables, _ = load_snapshot(world.home / "features")
    assert all(
        USER not in set(frame["user_id"].astype(str))
        for frame in tables.as_dict().values()
        if "user_id" in frame
    )


# ---------------------------------------------------------------- full disk mid-rewrite


def test_enospc_mid_rewrite_cleans_its_temp_says_incomplete_and_the_rerun_completes(
    world: World, monkeypatch, capsys
) -> None:
    import typer

    from offers.cli import erase_cmd

    _crashed_build_and_writers(world)
    real = sweep.write_parquet

    def full_disk(table, where, *args, **kwargs) -> None:
        real(table, where, *args, **kwargs)
        os.truncate(where, 64)  # what fitted
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(sweep, "write_parquet", full_disk)
    monkeypatch.setenv("OFFERS_HOME", str(world.home))
    with pytest.raises(typer.Exit) as exc:
        erase_cmd(user=USER, data=world.data)
    assert exc.value.exit_code == 3
    err = capsys.readouterr().err
    assert "REMOVAL INCOMPLETE" in err and "No space left" in err
    assert f"rerun `offers erase --user {USER}`" in err
    assert USER in read_erasures(world.home / "erasures")  # recorded first: denied
    assert [p for p in _leftovers(world.home) if sweep.ERASE_MARK in p] == []  # finally

    monkeypatch.setattr(sweep, "write_parquet", real)  # space again
    receipt = erase_cmd(user=USER, data=world.data)
    assert receipt["complete"] and _holding(world.home) == {}


# ---------------------------------------------------------------- batch outputs outside home


def test_batch_outputs_outside_home_are_recorded_and_erased(world: World, tmp_path: Path) -> None:
    outside = tmp_path / "exports"
    kept, gone = outside / "scores.parquet", outside / "old" / "scores.parquet"
    for out in (kept, gone):
        score_batch(
            world.home, world.data, out, 3, n_jobs=1, now=datetime.fromisoformat(NOW),
            model_loader=world.loader, allow_past_now=True,
        )  # fmt: skip
    assert recorded_outputs(world.home) == [kept.resolve(), gone.resolve()]
    assert _rows_of(kept) > 0
    shutil.rmtree(gone.parent)
    killed = kept.with_name(f".{kept.name}.0123abcd.tmp")  # a killed batch's temp file
    shutil.copy(kept, killed)

    receipt = erase(world.home, world.data, USER)

    assert _rows_of(kept) == 0 and _rows_of(killed) == 0
    assert _rows_of(kept, "u_cold") > 0
    outputs = {s.location: s for s in receipt.stores if s.store == "batch output"}
    assert outputs[str(kept.resolve())].rows_removed > 0
    assert outputs[str(killed.resolve())].rows_removed > 0
    assert outputs[str(gone.resolve())].note == "recorded, no longer exists"
    assert outputs[str(gone.resolve())].rows_removed is None
    assert receipt.complete


def test_a_damaged_published_table_is_named_and_the_rest_still_erased(world: World) -> None:
    _crashed_build_and_writers(world)
    snapshot = world.home / "features" / current_snapshot_id(world.home / "features")
    (snapshot / "user_mcc.parquet").write_bytes(b"PAR1 not a parquet file")

    receipt = erase(world.home, world.data, USER)

    assert not receipt.complete
    assert receipt.problems[0].startswith(f"{world.home / 'features'}: snapshot rewrite failed")
    assert USER in read_erasures(world.home / "erasures")
    # what is left is in the published snapshot (erase_user's, for its manifest): the rerun's
    left = _holding(world.home)
    assert f"features/{snapshot.name}/user_mcc.parquet" in left
    assert all(p.startswith(f"features/{snapshot.name}/") for p in left)
    assert _rows_of(world.home / "cache" / "train.parquet") == 0  # the sweep went on
