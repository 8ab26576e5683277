"""Fault suite for the append-only records: the crash or the full disk is injected at each write
step (os.write, os.fsync), deterministically, and the files stay readable and fail closed."""

from __future__ import annotations

import errno
import json
import os
from datetime import datetime
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from serving_world import NOW, World

from features import appendlog
from features.appendlog import AppendError, BadLine
from features.erasures import ERASED_SINCE_ALWAYS, REGISTER, RESERVE, read_erasures, record_erasure
from serving.app import create_app
from serving.audit import AUDIT_UNAVAILABLE, AuditLog, AuditUnavailable
from serving.erase import ErasureNotRecorded, erase

TOKEN = "faults-token"
REAL_WRITE, REAL_FSYNC = os.write, os.fsync


def _short_then_enospc(budget: int):
    """os.write that writes `budget` bytes in all (a short write), then raises ENOSPC."""
    left = [budget]

    def write(fd: int, data) -> int:
        if left[0] <= 0:
            raise OSError(errno.ENOSPC, "No space left on device")
        n = REAL_WRITE(fd, bytes(data[: left[0]]))
        left[0] -= n
        return n

    return write


def _halves(fd: int, data) -> int:
    """A short write every time: at most half of what was asked (at least one byte)."""
    return REAL_WRITE(fd, bytes(data[: max(1, len(data) // 2)]))


def _lines(path: Path) -> list[str]:
    return path.read_bytes().decode().split("\n")


# ---------------------------------------------------------------- audit log


def test_a_short_write_is_continued_to_the_whole_record(tmp_path, monkeypatch) -> None:
    log = AuditLog(tmp_path / "audit")
    monkeypatch.setattr(appendlog.os, "write", _halves)
    log.append({"event": "decision", "user_id": "u1", "padding": "x" * 500})
    monkeypatch.setattr(appendlog.os, "write", REAL_WRITE)
    assert [r["user_id"] for r in log.records()] == ["u1"]


def test_enospc_mid_record_raises_and_the_next_record_starts_on_a_fresh_line(
    tmp_path, monkeypatch
) -> None:
    log = AuditLog(tmp_path / "audit")
    log.append({"event": "decision", "user_id": "before"})
    monkeypatch.setattr(appendlog.os, "write", _short_then_enospc(20))
    with pytest.raises(AuditUnavailable, match="No space left"):
        log.append({"event": "decision", "user_id": "torn"})
    monkeypatch.setattr(appendlog.os, "write", REAL_WRITE)
    log.append({"event": "decision", "user_id": "after"})

    path = log.files()[0]
    lines = _lines(path)
    assert len(lines[1]) == 20 and lines[-1] == ""  # the torn record, alone on its line
    bad: list[BadLine] = []
    assert [r["user_id"] for r in log.records(on_bad=bad.append)] == ["before", "after"]
    assert [(b.path, b.line_no) for b in bad] == [(path, 2)]
    with pytest.raises(ValueError, match=rf"{path}:2: unreadable record"):
        log.records()  # without a handler a reader refuses, naming file and line


def test_a_failed_fsync_fails_the_append(tmp_path, monkeypatch) -> None:
    log = AuditLog(tmp_path / "audit")

    def eio(fd: int) -> None:
        raise OSError(errno.EIO, "Input/output error")

    monkeypatch.setattr(os, "fsync", eio)
    with pytest.raises(AuditUnavailable, match="not durable"):
        log.append({"event": "decision", "user_id": "u1"})


def test_a_failed_audit_write_is_a_503_naming_the_reason_never_a_decision(
    world: World, monkeypatch
) -> None:
    client = TestClient(create_app(world.scorer, tokens=[TOKEN]))
    monkeypatch.setattr(appendlog.os, "write", _short_then_enospc(0))
    for user in ("u_ok", "u_revoked"):  # an allow and a deny: neither without its record
        response = client.post(
            "/v1/rank",
            json={"user_id": user, "purpose": "offer_ranking", "now": NOW},
            headers={"Authorization": f"Bearer {TOKEN}"},
        )
        assert response.status_code == 503
        body = response.json()
        assert body["reason_code"] == AUDIT_UNAVAILABLE
        assert "decision" not in body and "offers" not in body
    with pytest.raises(AuditUnavailable):
        world.scorer().rank("u_ok", "offer_ranking", now=datetime.fromisoformat(NOW))
    monkeypatch.setattr(appendlog.os, "write", REAL_WRITE)
    ok = client.post(
        "/v1/rank",
        json={"user_id": "u_ok", "purpose": "offer_ranking", "now": NOW},
        headers={"Authorization": f"Bearer {TOKEN}"},
    )
    assert ok.status_code == 200  # the disk has room again: service resumes


def test_audit_tail_skips_a_torn_line_naming_it_and_says_when_empty(
    tmp_path, monkeypatch, capsys
) -> None:
    from offers.cli import audit_tail

    monkeypatch.setenv("OFFERS_HOME", str(tmp_path / "home"))
    assert audit_tail(n=5) == []
    assert capsys.readouterr().out.strip().startswith("no audit records in ")

    log = AuditLog(tmp_path / "home" / "audit")
    log.append({"event": "decision", "user_id": "a"})
    monkeypatch.setattr(appendlog.os, "write", _short_then_enospc(7))
    with pytest.raises(AuditUnavailable):
        log.append({"event": "decision", "user_id": "b"})
    monkeypatch.setattr(appendlog.os, "write", REAL_WRITE)
    log.append({"event": "decision", "user_id": "c"})
    records = audit_tail(n=5)
    captured = capsys.readouterr()
    assert [r["user_id"] for r in records] == ["a", "c"]
    assert f"skipped {log.files()[0]}:2: unreadable record" in captured.err


# ---------------------------------------------------------------- erasure register


def test_register_torn_line_with_a_readable_id_keeps_the_user_erased(tmp_path) -> None:
    folder = tmp_path / "erasures"
    record_erasure(folder, "u1")
    with open(folder / REGISTER, "a") as f:
        f.write('{"user_id": "u2", "erased_at": "2025-0')  # cut by a crash, no newline
    record_erasure(folder, "u3")  # starts on a fresh line: stays readable
    bad: list[BadLine] = []
    erased = read_erasures(folder, on_bad=bad.append)
    assert set(erased) == {"u1", "u2", "u3"}
    assert erased["u2"] == ERASED_SINCE_ALWAYS  # fail closed: erased at every instant
    assert [b.line_no for b in bad] == [2]


@pytest.mark.parametrize(
    ("line", "error"),
    [
        ('{"user_id": "u', "Unterminated string"),  # torn inside the id: not an erasure
        ('{"erased_at": "2025-06-01T00:00:00+00:00"}\n', "no user_id"),
    ],
)
def test_register_line_without_a_readable_id_is_reported_and_others_still_read(
    tmp_path, line: str, error: str
) -> None:
    folder = tmp_path / "erasures"
    record_erasure(folder, "u1")
    with open(folder / REGISTER, "a") as f:
        f.write(line)
    record_erasure(folder, "u3")
    bad: list[BadLine] = []
    assert set(read_erasures(folder, on_bad=bad.append)) == {"u1", "u3"}
    assert [(b.path, b.line_no) for b in bad] == [(folder / REGISTER, 2)]
    assert bad[0].error.startswith(error)
    assert str(bad[0]).startswith(f"{folder / REGISTER}:2: unreadable record")


def test_register_short_write_then_enospc_fails_and_the_rerun_records(
    tmp_path, monkeypatch
) -> None:
    folder = tmp_path / "erasures"
    record_erasure(folder, "u1")
    (folder / RESERVE).unlink()  # no reserve left to release: the append must fail
    monkeypatch.setattr(appendlog.os, "write", _short_then_enospc(10))
    with pytest.raises(AppendError) as exc:
        record_erasure(folder, "u2")
    assert exc.value.errno == errno.ENOSPC
    monkeypatch.setattr(appendlog.os, "write", REAL_WRITE)
    record_erasure(folder, "u2")
    assert set(read_erasures(folder, on_bad=lambda b: None)) == {"u1", "u2"}


def test_on_enospc_the_reserve_is_released_so_the_erasure_is_still_recorded(
    tmp_path, monkeypatch
) -> None:
    folder = tmp_path / "erasures"
    record_erasure(folder, "u1")
    assert (folder / RESERVE).stat().st_size > 0
    calls = []

    def full_once(fd: int, data) -> int:
        calls.append(len(data))
        if len(calls) == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        return REAL_WRITE(fd, data)

    monkeypatch.setattr(appendlog.os, "write", full_once)
    record_erasure(folder, "u2")
    assert "u2" in read_erasures(folder)
    assert len(calls) == 2  # refused once, written after the reserve was given up


def test_erase_refuses_to_remove_anything_when_the_register_cannot_be_written(
    world: World, monkeypatch
) -> None:
    before = sorted(p.stat().st_mtime_ns for p in (world.home / "features").rglob("*.parquet"))
    monkeypatch.setattr(appendlog.os, "write", _short_then_enospc(0))
    with pytest.raises(ErasureNotRecorded, match="NOT recorded.*rerun"):
        erase(world.home, world.data, "u_ok")
    after = sorted(p.stat().st_mtime_ns for p in (world.home / "features").rglob("*.parquet"))
    assert before == after  # nothing removed before the erasure was recorded


def test_cli_erase_exit_3_when_not_recorded(world: World, monkeypatch, capsys) -> None:
    import typer

    from offers.cli import erase_cmd

    monkeypatch.setenv("OFFERS_HOME", str(world.home))
    monkeypatch.setattr(appendlog.os, "write", _short_then_enospc(0))
    with pytest.raises(typer.Exit) as exc:
        erase_cmd(user="u_ok", data=world.data)
    assert exc.value.exit_code == 3
    assert "NOT recorded" in capsys.readouterr().err


def test_tombstone_failure_leaves_the_user_denied_and_says_rerun(world: World, monkeypatch) -> None:
    class FullAudit(AuditLog):
        def append(self, record):
            raise AuditUnavailable("audit log not writable: [Errno 28] No space left on device")

    receipt = erase(world.home, world.data, "u_ok", audit=FullAudit(world.home / "audit"))
    assert not receipt.complete
    assert any("tombstone not written" in p for p in receipt.problems)
    assert receipt.problems[-1] == "rerun `offers erase --user u_ok` to finish the removal"
    assert "u_ok" in read_erasures(world.home / "erasures")
    assert json.loads(json.dumps(receipt.to_dict()))["complete"] is False


def test_batch_scoring_stops_without_output_when_the_audit_cannot_be_written(
    world: World, tmp_path, monkeypatch
) -> None:
    from serving.batch import score_batch
    from serving.outputs import recorded_outputs

    out = tmp_path / "scores.parquet"
    monkeypatch.setattr(appendlog.os, "write", _short_then_enospc(0))
    with pytest.raises(AuditUnavailable):
        score_batch(
            world.home, world.data, out, 3, n_jobs=1, now=datetime.fromisoformat(NOW),
            model_loader=world.loader, allow_past_now=True,
        )  # fmt: skip
    assert not out.exists() and recorded_outputs(world.home) == []
