"""The filesystem store on real directories: records (put), conversation owners, flags,
history, permissions, durability, directories removed under it, and its options.

The claim/lease/ack side is tested elsewhere."""

from __future__ import annotations

import asyncio
import json
import os
import shutil
import sqlite3
import stat
import sys
import threading
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from lightspeed import create_app
from lightspeed.config import Config
from lightspeed.records import (
    ConversationTurn,
    RecordKind,
    Transcript,
    TranscriptMetadata,
    hash_user_id,
)
from lightspeed.storage import (
    FEEDBACK_ENABLED_FLAG,
    StorageConfigError,
    StorageRootUnavailable,
    StorageUnavailable,
)
from lightspeed.storage.filesystem import FilesystemStorage
from lightspeed.storage.filesystem.querystate import get_turns as store_get_turns
from tests.fakes import ALICE, feedback, transcript
from tests.fakes import fs_backend as backend

MakeConfig = Callable[..., Config]


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def tree(root: Path) -> Iterator[Path]:
    yield root
    yield from root.rglob("*")


@pytest.fixture
async def store(make_config: MakeConfig) -> AsyncIterator[FilesystemStorage]:
    async with backend(make_config()) as s:
        yield s


# ------------------------------------------------------------------ records


async def test_feedback_file_layout_and_json(store: FilesystemStorage, tmp_path: Path) -> None:
    rec = feedback(categories=("helpful",), user_feedback="é ok")
    ref = await store.put_feedback(rec)
    path = tmp_path / "feedback" / f"{rec.record_id}.json"
    assert ref.kind is RecordKind.FEEDBACK and ref.record_id == rec.record_id
    assert ref.name == f"feedback/{rec.record_id}.json"
    assert ref.size == path.stat().st_size
    data = json.loads(path.read_bytes())
    assert data == rec.to_dict()
    assert data["user_feedback"] == "é ok"
    assert [p.name for p in (tmp_path / "feedback").iterdir()] == [path.name]


async def test_transcript_layout(store: FilesystemStorage, tmp_path: Path) -> None:
    rec = transcript()
    ref = await store.put_transcript(rec)
    path = tmp_path / "transcripts" / ALICE / rec.conversation_id / f"{rec.record_id}.json"
    assert ref.name == f"transcripts/{ALICE}/{rec.conversation_id}/{rec.record_id}.json"
    data = json.loads(path.read_bytes())
    assert list(data)[:7] == [
        "metadata",
        "redacted_query",
        "query_is_valid",
        "llm_response",
        "rag_chunks",
        "truncated",
        "attachments",
    ]
    assert data["metadata"]["user_id"] == ALICE


@pytest.mark.parametrize(
    "meta",
    [
        {"user_id": "alice"},
        {"user_id": "../" + ALICE[3:]},
        {"conversation_id": "../../etc"},
        {"conversation_id": "a/b"},
    ],
)
async def test_transcript_path_components_are_checked(
    store: FilesystemStorage, tmp_path: Path, meta: dict[str, str]
) -> None:
    base = {"user_id": ALICE, "conversation_id": str(uuid.uuid4())} | meta
    rec = Transcript(
        metadata=TranscriptMetadata(provider=None, model=None, query_provider=None, query_model=None, **base),
        redacted_query="q",
        llm_response="a",
    )
    before = set(tree(tmp_path))
    with pytest.raises(ValueError):
        await store.put_transcript(rec)
    assert set(tree(tmp_path)) == before


async def test_bad_record_id_rejected(store: FilesystemStorage, tmp_path: Path) -> None:
    with pytest.raises(ValueError):
        await store.put_feedback(feedback(record_id="../../x"))
    assert list((tmp_path / "feedback").iterdir()) == []


async def test_put_when_closed(make_config: MakeConfig) -> None:
    s = backend(make_config())
    with pytest.raises(StorageUnavailable):
        await s.put_feedback(feedback())
    async with s:
        await s.put_feedback(feedback())
    with pytest.raises(StorageUnavailable):
        await s.put_feedback(feedback())


