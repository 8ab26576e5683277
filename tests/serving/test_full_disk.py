"""A real full disk: a 1 MiB tmpfs mounted in a private mount namespace (`unshare -m`, root),
filled to the last byte. The audit append gets a real short write then ENOSPC; erasure is
still recorded, says it is incomplete, leaves no temp file; after space is freed the rerun
completes and the audit log reads, the torn record named by file:line."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from serving_world import World

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = Path(__file__).with_name("full_disk_script.py")


def _mount_namespace_works() -> bool:
    if os.geteuid() != 0 or shutil.which("unshare") is None:
        return False
    probe = subprocess.run(
        ["unshare", "-m", "sh", "-c", "mount -t tmpfs -o size=64k tmpfs /mnt"],
        capture_output=True, timeout=30,
    )  # fmt: skip
    return probe.returncode == 0


@pytest.mark.skipif(not _mount_namespace_works(), reason="needs root and unshare -m (mount)")
def test_a_real_full_disk(world: World, tmp_path: Path) -> None:
    disk = tmp_path / "disk"
    disk.mkdir()
    command = (
        f'mount -t tmpfs -o size=1m tmpfs "{disk}" && exec "{sys.executable}" "{SCRIPT}" '
        f'"{disk}" "{world.home}" "{world.data}"'
    )
    env = {**os.environ, "OMP_WAIT_POLICY": "PASSIVE", "PYTHONPATH": str(ROOT)}
    done = subprocess.run(
        ["unshare", "-m", "sh", "-c", command],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-3000:]
    seen = json.loads(done.stdout.strip().splitlines()[-1])

    assert "No space left on device" in seen["audit_on_full_disk"]
    assert seen["first"]["complete"] is False
    assert any("No space left" in p for p in seen["first"]["problems"])
    assert seen["first"]["problems"][-1] == "rerun `offers erase --user u_ok` to finish the removal"
    assert seen["recorded_after_first"] is True  # recorded first: the user is denied
    assert seen["temps_after_first"] == []
    assert seen["second"] == {"complete": True, "problems": []}
    assert seen["holding_after_second"] == []
    # before, [first tombstone if it fitted], after, the rerun's tombstone; never the torn one
    users = seen["audit_users"]
    assert users[0] == "before" and users[-2:] == ["after", "u_ok"] and "torn" not in users
    assert len(seen["audit_bad_lines"]) == 1  # the short-written record, named by file:line
    assert not list(disk.iterdir())  # the tmpfs lived only in the namespace
