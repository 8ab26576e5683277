"""Run by test_full_disk.py inside `unshare -m` on a 1 MiB tmpfs: fill the disk for real, then
append to the audit log, erase a user, free the disk, erase again; print what was observed."""

from __future__ import annotations

import json
import os
import shutil
import sys
from pathlib import Path

import pandas as pd

from features.erasures import read_erasures, record_erasure
from serving.audit import AuditLog, AuditUnavailable
from serving.erase import erase
from serving.sweep import ERASE_MARK


def fill(path: Path) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT)
    try:
        while True:
            os.write(fd, b"\0" * 4096)
    except OSError:
        pass
    finally:
        os.close(fd)


def holding(home: Path, user: str) -> list[str]:
    out = []
    for path in home.rglob("*.parquet"):
        if user in set(pd.read_parquet(path).get("user_id", pd.Series([], dtype=str)).astype(str)):
            out.append(str(path.relative_to(home)))
    return sorted(out)


def main(disk: Path, world_home: Path, data: Path) -> dict:
    home = disk / "home"
    shutil.copytree(world_home, home)
    (home / "cache").mkdir()
    rows = pd.DataFrame({"user_id": ["u_ok", "u_cold"] * 200, "x": range(400)})
    rows.to_parquet(home / "cache" / "train.parquet", index=False)
    audit = AuditLog(home / "audit")
    audit.append({"event": "decision", "user_id": "before"})
    record_erasure(home / "erasures", "u_noage")  # the register and its reserve exist
    fill(disk / "filler")
    seen: dict = {}
    try:
        audit.append({"event": "decision", "user_id": "torn", "pad": "p" * 9000})
        seen["audit_on_full_disk"] = "written"
    except AuditUnavailable as exc:
        seen["audit_on_full_disk"] = str(exc)
    first = erase(home, data, "u_ok")
    seen["first"] = {"complete": first.complete, "problems": first.problems}
    seen["recorded_after_first"] = "u_ok" in read_erasures(home / "erasures")
    seen["temps_after_first"] = sorted(str(p) for p in home.rglob(f"*{ERASE_MARK}*"))
    (disk / "filler").unlink()
    audit.append({"event": "decision", "user_id": "after"})
    second = erase(home, data, "u_ok")
    seen["second"] = {"complete": second.complete, "problems": second.problems}
    seen["holding_after_second"] = holding(home, "u_ok")
    bad: list[str] = []
    seen["audit_users"] = [r["user_id"] for r in AuditLog(home / "audit").records(bad.append)]
    seen["audit_bad_lines"] = [f"{b.path.name}:{b.line_no}" for b in bad]
    return seen


if __name__ == "__main__":
    print(json.dumps(main(Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3]))))