async def test_concurrent_writes_never_show_a_partial_file(store: FilesystemStorage, tmp_path: Path) -> None:
    fdir = tmp_path / "feedback"
    tdir = tmp_path / "transcripts"
    stop = asyncio.Event()
    seen: set[str] = set()
    scans = 0

    def scan() -> None:
        for path in [*fdir.glob("*.json"), *tdir.glob("*/*/*.json")]:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                continue
            json.loads(data)  # raises on a partial file
            seen.add(path.name)

    async def reader() -> None:
        nonlocal scans
        while not stop.is_set():
            await asyncio.to_thread(scan)
            scans += 1

    task = asyncio.create_task(reader())
    try:
        writes: list[Any] = []
        for i in range(1500):
            writes.append(store.put_feedback(feedback()) if i % 3 else store.put_transcript(transcript()))
        refs = await asyncio.gather(*writes)
    finally:
        stop.set()
        await task
    scan()
    assert len(seen) == len(refs) == 1500
    assert scans > 1
    leftovers = [p for p in tree(tmp_path) if p.is_file() and not p.name.endswith(".json")]
    assert [p for p in leftovers if "feedback" in p.parts or "transcripts" in p.parts] == []


async def test_cancelled_put_does_not_break_the_writer(store: FilesystemStorage, tmp_path: Path) -> None:
    tasks = [asyncio.create_task(store.put_feedback(feedback())) for _ in range(50)]
    await asyncio.sleep(0)
    for t in tasks[::2]:
        t.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    await store.put_feedback(feedback())
    files = list((tmp_path / "feedback").glob("*.json"))
    assert 26 <= len(files) <= 51
    for f in files:
        json.loads(f.read_bytes())


# ------------------------------------------------------------------ permissions and durability


async def test_default_permissions(store: FilesystemStorage, tmp_path: Path) -> None:
    cid = str(uuid.uuid4())
    await store.put_feedback(feedback(cid))
    await store.put_transcript(transcript(cid=cid))
    await store.set_conversation_owner(cid, owner=ALICE)
    await store.set_flag(FEEDBACK_ENABLED_FLAG, value=False)
    await store.append_turn(cid, turn=ConversationTurn(query="q", response="a"))
    created = [p for p in tree(tmp_path) if p != tmp_path]
    assert any(p.is_dir() for p in created) and any(p.is_file() for p in created)
    for p in created:
        assert mode(p) == (0o700 if p.is_dir() else 0o600), p


