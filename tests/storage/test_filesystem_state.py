"""The filesystem store's state directory: one SQLite database, nothing an exporter could take
for a record, the import of the file layout that came before it, and a total order of claims."""

from __future__ import annotations

import asyncio
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest

from lightspeed.config import Config
from lightspeed.records import ConversationTurn, RecordKind, hash_user_id
from lightspeed.storage import FEEDBACK_ENABLED_FLAG, Claim, StorageUnavailable
from lightspeed.storage.filesystem.statedb import _MIGRATIONS
from tests.fakes import ALICE, feedback
from tests.fakes import fs_backend as backend

MakeConfig = Callable[..., Config]
BIG = 10**9


async def test_the_state_directory_holds_no_json_and_no_record(make_config: MakeConfig, tmp_path: Path) -> None:
    """The upstream exporter ships and deletes every ``*.json`` under the data directory: nothing
    of our state may look like a record to it, whatever we did."""
    async with backend(make_config()) as store:
        cid = str(uuid.uuid4())
        await store.set_conversation_owner(cid, owner=ALICE)
        await store.append_turn(cid, turn=ConversationTurn(query="q", response="r"))
        await store.set_flag(FEEDBACK_ENABLED_FLAG, value=False)
        big = await store.put_feedback(feedback(llm_response="x" * 5000))
        small = await store.put_feedback(feedback())
        claim = await store.claim(owner="c", kinds=list(RecordKind), max_records=10, max_bytes=BIG, lease_seconds=60)
        await store.set_aside(claim, records=[big], reason="too large")
        await store.ack(claim, records=[small], delete=False)
        await store.claim(owner="c", kinds=list(RecordKind), max_records=10, max_bytes=BIG, lease_seconds=60)
        await store.ping()
    assert json_files(tmp_path) == [f"feedback/{small.record_id}.json"]
    state = names_in(store.state_root)
    assert state[0] == "aside" and all(n.startswith("state.sqlite3") for n in state[1:])


def json_files(root: Path) -> list[str]:
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*.json"))


def names_in(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir())


async def test_an_old_state_directory_is_imported_once_then_removed(make_config: MakeConfig, tmp_path: Path) -> None:
    state = tmp_path / ".lightspeed-state"
    cid, damaged = str(uuid.uuid4()), str(uuid.uuid4())
    folder = state / "conversations" / cid[-2:]
    folder.mkdir(parents=True)
    (folder / f"{cid}.json").write_text(json.dumps({"owner": ALICE}))
    turns = [json.dumps(ConversationTurn(query=f"q{i}", response="r").to_dict()) for i in range(2)]
    (folder / f"{cid}.turns.jsonl").write_text("\n".join(turns) + '\n{"query": "torn')
    (state / "conversations" / damaged[-2:]).mkdir(exist_ok=True)
    (state / "conversations" / damaged[-2:] / f"{damaged}.json").write_bytes(b"")  # a write that failed half-way
    (state / "flags").mkdir()
    (state / "flags" / f"{FEEDBACK_ENABLED_FLAG}.json").write_text(json.dumps({"value": False}))
    exported = feedback()
    (tmp_path / "feedback").mkdir()
    (tmp_path / "feedback" / f"{exported.record_id}.json").write_bytes(exported.to_json())
    (state / "exported.log").write_text(f"feedback/{exported.record_id}.json\n")
    (state / "claims").mkdir()
    (state / "claims" / f"{uuid.uuid4()}.json").write_text("{}")
    (state / "lock").write_bytes(b"")
    aside = state / "aside" / "feedback" / f"{uuid.uuid4()}.json"
    aside.parent.mkdir(parents=True)
    aside.write_text("{}")

    for _ in range(2):  # a second open imports nothing twice
        async with backend(make_config()) as store:
            assert await store.get_conversation_owner(cid) == ALICE
            assert [t.query for t in await store.get_turns(cid, limit=10)] == ["q0", "q1"]
            info = await store.get_conversation(cid)
            assert info is not None and info.message_count == 2 and info.created_at is not None
            assert await store.get_conversation_owner(damaged) is None
            assert await store.get_flag(FEEDBACK_ENABLED_FLAG) is False
            claim = await store.claim(owner="c", kinds=list(RecordKind), max_records=9, max_bytes=BIG, lease_seconds=9)
            assert claim.records == (), "a record exported before the upgrade was offered again"
            await store.release(claim)
    async with backend(make_config()) as store:  # the damaged conversation starts anew
        assert await store.set_conversation_owner(damaged, owner=ALICE) == ALICE
    assert sorted(p.name for p in state.iterdir() if not p.name.startswith("state.sqlite3")) == ["aside"]
    assert list(state.rglob("*.json")) == []
    assert aside.with_name(aside.name + ".aside").exists()


async def test_a_turn_is_seen_by_another_instance_as_soon_as_it_is_stored(make_config: MakeConfig) -> None:
    """What a follow-up on another worker needs: the previous turn, the moment append_turn returned."""
    config = make_config()
    async with backend(config) as a, backend(config) as b:
        cid = str(uuid.uuid4())
        await b.get_turns(cid, limit=5)  # b's reading connection is open before the write
        for i in range(20):
            await a.append_turn(cid, turn=ConversationTurn(query=f"q{i}", response="r"))
            assert [t.query for t in await b.get_turns(cid, limit=1)] == [f"q{i}"]


