"""Deleting collected records: the filesystem store's helper process (decision collector-03),
what happens when it dies or cannot start, and files that cannot be deleted."""

from __future__ import annotations

import logging
import os
import signal
import sys
from pathlib import Path

import pytest

from lightspeed.records import RecordKind, new_record_id
from lightspeed.storage import StorageUnavailable
from lightspeed.storage.base import Claim
from lightspeed.storage.filesystem import FilesystemStorage
from lightspeed.storage.filesystem.deleter import MAX_STARTS, Deleter
from tests.fakes import MakeConfig, feedback, transcript
from tests.fakes import fs_backend as backend

KINDS = [RecordKind.FEEDBACK, RecordKind.TRANSCRIPT]


async def _write(storage: FilesystemStorage, *, feedbacks: int, conversations: int) -> None:
    for _ in range(feedbacks):
        await storage.put_feedback(feedback())
    for _ in range(conversations):
        cid = new_record_id()
        for _ in range(3):
            await storage.put_transcript(transcript(cid=cid))


async def _claim_all(storage: FilesystemStorage, owner: str = "c") -> Claim:
    return await storage.claim(owner=owner, kinds=KINDS, max_records=10_000, max_bytes=10**9, lease_seconds=60)


def _records(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*.json"))


def _deleter(storage: FilesystemStorage) -> Deleter:
    deleter = storage._deleter
    assert deleter is not None
    return deleter


def _cmdline(pid: int) -> str:
    return Path(f"/proc/{pid}/cmdline").read_text()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


async def test_collected_records_are_deleted_by_a_helper_process_that_ends_with_the_store(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    storage = backend(make_config())
    async with storage:
        await _write(storage, feedbacks=300, conversations=5)
        claim = await _claim_all(storage)
        assert len(claim.records) == 315
        await storage.ack(claim, delete=True)
        pid = _deleter(storage).pid
        assert pid is not None and pid != os.getpid()
        assert "deleter_child.py" in _cmdline(pid)
        assert _records(tmp_path) == []
        # the emptied conversation folders and the user's folder are gone; the roots stay
        assert list((tmp_path / "transcripts").iterdir()) == []
        assert list((tmp_path / "feedback").iterdir()) == []
    assert not _alive(pid)


async def test_a_killed_helper_is_replaced_and_its_work_is_done(
    make_config: MakeConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    async with backend(make_config()) as storage:
        await _write(storage, feedbacks=20, conversations=1)
        await storage.ack(await _claim_all(storage), delete=True)
        first = _deleter(storage).pid
        assert first is not None
        os.kill(first, signal.SIGKILL)
        await _write(storage, feedbacks=200, conversations=2)
        with caplog.at_level(logging.WARNING, logger="lightspeed.storage"):
            await storage.ack(await _claim_all(storage), delete=True)
        second = _deleter(storage).pid
        assert second is not None and second != first
        assert _records(tmp_path) == []
        assert any(f"it ended (pid {first}, exit code -9)" in r.getMessage() for r in caplog.records)


async def test_without_a_helper_the_service_threads_delete(
    make_config: MakeConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture, monkeypatch: pytest.MonkeyPatch
) -> None:
    """No Python to start (``sys.executable`` empty, as in some embedded interpreters): each
    deletion tries to start the helper until MAX_STARTS tries are spent, says so, and the
    unlink lane's threads delete meanwhile and from then on."""
    monkeypatch.setattr(sys, "executable", "")
    async with backend(make_config()) as storage:
        with caplog.at_level(logging.WARNING, logger="lightspeed.storage"):
            for _ in range(3):
                await _write(storage, feedbacks=150, conversations=2)
                await storage.ack(await _claim_all(storage), delete=True)
                assert _records(tmp_path) == []
                assert list((tmp_path / "transcripts").iterdir()) == []
        assert _deleter(storage).pid is None
    tries = [r.getMessage() for r in caplog.records if "deleting helper: cannot start it" in r.getMessage()]
    assert len(tries) == MAX_STARTS
    assert "no more tries" in tries[-1] and "no more tries" not in tries[0]


@pytest.mark.parametrize("helper", [True, False], ids=["helper", "threads"])
async def test_a_record_that_cannot_be_deleted_fails_the_ack_and_stays_claimed(
    make_config: MakeConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, helper: bool
) -> None:
    """A record file replaced by a folder (it cannot be unlinked): the ack fails naming it,
    the other records are deleted, and the claim keeps all of them from other collectors
    until an ack succeeds."""
    if not helper:
        monkeypatch.setattr(sys, "executable", "")
    async with backend(make_config()) as storage:
        await _write(storage, feedbacks=200, conversations=0)
        claim = await _claim_all(storage)
        stuck = tmp_path / claim.records[7].name
        stuck.unlink()
        stuck.mkdir()
        (stuck / "inside").write_text("x")
        with pytest.raises(StorageUnavailable, match=str(stuck)):
            await storage.ack(claim, delete=True)
        assert [p for p in (tmp_path / "feedback").iterdir()] == [stuck]
        other = await _claim_all(storage, owner="other")
        assert other.records == ()
        (stuck / "inside").unlink()
        stuck.rmdir()
        await storage.ack(claim, delete=True)
        assert list((tmp_path / "feedback").iterdir()) == []