async def test_configured_permissions_despite_umask(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(
        user_data_collection={"storage": {"options": {"file_mode": "0640", "dir_mode": 0o750}}},
    )
    old = os.umask(0o077)  # would strip the group bits we ask for
    try:
        async with backend(config) as s:
            await s.put_feedback(feedback())
            await s.put_transcript(transcript())
            await s.set_conversation_owner(str(uuid.uuid4()), owner=ALICE)
    finally:
        os.umask(old)
    created = [p for p in tree(tmp_path) if p != tmp_path]
    for p in created:
        assert mode(p) == (0o750 if p.is_dir() else 0o640), p


async def test_fsync_durability(make_config: MakeConfig, tmp_path: Path) -> None:
    config = make_config(user_data_collection={"storage": {"options": {"durability": "fsync"}}})
    async with backend(config) as s:
        assert s.fsync
        refs = await asyncio.gather(*(s.put_feedback(feedback()) for _ in range(20)))
        await s.put_transcript(transcript())
        cid = str(uuid.uuid4())
        assert await s.set_conversation_owner(cid, owner=ALICE) == ALICE
        assert await s.set_flag("x", value=True) is None
        await s.append_turn(cid, turn=ConversationTurn(query="q", response="a"))
        assert len(await s.get_turns(cid, limit=5)) == 1
    assert len(list((tmp_path / "feedback").glob("*.json"))) == len(refs) == 20


# ------------------------------------------------------------------ directories removed by someone else


async def test_removed_directories_are_recreated(store: FilesystemStorage, tmp_path: Path) -> None:
    cid = str(uuid.uuid4())
    await store.put_feedback(feedback(cid))
    await store.put_transcript(transcript(cid=cid))

    shutil.rmtree(tmp_path / "feedback")  # the exporter sidecar removes emptied folders, the root included
    await store.put_feedback(feedback(cid))
    assert len(list((tmp_path / "feedback").glob("*.json"))) == 1
    assert mode(tmp_path / "feedback") == 0o700

    shutil.rmtree(tmp_path / "transcripts" / ALICE / cid)
    await store.put_transcript(transcript(cid=cid))
    shutil.rmtree(tmp_path / "transcripts" / ALICE)
    await store.put_transcript(transcript(cid=cid))
    shutil.rmtree(tmp_path / "transcripts")
    await store.put_transcript(transcript(cid=cid))
    assert len(list((tmp_path / "transcripts" / ALICE / cid).glob("*.json"))) == 1
    await store.ping()


SIDECAR = """
import contextlib, pathlib, sys, time
stop, roots = pathlib.Path(sys.argv[1]), [pathlib.Path(a) for a in sys.argv[2:]]
print("ready", flush=True)
while not stop.exists():
    for root in roots:
        for path in sorted(root.rglob("*.json"), reverse=True):
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
                print(path.name, flush=True)
        for d in sorted((p for p in root.rglob("*") if p.is_dir()), reverse=True):
            with contextlib.suppress(OSError):
                d.rmdir()
        with contextlib.suppress(OSError):
            root.rmdir()
    time.sleep(0.01)
"""


async def test_writes_survive_a_sidecar_that_keeps_removing_folders(store: FilesystemStorage, tmp_path: Path) -> None:
    """Like the upstream exporter, in its own process: take every finished record, then remove
    every emptied folder, the roots included, about a hundred times a second."""
    stop = tmp_path / "stop"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SIDECAR,
        str(stop),
        str(tmp_path / "feedback"),
        str(tmp_path / "transcripts"),
        stdout=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        assert await asyncio.wait_for(proc.stdout.readline(), 60) == b"ready\n"  # slow to start on a busy machine
        cid = str(uuid.uuid4())
        refs = []
        for _ in range(8):  # in waves, the sidecar at work between and during them
            refs += await asyncio.gather(
                *(
                    store.put_feedback(feedback(cid)) if i % 2 else store.put_transcript(transcript(cid=cid))
                    for i in range(50)
                )
            )
            await asyncio.sleep(0.02)
    finally:
        stop.touch()
        out, _ = await proc.communicate()
    taken = out.decode().split()
    remaining = [p.name for p in tree(tmp_path) if p.suffix == ".json" and "conversations" not in p.parts]
    assert taken, "the sidecar took nothing: the test tested nothing"
    assert sorted(taken + remaining) == sorted(f"{r.record_id}.json" for r in refs)


async def test_removed_state_directory_is_recreated(store: FilesystemStorage) -> None:
    cid = str(uuid.uuid4())
    await store.set_flag("flag", value=True)
    shutil.rmtree(store.state_root)
    assert await store.get_flag("flag") is None
    assert await store.set_flag("flag", value=False) is None
    assert await store.set_conversation_owner(cid, owner=ALICE) == ALICE
    await store.append_turn(cid, turn=ConversationTurn(query="q", response="a"))
    await store.ping()


async def test_unwritable_directory_is_a_clear_error(store: FilesystemStorage, tmp_path: Path) -> None:
    fdir = tmp_path / "feedback"
    shutil.rmtree(fdir)
    fdir.write_bytes(b"")  # root can write anywhere: a file where the directory belongs stops it
    with pytest.raises(StorageUnavailable) as info:
        await store.put_feedback(feedback())
    assert str(fdir) in str(info.value) and "Not a directory" in str(info.value)
    with pytest.raises(StorageUnavailable):
        await store.ping()
    # The writer survives: other writes still work, and nothing half-written is left.
    await store.put_transcript(transcript())
    fdir.unlink()
    await store.put_feedback(feedback())
    assert [p.suffix for p in fdir.iterdir()] == [".json"]


async def test_a_root_that_cannot_be_created_opens_and_fails_its_writes_until_fixed(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    blocker = tmp_path / "feedback"
    blocker.write_bytes(b"")
    s = backend(make_config())
    await s.open()
    try:
        with pytest.raises(StorageRootUnavailable) as info:
            await s.put_feedback(feedback())
        assert info.value.root == str(blocker)
        assert "feedback_storage" in str(info.value) and "Not a directory" in str(info.value)
        with pytest.raises(StorageUnavailable, match="feedback_storage"):
            await s.ping()
        await s.put_transcript(transcript())  # the other root works meanwhile
        blocker.unlink()
        await s.ping()
        await s.put_feedback(feedback())
        assert [p.suffix for p in blocker.iterdir()] == [".json"]
    finally:
        await s.aclose()
    with pytest.raises(StorageUnavailable):
        await s.put_feedback(feedback())


# ------------------------------------------------------------------ owners, flags, history


async def test_conversation_owner(store: FilesystemStorage, make_config: MakeConfig) -> None:
    cid = str(uuid.uuid4())
    bob = hash_user_id("bob")
    assert await store.get_conversation_owner(cid) is None
    assert await store.set_conversation_owner(cid, owner=ALICE) == ALICE
    assert await store.set_conversation_owner(cid, owner=bob) == ALICE  # never changes once recorded
    assert await store.get_conversation_owner(cid) == ALICE
    async with backend(make_config()) as other:  # another process on the same store
        assert await other.get_conversation_owner(cid) == ALICE
        assert await other.set_conversation_owner(cid, owner=bob) == ALICE


async def test_conversation_owner_race(make_config: MakeConfig) -> None:
    async with backend(make_config()) as a, backend(make_config()) as b:
        cids = [f"conv_{uuid.uuid4().hex}{uuid.uuid4().hex[:16]}" for _ in range(20)]
        users = [hash_user_id(str(i)) for i in range(4)]
        for cid in cids:
            got = await asyncio.gather(*(s.set_conversation_owner(cid, owner=u) for s in (a, b) for u in users))
            assert len(set(got)) == 1 and got[0] in users


async def test_conversation_owner_bad_input(store: FilesystemStorage) -> None:
    for cid in ("../../etc", "", "x"):
        with pytest.raises(ValueError):
            await store.set_conversation_owner(cid, owner=ALICE)
        with pytest.raises(ValueError):
            await store.get_conversation_owner(cid)
    with pytest.raises(ValueError):
        await store.set_conversation_owner(str(uuid.uuid4()), owner="alice")


async def test_flags(store: FilesystemStorage, make_config: MakeConfig) -> None:
    assert await store.get_flag(FEEDBACK_ENABLED_FLAG) is None
    assert await store.set_flag(FEEDBACK_ENABLED_FLAG, value=False) is None
    assert await store.set_flag(FEEDBACK_ENABLED_FLAG, value=False) is False
    async with backend(make_config()) as other:
        assert await other.get_flag(FEEDBACK_ENABLED_FLAG) is False
        assert await other.set_flag(FEEDBACK_ENABLED_FLAG, value=True) is False
    assert await store.get_flag(FEEDBACK_ENABLED_FLAG) is True
    for name in ("", "../x", "A", "a b"):
        with pytest.raises(ValueError):
            await store.get_flag(name)


async def test_flag_swaps_are_not_lost(make_config: MakeConfig) -> None:
    async with backend(make_config()) as a, backend(make_config()) as b:
        values = [i % 2 == 0 for i in range(40)]
        previous = await asyncio.gather(*(s.set_flag("f", value=v) for s, v in zip([a, b] * 20, values, strict=True)))
        # Each swap saw exactly one earlier value: the number of changes seen matches the final state.
        assert previous.count(None) == 1
        assert await a.get_flag("f") in (True, False)


async def test_turns(store: FilesystemStorage, make_config: MakeConfig) -> None:
    cid = str(uuid.uuid4())
    assert await store.get_turns(cid, limit=10) == []
    turns = [ConversationTurn(query=f"q{i}", response=f"a{i} é", provider="echo", model="echo") for i in range(5)]
    for t in turns:
        await store.append_turn(cid, turn=t)
    assert await store.get_turns(cid, limit=10) == turns
    assert await store.get_turns(cid, limit=2) == turns[-2:]
    assert await store.get_turns(cid, limit=0) == []
    async with backend(make_config()) as other:
        assert await other.get_turns(cid, limit=3) == turns[-3:]
    with pytest.raises(ValueError):
        await store.append_turn("../x", turn=turns[0])


async def test_history_reads_served_once_the_state_directory_can_be_used(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    # The state database cannot be opened at start: the loop has no reading connection of its
    # own; once the directory is fixed, reads work (on a pool thread, which makes the loop one).
    blocker = tmp_path / "state"
    blocker.write_bytes(b"")
    storage = {"backend": "filesystem", "options": {"state_path": str(blocker)}}
    s = backend(make_config(user_data_collection={"storage": storage}))
    await s.open()
    try:
        cid = str(uuid.uuid4())
        with pytest.raises(StorageUnavailable, match="state_path"):
            await s.get_turns(cid, limit=5)
        blocker.unlink()
        turn = ConversationTurn(query="q", response="a")
        await s.append_turn(cid, turn=turn)
        for _ in range(2):  # the first on a pool thread, the second on the loop's new connection
            assert await s.get_turns(cid, limit=5) == [turn]
        assert s._loop_reader is not None and s._loop_reader.current() is not None
        assert await s.set_conversation_owner(cid, owner=ALICE) == ALICE
        s._owners.clear()  # read it from the database, not from the process's memory
        assert await s.get_conversation_owner(cid) == ALICE
    finally:
        await s.aclose()


async def test_a_busy_state_database_does_not_fail_a_history_read(store: FilesystemStorage, tmp_path: Path) -> None:
    # SQLite may refuse a read with SQLITE_BUSY (another process recovering the WAL, say); the
    # loop never waits for a lock: the read goes to a pool thread, which may wait.
    cid = str(uuid.uuid4())
    turn = ConversationTurn(query="q", response="a")
    await store.append_turn(cid, turn=turn)
    holder = sqlite3.connect(tmp_path / "other.db", isolation_level=None)
    waiter = sqlite3.connect(tmp_path / "other.db", isolation_level=None, timeout=0)
    holder.execute("BEGIN IMMEDIATE")
    with pytest.raises(sqlite3.OperationalError) as info:
        waiter.execute("BEGIN IMMEDIATE")  # a real SQLITE_BUSY, as SQLite raises it
    holder.close()
    waiter.close()
    threads: list[str] = []

    def read(conn: sqlite3.Connection) -> list[ConversationTurn]:
        threads.append(threading.current_thread().name)
        if threading.current_thread() is threading.main_thread():
            raise info.value
        return store_get_turns(conn, cid, 5)

    assert await store._query_read(read) == [turn]
    assert threads[0] == threading.main_thread().name and threads[1].startswith("lightspeed-fs-pool")
    # Anything else SQLite refuses is the caller's error, as before.
    with pytest.raises(StorageUnavailable, match="state database"):
        await store._query_read(lambda conn: conn.execute("SELECT nothing FROM nowhere").fetchall())


async def test_turns_concurrent_appends_all_kept(make_config: MakeConfig) -> None:
    cid = str(uuid.uuid4())
    async with backend(make_config()) as a, backend(make_config()) as b:
        await asyncio.gather(
            *(
                s.append_turn(cid, turn=ConversationTurn(query=f"{i}", response="r" * 3000))
                for i, s in enumerate([a, b] * 50)
            )
        )
        got = await a.get_turns(cid, limit=1000)
    assert sorted(int(t.query) for t in got) == list(range(100))


# ------------------------------------------------------------------ options


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        ({"durabilty": "fsync"}, ["durabilty: unknown key (known: state_path, durability, file_mode, dir_mode)"]),
        ({"durability": "always"}, ["durability: must be one of rename, fsync, got 'always'"]),
        ({"file_mode": "rw-r--r--"}, ["file_mode: must be an octal permission such as '0600', got 'rw-r--r--'"]),
        ({"dir_mode": 0o7777}, ["dir_mode: must be an octal permission such as '0600', got 4095"]),
        ({"dir_mode": True}, ["dir_mode: must be an octal permission such as '0600', got True"]),
        ({"state_path": 3}, ["state_path: expected a string, got an integer"]),
        (
            {"durabilty": "x", "file_mod": 1, "durability": "no"},
            [
                "durability: must be one of rename, fsync, got 'no'",
                "durabilty: unknown key (known: state_path, durability, file_mode, dir_mode)",
                "file_mod: unknown key (known: state_path, durability, file_mode, dir_mode)",
            ],
        ),
    ],
)
def test_bad_options(make_config: MakeConfig, options: dict[str, Any], expected: list[str]) -> None:
    config = make_config(user_data_collection={"storage": {"options": options}})
    with pytest.raises(StorageConfigError) as info:
        create_app(config)
    assert info.value.problems == expected
    assert "user_data_collection.storage.options." + expected[0] in str(info.value)


@pytest.mark.parametrize(
    ("udc", "fragment"),
    [
        ({"transcripts_storage": "{tmp}/feedback"}, "storage roots feedback_storage"),
        ({"transcripts_storage": "{tmp}/feedback/t"}, "storage roots feedback_storage"),
        ({"storage": {"options": {"state_path": "{tmp}/feedback/state"}}}, "state_path: feedback_storage"),
        ({"storage": {"options": {"state_path": "{tmp}"}}}, "state_path: feedback_storage"),
    ],
)
def test_overlapping_roots(make_config: MakeConfig, tmp_path: Path, udc: dict[str, Any], fragment: str) -> None:
    udc = json.loads(json.dumps(udc).replace("{tmp}", str(tmp_path)))
    with pytest.raises(StorageConfigError) as info:
        backend(make_config(user_data_collection=udc))
    assert any(p.startswith(fragment) and "overlap" in p for p in info.value.problems), info.value.problems


def test_state_path_default_and_option(make_config: MakeConfig, tmp_path: Path) -> None:
    assert backend(make_config()).state_root == tmp_path / ".lightspeed-state"
    s = backend(make_config(user_data_collection={"storage": {"options": {"state_path": str(tmp_path / "st")}}}))
    assert s.state_root == tmp_path / "st"


async def test_temporary_files_of_killed_writers_are_removed_when_stale(make_config: MakeConfig) -> None:
    """A writer killed between create and rename leaves a dot-file ending in .tmp; once it is
    older than an hour, opening the store (feedback root) or a collector's scan (transcripts)
    removes it. Fresh ones, which may belong to a live writer, and records are left alone."""
    config = make_config()
    udc = config.user_data_collection
    assert udc.feedback_storage and udc.transcripts_storage
    feedback_root, transcripts_root = Path(udc.feedback_storage), Path(udc.transcripts_storage)
    conv_dir = transcripts_root / ALICE / str(uuid.uuid4())
    for d in (feedback_root, conv_dir):
        d.mkdir(parents=True)
    old = [feedback_root / ".a.123.1.tmp", conv_dir / ".b.123.2.tmp"]
    fresh = feedback_root / ".c.123.3.tmp"
    for f in [*old, fresh]:
        f.write_bytes(b'{"half": ')
    for f in old:
        os.utime(f, (0, 0))
    storage = FilesystemStorage(options={}, collection=udc)
    await storage.open()
    try:
        assert not old[0].exists()
        assert fresh.exists()
        record = await storage.put_feedback(feedback())
        await storage.claim(owner="c", kinds=[RecordKind.TRANSCRIPT], max_records=10, max_bytes=10**6, lease_seconds=60)
        assert not old[1].exists()
        assert (feedback_root / f"{record.record_id}.json").exists()
    finally:
        await storage.aclose()


# ------------------------------------------------------------------ claims from one scan


async def _feedback_with_ages(storage: FilesystemStorage, n: int, start: int) -> list[str]:
    """``n`` feedback records whose mtimes are start, start+1, ... seconds after the epoch
    (so their claim order is known); their names, oldest first."""
    names = []
    for i in range(n):
        stored = await storage.put_feedback(feedback())
        assert storage.feedback_root is not None
        os.utime(storage.feedback_root / f"{stored.record_id}.json", (start + i, start + i))
        names.append(stored.name)
    return names


async def _claim_names(storage: FilesystemStorage, n: int) -> list[str]:
    claim = await storage.claim(
        owner="c", kinds=[RecordKind.FEEDBACK], max_records=n, max_bytes=10**9, lease_seconds=60
    )
    return [r.name for r in claim.records]


async def test_later_claims_of_a_cycle_take_the_next_records_of_the_same_scan(make_config: MakeConfig) -> None:
    """One scan serves the claims that follow it: records written after it wait until its
    records are all claimed (they are newer anyway), then the next claim scans again."""
    async with backend(make_config()) as storage:
        first = await _feedback_with_ages(storage, 12, start=1000)
        assert await _claim_names(storage, 5) == first[:5]
        later = await _feedback_with_ages(storage, 3, start=500)  # older mtimes, but written after the scan
        assert await _claim_names(storage, 5) == first[5:10]
        assert await _claim_names(storage, 5) == first[10:]
        assert await _claim_names(storage, 5) == later  # a new scan finds them
        assert await _claim_names(storage, 5) == []


async def test_released_records_are_claimed_again_first(make_config: MakeConfig) -> None:
    """A failed upload releases its batch; those records are older than what the last scan
    left, so the next claim scans again and returns them first."""
    async with backend(make_config()) as storage:
        names = await _feedback_with_ages(storage, 8, start=1000)
        claim = await storage.claim(
            owner="c", kinds=[RecordKind.FEEDBACK], max_records=3, max_bytes=10**9, lease_seconds=60
        )
        await storage.release(claim)
        assert await _claim_names(storage, 4) == names[:4]


async def test_records_another_collector_delivered_since_the_scan_are_not_delivered_again(
    make_config: MakeConfig,
) -> None:
    """Collector A scanned before B claimed, uploaded and deleted some records. A's later
    claims never return records B holds, and those B deleted read as missing (None), so
    nothing is packed twice; exported ones (cleanup_after_send: false) are never returned."""
    config = make_config()
    async with backend(config) as a, backend(config) as b:
        names = await _feedback_with_ages(a, 12, start=1000)
        assert await _claim_names(a, 2) == names[:2]  # A's backlog now holds names[2:]
        b_claim = await b.claim(
            owner="b", kinds=[RecordKind.FEEDBACK], max_records=4, max_bytes=10**9, lease_seconds=60
        )
        assert [r.name for r in b_claim.records] == names[2:6]
        await b.ack(b_claim, records=b_claim.records[:2], delete=True)  # names[2:4] deleted
        await b.ack(b_claim, records=b_claim.records[2:], delete=False)  # names[4:6] exported
        b_held = await b.claim(owner="b", kinds=[RecordKind.FEEDBACK], max_records=2, max_bytes=10**9, lease_seconds=60)
        assert [r.name for r in b_held.records] == names[6:8]  # held by B from here on
        a_claim = await a.claim(
            owner="a", kinds=[RecordKind.FEEDBACK], max_records=10, max_bytes=10**9, lease_seconds=60
        )
        got = [r.name for r in a_claim.records]
        assert not set(got) & set(names[4:8])
        contents = await a.read_many(a_claim.records)
        present = [r.name for r, data in zip(a_claim.records, contents, strict=True) if data is not None]
        assert present == names[8:]


_RID = "0b5e1f4e-7a41-4b8e-9d38-0e2f4f5b9a11"


@pytest.mark.parametrize(
    "name",
    [
        "feedback/../../secret.json",
        f"feedback/../{_RID}.json",
        f"feedback/{_RID}.json\n",
        f"feedback/{_RID}",
        f"transcripts/{ALICE}/../../{_RID}.json",
        f"transcripts/{ALICE}/{_RID}/../{_RID}.json",
        f"transcripts/{ALICE.upper()}/{_RID}/{_RID}.json",
        f"transcripts/{ALICE}/{_RID}/sub/{_RID}.json",
        f"/etc/{_RID}.json",
        f"other/{_RID}.json",
    ],
)
async def test_record_names_from_callers_never_reach_outside_the_roots(store: FilesystemStorage, name: str) -> None:
    """Record names come back from callers (a claim's records); every component is checked
    before a name becomes a path to read or delete."""
    from lightspeed.storage import StoredRecord

    rec = StoredRecord(kind=RecordKind.FEEDBACK, record_id=_RID, name=name, size=10)
    with pytest.raises(ValueError, match="not a record name"):
        await store.read_record(rec)
    with pytest.raises(ValueError, match="not a record name"):
        await store.read_many([rec])


@pytest.mark.parametrize("size", [0, 1, 2999, 3000, 3001, 10**6])
async def test_read_many_returns_the_exact_bytes_whatever_size_the_caller_names(
    store: FilesystemStorage, size: int
) -> None:
    """read_many reads a file with one call sized from the claim; a size that is wrong (a
    file rewritten by hand, a caller's mistake) still gives the whole file, byte for byte."""
    import attrs

    stored = await store.put_feedback(feedback(llm_response="y" * 5000))
    assert store.feedback_root is not None
    path = store.feedback_root / f"{stored.record_id}.json"
    path.write_bytes(b"z" * 3000)
    [data] = await store.read_many([attrs.evolve(stored, size=size)])
    assert data == b"z" * 3000


async def test_a_scan_that_finds_more_than_the_backlog_holds_keeps_the_oldest(
    make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A scan keeps at most a bounded number of records (memory stays flat however many files
    there are); it keeps the oldest, and the rest are found by the next scan."""
    import lightspeed.storage.filesystem.scanning as scanning

    monkeypatch.setattr(scanning, "BACKLOG_MAX", 3)
    async with backend(make_config()) as storage:
        names = await _feedback_with_ages(storage, 11, start=1000)
        # Written newest first, so the scan meets the oldest last and must trim the others away.
        for i, name in enumerate(names):
            assert storage.feedback_root is not None
            path = storage.feedback_root / name.split("/")[1]
            os.utime(path, (2000 - i, 2000 - i))
        oldest_first = list(reversed(names))
        got = []
        while batch := await _claim_names(storage, 2):
            got += batch
        assert got == oldest_first
