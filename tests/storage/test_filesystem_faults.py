"""Storage faults on real filesystems: a disk that fills up, and directories the service may not
write. Each ends in a clear ``StorageUnavailable``, leaves nothing that later reads treat as
damaged, and heals by itself (no reopen, no restart) when the fault goes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import textwrap
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from lightspeed.config import Config
from lightspeed.records import ConversationTurn
from lightspeed.storage import StorageUnavailable, create_backend
from lightspeed.storage.filesystem import FilesystemStorage
from tests.fakes import ALICE, feedback, fill, transcript

MakeConfig = Callable[..., Config]


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs of our own, so filling it harms nobody."""
    if os.geteuid() != 0:
        pytest.skip("mounting a small tmpfs needs root (mount -t tmpfs); run the suite as root to test a full disk")
    mnt = tmp_path / "disk"
    mnt.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(mnt)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here (a container without CAP_SYS_ADMIN?): {done.stderr.decode().strip()}")
    try:
        yield mnt
    finally:
        subprocess.run(["umount", "-l", str(mnt)], check=False)


def assert_nothing_damaged(disk: Path) -> None:
    """Every ``*.json`` is a whole JSON document; no temporary file was left; the state
    directory holds no ``*.json`` at all."""
    for path in disk.rglob("*.json"):
        assert ".lightspeed-state" not in path.parts, f"{path}: a *.json in the state directory"
        json.loads(path.read_bytes())
    assert [p for p in disk.rglob("*.tmp")] == []


async def test_a_full_disk_is_a_clear_error_leaves_nothing_half_made_and_heals(
    small_disk: Path, make_config: MakeConfig
) -> None:
    config = make_config(
        user_data_collection={
            "feedback_storage": str(small_disk / "feedback"),
            "transcripts_storage": str(small_disk / "transcripts"),
        }
    )
    store = create_backend(config.user_data_collection)
    assert isinstance(store, FilesystemStorage)
    async with store:
        before = str(uuid.uuid4())
        await store.set_conversation_owner(before, owner=ALICE)
        await store.append_turn(before, turn=ConversationTurn(query="q0", response="r0"))
        await store.put_transcript(transcript(cid=before))
        filler = fill(small_disk)

        with pytest.raises(StorageUnavailable, match="No space left on device"):
            await store.put_feedback(feedback())
        with pytest.raises(StorageUnavailable, match="No space left on device"):
            await store.put_transcript(transcript(cid=before))
        with pytest.raises(StorageUnavailable):
            await store.ping()  # /readiness: 503 while the disk is full
        # A turn larger than any free page: the transaction cannot commit, so nothing of it stays.
        with pytest.raises(StorageUnavailable, match="full"):
            await store.append_turn(before, turn=ConversationTurn(query="big", response="x" * 400_000))
        during = str(uuid.uuid4())
        try:  # small enough that SQLite may still find room in pages it has: either way, whole
            await store.set_conversation_owner(during, owner=ALICE)
            owner_stored = True
        except StorageUnavailable:
            owner_stored = False
        assert_nothing_damaged(small_disk)
        assert [t.query for t in await store.get_turns(before, limit=10)] == ["q0"]
        assert await store.get_conversation_owner(during) == (ALICE if owner_stored else None)

        filler.unlink()  # the fault goes: everything works again, without a reopen
        await store.ping()
        await store.put_feedback(feedback())
        await store.put_transcript(transcript(cid=during))
        assert await store.set_conversation_owner(during, owner=ALICE) == ALICE
        await store.append_turn(during, turn=ConversationTurn(query="q1", response="r1"))
        assert [t.query for t in await store.get_turns(during, limit=10)] == ["q1"]
        assert await store.get_conversation_owner(during) == ALICE
    assert_nothing_damaged(small_disk)


#: Run as ``nobody`` without capabilities, so file modes bind (root would ignore them).
_UNPRIVILEGED = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups", "--inh-caps=-all"]

_SCRIPT = textwrap.dedent(
    """
    import asyncio, json, os, sys, uuid
    from lightspeed.config import UserDataCollectionConfig
    from lightspeed.records import FeedbackRecord, hash_user_id
    from lightspeed.storage import StorageUnavailable
    from lightspeed.storage.filesystem import FilesystemStorage

    base = sys.argv[1]
    alice = hash_user_id("alice")
    udc = UserDataCollectionConfig(
        feedback_enabled=True, feedback_storage=f"{base}/data/feedback", transcripts_enabled=True,
        transcripts_storage=f"{base}/data/transcripts",
    )
    out = {}

    def record():
        return FeedbackRecord(user_id=alice, conversation_id=str(uuid.uuid4()), user_question="q",
                              llm_response="a", sentiment=1)

    async def attempt(name, coro):
        try:
            await coro
            out[name] = "ok"
        except StorageUnavailable as exc:
            out[name] = "StorageUnavailable: " + str(exc)

    async def main():
        os.makedirs(f"{base}/data/.lightspeed-state")
        os.chmod(f"{base}/data/.lightspeed-state", 0o500)  # the state directory cannot be written
        store = FilesystemStorage(options={}, collection=udc)
        await attempt("open_unwritable_state", store.open())  # opens: the rest may work
        await attempt("owner_unwritable_state", store.set_conversation_owner(str(uuid.uuid4()), owner=alice))
        await attempt("ping_unwritable_state", store.ping())
        os.chmod(f"{base}/data/.lightspeed-state", 0o700)
        await attempt("open_again", store.open())  # the same instance, no restart
        await attempt("put", store.put_feedback(record()))
        os.chmod(f"{base}/data/feedback", 0o500)  # the records' directory cannot be written
        await attempt("put_unwritable", store.put_feedback(record()))
        await attempt("ping_unwritable", store.ping())
        os.chmod(f"{base}/data/feedback", 0o700)
        await attempt("put_healed", store.put_feedback(record()))
        await attempt("ping_healed", store.ping())
        cid = str(uuid.uuid4())
        await attempt("owner", store.set_conversation_owner(cid, owner=alice))
        await store.aclose()
        print(json.dumps(out))

    asyncio.run(main())
    """
)


def test_unwritable_directories_are_clear_errors_and_heal_without_a_restart(tmp_path: Path) -> None:
    if os.geteuid() != 0:
        pytest.skip("switching to the user nobody needs root (setpriv)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed: cannot drop root's capabilities")
    base = tempfile.mkdtemp(prefix="lightspeed-unwritable-")  # /tmp: reachable by nobody
    try:
        os.chown(base, 65534, 65534)
        done = subprocess.run(
            [*_UNPRIVILEGED, sys.executable, "-c", _SCRIPT, base], capture_output=True, text=True, timeout=60
        )
        assert done.returncode == 0, done.stderr[-3000:]
        out = json.loads(done.stdout.strip().splitlines()[-1])
        for name in ("owner_unwritable_state", "ping_unwritable_state"):
            assert out[name].startswith("StorageUnavailable: state_path "), out[name]
            assert "Permission denied" in out[name]
        assert out["put_unwritable"].startswith("StorageUnavailable: ") and "Permission denied" in out["put_unwritable"]
        assert out["ping_unwritable"].startswith("StorageUnavailable: ")
        expected_ok = ("open_unwritable_state", "open_again", "put", "put_healed", "ping_healed", "owner")
        assert {k: out[k] for k in expected_ok} == dict.fromkeys(expected_ok, "ok")
        feedback_dir = Path(base) / "data" / "feedback"
        names = sorted(p.suffix for p in feedback_dir.iterdir())
        assert names == [".json", ".json"], "a failed write left something behind"
    finally:
        shutil.rmtree(base, ignore_errors=True)
