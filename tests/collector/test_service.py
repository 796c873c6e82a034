"""The collector inside the service: started and stopped with the app, /metrics, /readiness."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lightspeed import create_app
from lightspeed.ingress import Fault
from lightspeed.records import hash_user_id
from lightspeed.state import storage_from
from tests.collector.collector_support import Ingress, MakeCollectorConfig, tree_files


async def start(config: object) -> TestClient:  # type: ignore[type-arg]
    client: TestClient = TestClient(TestServer(create_app(config), host="127.0.0.1"))  # type: ignore[arg-type,type-arg]
    await client.start_server()
    return client


async def post_feedback(client: TestClient, n: int) -> None:  # type: ignore[type-arg]
    for i in range(n):
        cid = str(uuid.uuid4())
        await storage_from(client.app).set_conversation_owner(cid, owner=hash_user_id("alice"))
        body = {"conversation_id": cid, "user_question": f"q{i}", "llm_response": "a", "sentiment": 1}
        resp = await client.post("/v1/feedback?user_id=alice", json=body)
        assert resp.status == 200, await resp.text()


async def wait_for(predicate: object, limit: float = 10) -> None:
    for _ in range(int(limit / 0.02)):
        if predicate():  # type: ignore[operator]
            return
        await asyncio.sleep(0.02)
    raise AssertionError("condition not reached")


async def test_the_service_collects_and_makes_a_final_collection_on_shutdown(
    collector_config: MakeCollectorConfig, ingress: Ingress
) -> None:
    client = await start(collector_config(enabled=True, collection_interval=3600))
    try:
        await post_feedback(client, 3)
        resp = await client.get("/readiness")
        body = await resp.json()
        assert resp.status == 200 and body["ready"] is True
        assert body["data_collector"]["enabled"] is True
    finally:
        await client.close()  # the final collection ships what the first cycle did not see
    got = ingress.received()
    assert len(got) == 3 and all(name.startswith("feedback/") for name in got)


async def test_metrics_and_readiness_show_a_rejected_upload_while_the_service_keeps_answering(
    collector_config: MakeCollectorConfig, ingress: Ingress
) -> None:
    ingress.emulator.add_fault(Fault(status=415, repeat=True))
    config = collector_config(enabled=True, collection_interval=1, retry_base_seconds=0.05, shutdown_timeout_seconds=2)
    client = await start(config)
    try:
        await post_feedback(client, 2)
        await wait_for(lambda: len(ingress.emulator.attempts) >= 2)
        assert (await client.get("/liveness")).status == 200
        body = await (await client.get("/readiness")).json()
        assert body["ready"] is True
        status = body["data_collector"]
        assert status["status"] == "rejected" and status["consecutive_failures"] >= 1
        assert "415" in status["last_error"]
        resp = await client.get("/metrics")
        text = await resp.text()
        assert resp.status == 200 and resp.content_type == "text/plain"
        assert 'lightspeed_uploads_total{outcome="rejected"}' in text
        assert "lightspeed_upload_consecutive_failures" in text
        assert 'lightspeed_records_pending{kind="feedback"} 2.0' in text
    finally:
        ingress.emulator.faults.clear()
        await client.close()
    assert len(ingress.received()) == 2  # the final collection delivered them once the ingress accepted


async def test_two_apps_in_one_process_have_their_own_metrics(
    collector_config: MakeCollectorConfig, ingress: Ingress
) -> None:
    first = await start(collector_config())
    second = await start(collector_config())
    try:
        for client in (first, second):
            text = await (await client.get("/metrics")).text()
            assert "lightspeed_records_uploaded_total" in text
            body = await (await client.get("/readiness")).json()
            assert "data_collector" not in body  # off
    finally:
        await first.close()
        await second.close()


async def test_a_final_collection_that_takes_too_long_is_cut_off_and_keeps_the_data(
    collector_config: MakeCollectorConfig, ingress: Ingress, caplog: pytest.LogCaptureFixture
) -> None:
    config = collector_config(enabled=True, collection_interval=3600, shutdown_timeout_seconds=0.5)
    client = await start(config)
    await post_feedback(client, 1)
    ingress.emulator.add_fault(Fault(delay=3, status=500))
    feedback_root = Path(str(config.user_data_collection.feedback_storage))
    with caplog.at_level(logging.ERROR, logger="lightspeed.collector"):
        await client.close()
    assert any("did not finish within 0.5 s" in r.getMessage() for r in caplog.records)
    assert ingress.received() == {}
    assert len(tree_files(feedback_root)) == 1
