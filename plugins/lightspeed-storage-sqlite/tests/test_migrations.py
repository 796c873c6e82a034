"""A database made by the first schema version opens under the newest, its data carried over."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path

import pytest
from lightspeed_storage_sqlite import _MIGRATIONS, SqliteStorage

from lightspeed.records import ConversationTurn, RecordKind
from lightspeed.testing import collection_config, make_feedback, make_transcript
from lightspeed.testing.storage import USER

pytestmark = pytest.mark.asyncio


async def test_version_one_data_gains_metadata_and_can_be_deleted(tmp_path: Path) -> None:
    path = tmp_path / "old.sqlite3"
    cid = "123e4567-e89b-12d3-a456-426614174000"
    transcript = make_transcript(conversation_id=cid)
    feedback = make_feedback(conversation_id=cid)
    turns = [
        ConversationTurn(query="q1", response="r1", timestamp="2024-01-01T00:00:00.000000Z", model="m1", provider="p1"),
        ConversationTurn(query="q2", response="r2", timestamp="2024-01-02T00:00:00.000000Z", model="m2", provider="p2"),
    ]
    first = _MIGRATIONS[0]
    assert isinstance(first, str)
    with sqlite3.connect(path) as db:
        db.executescript(first)
        db.execute("INSERT INTO conversations (conversation_id, owner) VALUES (?, ?)", (cid, USER))
        for turn in turns:
            db.execute("INSERT INTO turns (conversation_id, turn) VALUES (?, ?)", (cid, json.dumps(turn.to_dict())))
        for kind, name, record in (
            (RecordKind.TRANSCRIPT, f"transcripts/{USER}/{cid}/{transcript.record_id}.json", transcript),
            (RecordKind.FEEDBACK, f"feedback/{feedback.record_id}.json", feedback),
        ):
            data = record.to_json()
            db.execute(
                "INSERT INTO records (name, kind, record_id, size, data) VALUES (?, ?, ?, ?, ?)",
                (name, kind.value, record.record_id, len(data), data),
            )
        db.execute("PRAGMA user_version=1")

    backend = SqliteStorage(options={"path": str(path)}, collection=collection_config(tmp_path, backend="sqlite"))
    async with backend:
        info = await backend.get_conversation(cid)
        assert info is not None
        assert (info.message_count, info.created_at, info.last_message_at) == (
            2,
            "2024-01-01T00:00:00.000000Z",
            "2024-01-02T00:00:00.000000Z",
        )
        assert (info.last_used_model, info.last_used_provider) == ("m2", "p2")
        await backend.append_turn(cid, turn=turns[0])
        assert (await backend.list_conversations(USER)).conversations[0].message_count == 3
        deletion = await backend.delete_conversation(cid)
        assert (deletion.conversations, deletion.turns, deletion.transcripts, deletion.feedback) == (1, 3, 1, 1)
