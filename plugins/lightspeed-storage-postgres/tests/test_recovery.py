"""Losing the database: clear ``StorageUnavailable`` errors (5xx with the cause over HTTP, 503 on
``/readiness``), then recovery without a restart once the server is back. Each test stops and
starts a server of its own."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import pytest_asyncio
from aiohttp.test_utils import TestClient, TestServer
from lightspeed_storage_postgres import PostgresStorage
from lightspeed_storage_postgres.testing import TemporaryCluster

from lightspeed import create_app
from lightspeed.config import parse_config
from lightspeed.records import RecordKind, hash_user_id, new_record_id
from lightspeed.state import storage_from
from lightspeed.storage import StorageUnavailable
from lightspeed.testing import collection_config, make_feedback

pytestmark = pytest.mark.asyncio


@pytest_asyncio.fixture(loop_scope="function")
async def cluster() -> AsyncIterator[TemporaryCluster]:
    server = await asyncio.to_thread(TemporaryCluster().start)
    try:
        yield server
    finally:
        await asyncio.to_thread(server.stop)


async def test_operations_fail_clearly_while_the_server_is_down_and_recover(
    cluster: TemporaryCluster, tmp_path: Path
) -> None:
    backend = PostgresStorage(
        options={"dsn": cluster.dsn, "pool_max_size": 3, "connect_timeout_seconds": 2},
        collection=collection_config(tmp_path, backend="postgres"),
    )
    await backend.open()
    try:
        await backend.put_feedback(make_feedback())
        await asyncio.to_thread(cluster.stop, remove=False)

        with pytest.raises(StorageUnavailable) as info:
            await backend.put_feedback(make_feedback())
        assert "PostgreSQL at postgresql://postgres@/postgres" in str(info.value)
        with pytest.raises(StorageUnavailable):
            await backend.ping()
        with pytest.raises(StorageUnavailable):
            await backend.claim(owner="x", kinds=tuple(RecordKind), max_records=5, max_bytes=10**9, lease_seconds=5)

        await asyncio.to_thread(cluster.start)
        await backend.ping()  # the same instance: no reopen, no restart
        await backend.put_feedback(make_feedback())
        claim = await backend.claim(owner="x", kinds=tuple(RecordKind), max_records=5, max_bytes=10**9, lease_seconds=5)
        assert len(claim.records) == 2
    finally:
        await backend.aclose()


async def test_opening_without_a_server_is_unavailable(tmp_path: Path) -> None:
    backend = PostgresStorage(
        options={"dsn": f"postgresql://postgres@/postgres?host={tmp_path}", "connect_timeout_seconds": 2},
        collection=collection_config(tmp_path, backend="postgres"),
    )
    with pytest.raises(StorageUnavailable, match=r"PostgreSQL at .* is not available"):
        await backend.open()
    await backend.aclose()


async def test_the_service_answers_with_the_cause_and_recovers(cluster: TemporaryCluster, tmp_path: Path) -> None:
    config = parse_config(
        {
            "name": "pg",
            "user_data_collection": {
                "feedback_enabled": True,
                "storage": {"backend": "postgres", "options": {"dsn": cluster.dsn, "connect_timeout_seconds": 2}},
            },
        },
        env={},
    )
    async with TestClient(TestServer(create_app(config))) as client:
        info = await (await client.get("/v1/info")).json()
        assert info["storage"] == {
            "backend": "postgres",
            "distribution": "lightspeed-storage-postgres",
            "version": "0.1.0",
        }
        cid = new_record_id()
        user = "00000000-0000-0000-0000-000"
        await storage_from(client.app).set_conversation_owner(cid, owner=hash_user_id(user))
        body = {"conversation_id": cid, "user_question": "q", "llm_response": "r", "sentiment": 1}
        assert (await client.post("/v1/feedback", json=body)).status == 200

        await asyncio.to_thread(cluster.stop, remove=False)
        ready = await client.get("/readiness")
        assert ready.status == 503
        assert "PostgreSQL at" in (await ready.json())["reason"]
        failed = await client.post("/v1/feedback", json=body)
        assert failed.status == 503  # unreachable, not broken: clients and balancers retry
        assert "PostgreSQL at" in (await failed.json())["detail"]["cause"]

        await asyncio.to_thread(cluster.start)
        assert (await client.get("/readiness")).status == 200
        assert (await client.post("/v1/feedback", json=body)).status == 200
        stats = await storage_from(client.app).pending_stats()
        assert stats.records[RecordKind.FEEDBACK] == 2
