"""The filesystem store's conversation metadata and deletions, beyond the conformance kit:
a state database of the first schema gains the metadata, and a deletion finds every file of
the conversation (set-aside copies, feedback another program wrote) and nothing else."""

from __future__ import annotations

import asyncio
import json
import sqlite3
import uuid
from pathlib import Path

import pytest

from lightspeed.records import ConversationTurn, hash_user_id
from lightspeed.storage.filesystem import FilesystemStorage
from lightspeed.storage.filesystem.statedb import _MIGRATIONS, DB_NAME
from lightspeed.testing import collection_config, make_feedback, make_transcript

pytestmark = pytest.mark.asyncio
ALICE, BOB = hash_user_id("alice"), hash_user_id("bob")


def store(tmp_path: Path) -> FilesystemStorage:
    return FilesystemStorage(options={"state_path": str(tmp_path / "state")}, collection=collection_config(tmp_path))


async def test_a_first_schema_database_gains_the_metadata(tmp_path: Path) -> None:
    (tmp_path / "state").mkdir()
    cid = str(uuid.uuid4())
    first = _MIGRATIONS[0]
    assert isinstance(first, str)
    with sqlite3.connect(tmp_path / "state" / DB_NAME) as db:
        db.executescript(first)
        db.execute("INSERT INTO owners (conversation_id, owner) VALUES (?, ?)", (cid, ALICE))
        for day, model in ((1, "m1"), (2, "m2")):
            turn = ConversationTurn(query="q", response="r", timestamp=f"2024-01-0{day}T00:00:00.000000Z", model=model)
            db.execute("INSERT INTO turns (conversation_id, turn) VALUES (?, ?)", (cid, json.dumps(turn.to_dict())))
        db.execute("PRAGMA user_version=1")
    async with store(tmp_path) as backend:
        info = await backend.get_conversation(cid)
        assert info is not None
        assert (info.message_count, info.last_used_model) == (2, "m2")
        assert (info.created_at, info.last_message_at) == ("2024-01-01T00:00:00.000000Z", "2024-01-02T00:00:00.000000Z")


async def test_a_deletion_finds_every_file_of_the_conversation_and_nothing_else(tmp_path: Path) -> None:
    cid, other = str(uuid.uuid4()), str(uuid.uuid4())
    async with store(tmp_path) as backend:
        await backend.set_conversation_owner(cid, owner=ALICE)
        aside = await backend.put_transcript(make_transcript(user=ALICE, conversation_id=cid))
        kept = await backend.put_transcript(make_transcript(user=ALICE, conversation_id=other))
        by_bob = await backend.put_transcript(
            make_transcript(user=BOB, conversation_id=cid)
        )  # query_other_conversations
        claim = await backend.claim(owner="t", kinds=[aside.kind], max_records=10, max_bytes=10**9, lease_seconds=60)
        await backend.set_aside(claim, records=[r for r in claim.records if r.name == aside.name], reason="big")
        await backend.release(claim)
        # Feedback another program wrote into the folder, in the seed's shape.
        foreign = tmp_path / "feedback" / f"{uuid.uuid4()}.json"
        foreign.write_bytes(make_feedback(user_id=BOB, conversation_id=cid).to_json())
        unrelated = await backend.put_feedback(make_feedback(user_id=ALICE, conversation_id=other))

        deletion = await backend.delete_conversation(cid)
        assert (deletion.conversations, deletion.transcripts, deletion.feedback) == (1, 2, 1)
        assert not foreign.exists()
        assert not list((tmp_path / "state" / "aside").rglob(f"*{aside.record_id}*"))  # copy and reason
        assert not (tmp_path / "transcripts" / BOB).exists()  # emptied folders go
        assert not (tmp_path / "transcripts" / ALICE / cid).exists()
        assert await backend.read_many([kept, unrelated, by_bob]) == [
            make_transcript_bytes(tmp_path, kept.name),
            make_transcript_bytes(tmp_path, unrelated.name),
            None,
        ]


def make_transcript_bytes(tmp_path: Path, name: str) -> bytes:
    folder, rest = name.split("/", 1)
    return (tmp_path / folder / rest).read_bytes()


async def test_another_process_sees_a_deleted_conversation_gone_once_its_memory_lapses(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from lightspeed.storage.filesystem import querystate as fs_querystate

    monkeypatch.setattr(fs_querystate, "_OWNER_CACHE_SECONDS", 0.2)
    cid = str(uuid.uuid4())
    async with store(tmp_path) as first, store(tmp_path) as second:
        await first.set_conversation_owner(cid, owner=ALICE)
        assert await second.get_conversation_owner(cid) == ALICE  # remembered by the second
        await first.delete_conversation(cid)
        assert await first.get_conversation_owner(cid) is None  # the deleting one forgets at once
        await asyncio.sleep(0.3)
        assert await second.get_conversation_owner(cid) is None
        assert await second.set_conversation_owner(cid, owner=BOB) == BOB  # starts afresh
