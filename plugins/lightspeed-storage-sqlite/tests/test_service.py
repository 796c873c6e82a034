"""The service on the SQLite backend: selected by its entry point, reported on /v1/info, and
feedback from two worker-like app instances lands in the one database file."""

from __future__ import annotations

from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lightspeed import create_app
from lightspeed.config import parse_config
from lightspeed.records import RecordKind, hash_user_id, new_record_id
from lightspeed.state import storage_from

pytestmark = pytest.mark.asyncio

USER = "00000000-0000-0000-0000-000"  # the noop authentication module's default user


async def test_two_service_instances_share_one_database(tmp_path: Path) -> None:
    config = parse_config(
        {
            "name": "sqlite",
            "user_data_collection": {
                "feedback_enabled": True,
                "transcripts_enabled": True,
                "storage": {"backend": "sqlite", "options": {"path": str(tmp_path / "db" / "store.db")}},
            },
        },
        env={},
    )
    async with (
        TestClient(TestServer(create_app(config))) as first,
        TestClient(TestServer(create_app(config))) as second,
    ):
        info = await (await first.get("/v1/info")).json()
        assert info["storage"] == {"backend": "sqlite", "distribution": "lightspeed-storage-sqlite", "version": "0.1.0"}
        assert (await second.get("/readiness")).status == 200

        cid = new_record_id()
        await storage_from(first.app).set_conversation_owner(cid, owner=hash_user_id(USER))
        body = {"conversation_id": cid, "user_question": "q", "llm_response": "r", "sentiment": -1}
        for client in (first, second, first):
            resp = await client.post("/v1/feedback", json=body)
            assert resp.status == 200, await resp.text()

        put = await second.put("/v1/feedback/status", json={"status": False})
        assert (await put.json())["status"]["previous_status"] is True
        status = await (await first.get("/v1/feedback/status")).json()
        assert status["status"]["enabled"] is False

        stats = await storage_from(second.app).pending_stats()
        assert stats.records[RecordKind.FEEDBACK] == 3


async def test_a_database_under_a_file_starts_the_service_and_heals(tmp_path: Path) -> None:
    blocker = tmp_path / "volume"
    blocker.write_bytes(b"")  # a regular file where the database's directory belongs
    store = {"backend": "sqlite", "options": {"path": str(blocker / "store.db")}}
    config = parse_config({"user_data_collection": {"feedback_enabled": True, "storage": store}}, env={})
    async with TestClient(TestServer(create_app(config))) as client:
        resp = await client.get("/readiness")
        body = await resp.json()
        assert resp.status == 503 and f"cannot create the directory of {blocker / 'store.db'}" in body["reason"], body
        assert (await client.get("/v1/info")).status == 200
        resp = await client.get("/v1/feedback/status")
        assert resp.status == 500  # the flag lives in the database

        blocker.unlink()  # the volume is fixed: no restart
        assert (await client.get("/readiness")).status == 200
        assert (await (await client.get("/v1/feedback/status")).json())["status"]["enabled"] is True