async def test_claims_of_dead_collectors_do_not_pile_up(make_config: MakeConfig) -> None:
    """A collector that died holding a claim leaves it behind; once another collector delivered
    its records, the next claim forgets it (while a record is still pending it stays, so the dead
    claim's owner would still learn ClaimLost)."""
    async with backend(make_config()) as store:
        stored = await store.put_feedback(feedback())

        async def claim(owner: str, lease: float = 60) -> object:
            return await store.claim(
                owner=owner, kinds=[RecordKind.FEEDBACK], max_records=10, max_bytes=BIG, lease_seconds=lease
            )

        def claims() -> list[str]:
            with sqlite3.connect(store.state_root / "state.sqlite3") as conn:
                return [row[0] for row in conn.execute("SELECT owner FROM claims ORDER BY seq")]

        await claim("dead", lease=0.05)
        await asyncio.sleep(0.1)  # the dead collector's lease runs out
        live = await claim("live")
        assert [r.name for r in live.records] == [stored.name]  # type: ignore[attr-defined]
        assert claims() == ["dead", "live"]  # in the order they were taken
        await store.ack(live, delete=True)  # type: ignore[arg-type]
        assert claims() == ["dead"]
        await claim("next")
        assert claims() == []


async def test_a_claim_taken_before_the_claims_schema_changed_still_holds_its_records(
    make_config: MakeConfig, tmp_path: Path
) -> None:
    """Schema 3 kept a row per claimed record (``members``); a claim taken then keeps its
    records from every other collector after the upgrade, and its owner can still ack them."""
    async with backend(make_config()) as store:
        held, free = await store.put_feedback(feedback()), await store.put_feedback(feedback())
    db = tmp_path / ".lightspeed-state" / "state.sqlite3"
    for path in db.parent.glob("state.sqlite3*"):  # a database of schema 3 instead
        path.unlink()
    with sqlite3.connect(db) as conn:
        for script in _MIGRATIONS[:3]:
            for statement in filter(str.strip, script.split(";")) if isinstance(script, str) else script:
                conn.execute(statement)
        conn.execute("PRAGMA user_version=3")
        conn.execute("INSERT INTO claims (claim_id, owner, expires_at) VALUES ('old', 'o', ?)", (time.time() + 60,))
        conn.execute("INSERT INTO members (claim_id, name) VALUES ('old', ?)", (held.name,))
    async with backend(make_config()) as store:
        claim = await store.claim(
            owner="n", kinds=[RecordKind.FEEDBACK], max_records=10, max_bytes=BIG, lease_seconds=60
        )
        assert [r.name for r in claim.records] == [free.name]
        old = Claim(claim_id="old", owner="o", expires_at=time.time() + 60, records=(held,))
        await store.ack(old, delete=True)
        assert await store.read_many([held, free]) == [None, feedback_bytes(tmp_path, free.name)]


def feedback_bytes(root: Path, name: str) -> bytes:
    return (root / name).read_bytes()


async def test_a_damaged_state_database_is_a_clear_error(
    make_config: MakeConfig, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The store opens (records can still be written), says what is wrong, fails what needs the
    database, and works once the file is replaced, without being reopened."""
    state = tmp_path / ".lightspeed-state"
    state.mkdir()
    (state / "state.sqlite3").write_bytes(b"this is not a database" * 100)
    store = backend(make_config())
    cid = str(uuid.uuid4())
    try:
        with caplog.at_level(logging.ERROR, logger="lightspeed.storage.filesystem"):
            await store.open()
        assert [r.getMessage() for r in caplog.records if "state.sqlite3" in r.getMessage()], caplog.text
        for failing in (store.ping(), store.set_conversation_owner(cid, owner=ALICE)):
            with pytest.raises(StorageUnavailable, match=r"state\.sqlite3"):
                await failing
        await store.put_feedback(feedback())  # the records' directory is fine
        (state / "state.sqlite3").unlink()
        await store.ping()
        assert await store.set_conversation_owner(cid, owner=ALICE) == ALICE
    finally:
        await store.aclose()


async def test_a_conversation_deleted_by_another_process_is_forgotten_here_too(
    make_config: MakeConfig, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Owners are remembered only briefly, so a worker does not go on using a conversation
    that another worker deleted (its follow-ups would store turns with no owner)."""
    import lightspeed.storage.filesystem.querystate as fs_querystate

    monkeypatch.setattr(fs_querystate, "_OWNER_CACHE_SECONDS", 0.05)
    config = make_config()
    async with backend(config) as a, backend(config) as b:
        cid = str(uuid.uuid4())
        await a.set_conversation_owner(cid, owner=ALICE)
        assert await b.get_conversation_owner(cid) == ALICE  # b remembers it now
        await a.delete_conversation(cid)
        await asyncio.sleep(0.1)
        assert await b.get_conversation_owner(cid) is None
        bob = hash_user_id("bob")
        assert await b.set_conversation_owner(cid, owner=bob) == bob  # starts afresh, for whoever comes
