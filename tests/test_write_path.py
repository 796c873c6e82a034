"""The fast feedback write path: the shared flag read by the store's writer thread, and
record and request ids made without a syscall per request (docs/benchmarks.md says why).

Each test checks what a user relies on: a flag set anywhere is seen at once, even by
requests batched with writes; a flag that cannot be read is a clear error and the writer
keeps working; ids stay unique (also across a fork) and well-formed.
"""

from __future__ import annotations

import asyncio
import os
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from lightspeed.api.errors import REQUEST_ID_HEADER
from lightspeed.config import Config
from lightspeed.records import new_record_id
from lightspeed.storage import FEEDBACK_ENABLED_FLAG, StorageUnavailable
from tests.fakes import feedback
from tests.fakes import fs_backend as backend

MakeConfig = Callable[..., Config]


def record_names(config: Config) -> list[str]:
    """The stems of the stored feedback files (sync: the tests read after the writes settled)."""
    return [p.stem for p in Path(config.user_data_collection.feedback_storage or "").glob("*.json")]


async def test_flag_set_elsewhere_is_seen_by_reads_batched_with_writes(make_config: MakeConfig) -> None:
    config = make_config()
    a, b = backend(config), backend(config)
    await a.open()
    await b.open()
    try:
        for value in (False, True, False):
            await b.set_flag(FEEDBACK_ENABLED_FLAG, value=value)
            # Reads queued with many writes share the writer's batches: every one sees the value.
            results = await asyncio.gather(
                *(a.get_flag(FEEDBACK_ENABLED_FLAG) for _ in range(50)),
                *(a.put_feedback(feedback(str(uuid.uuid4()))) for _ in range(50)),
            )
            assert results[:50] == [value] * 50
        assert len(record_names(config)) == 150
    finally:
        await a.aclose()
        await b.aclose()


async def test_flag_of_a_closed_store_is_storage_unavailable(make_config: MakeConfig) -> None:
    store = backend(make_config())
    with pytest.raises(StorageUnavailable, match="not open"):
        await store.get_flag(FEEDBACK_ENABLED_FLAG)
    await store.open()
    await store.aclose()
    with pytest.raises(StorageUnavailable, match="not open"):
        await store.get_flag(FEEDBACK_ENABLED_FLAG)


async def test_posted_feedback_gets_unique_uuid4_names_and_request_ids(
    make_client: Any, new_conversation: Any, make_config: MakeConfig
) -> None:
    client = await make_client()
    cid = await new_conversation(client.app)
    body = {"conversation_id": cid, "user_question": "q", "llm_response": "a", "sentiment": 1}
    responses = await asyncio.gather(*(client.post("/v1/feedback", json=body) for _ in range(300)))
    assert [r.status for r in responses] == [200] * 300
    request_ids = {r.headers[REQUEST_ID_HEADER] for r in responses}
    assert len(request_ids) == 300
    assert all(len(rid) == 32 and int(rid, 16) >= 0 for rid in request_ids)
    names = record_names(make_config())
    assert len(names) == 300
    assert all(uuid.UUID(n).version == 4 and str(uuid.UUID(n)) == n for n in names)


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_record_ids_differ_after_fork() -> None:
    new_record_id()  # fill the pool in the parent
    read_end, write_end = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: report its next id and leave at once
        try:
            os.write(write_end, new_record_id().encode())
        finally:
            os._exit(0)
    os.close(write_end)
    child_id = os.read(read_end, 100).decode()
    os.close(read_end)
    os.waitpid(pid, 0)
    parent_id = new_record_id()
    assert uuid.UUID(child_id).version == 4
    assert child_id != parent_id, "the child repeated the parent's pooled random bytes"
