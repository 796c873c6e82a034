"""``POST /v1/streaming_query/interrupt``: the caller stops its own stream, on the worker that
runs it or on another one sharing the store; the texts and status codes of the upstream."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from aiohttp import ClientResponse

from lightspeed.records import hash_user_id
from lightspeed.state import storage_from
from tests.query.fake_llm import FakeLLM
from tests.query.query_support import Client, free_port, llm_sections, sse_events, transcripts

NOTE = "\n\n*Response stopped by the user.*"
SLOW = {"query": "q", "provider": "fake", "model": "slow"}


async def start_stream(client: Client, user: str = "alice", tokens: int = 3) -> tuple[ClientResponse, str, bytes]:
    """A slow stream of ``user``, read until ``tokens`` tokens arrived; its response, request id, bytes so far."""
    resp = await client.post("/v1/streaming_query", params={"user_id": user}, json=SLOW)
    assert resp.status == 200
    seen = b""
    while seen.count(b'"event": "token"') < tokens:
        seen += await resp.content.readany()
    start = json.loads(seen.split(b"\n\n")[0][len(b"data: ") :])
    assert start["event"] == "start"
    return resp, start["data"]["request_id"], seen


async def interrupt(client: Client, request_id: str, user: str = "alice") -> tuple[int, Any]:
    resp = await client.post("/v1/streaming_query/interrupt", params={"user_id": user}, json={"request_id": request_id})
    return resp.status, await resp.json()


@pytest.fixture(autouse=True)
def long_streams(fake_llm: FakeLLM) -> None:
    fake_llm.slow_tokens = 2000  # 40 s: only an interrupt ends them within a test
    fake_llm.slow_delay = 0.02


async def test_the_owner_interrupts_its_stream(query_client: Any) -> None:
    client = await query_client()
    resp, rid, seen = await start_stream(client)
    assert await interrupt(client, rid) == (
        200,
        {"request_id": rid, "interrupted": True, "message": "Streaming request interrupted"},
    )
    events = sse_events((seen + await resp.content.read()).decode())
    assert [e["event"] for e in events[-2:]] == ["token", "interrupted"]
    assert events[-1]["data"] == {"request_id": rid}
    assert events[-2]["data"]["token"] == NOTE
    partial = "".join(e["data"]["token"] for e in events[1:-2])
    assert partial.startswith("t0 t1 t2")
    assert "end" not in [e["event"] for e in events]

    [stored] = await transcripts(client)
    assert stored["llm_response"] == partial + NOTE
    assert stored["truncated"] is True
    cid = events[0]["data"]["conversation_id"]
    [turn] = await storage_from(client.app).get_turns(cid, limit=5)
    assert turn.response == partial + NOTE and turn.truncated

    assert await interrupt(client, rid) == (
        200,
        {
            "request_id": rid,
            "interrupted": False,
            "message": "Streaming request already completed; nothing to interrupt",
        },
    )


async def test_another_users_unknown_and_improper_request_ids(query_client: Any) -> None:
    # No authorization section, so every caller has the *_other_conversations actions; a stream
    # stays its owner's all the same, as upstream (its interrupt checks ownership, not actions).
    client = await query_client()
    resp, rid, _ = await start_stream(client, user="bob")
    assert await interrupt(client, rid, user="alice") == (
        403,
        {
            "detail": {
                "response": "User does not have permission to interrupt this streaming request",
                "cause": f"User alice does not own streaming request with ID {rid}",
            }
        },
    )
    unknown = "123e4567-e89b-12d3-a456-426614174000"
    assert await interrupt(client, unknown) == (
        404,
        {
            "detail": {
                "response": "Streaming Request not found",
                "cause": f"Streaming Request with ID {unknown} does not exist",
            }
        },
    )
    status, body = await interrupt(client, "bad id\n")
    assert status == 422
    assert body["detail"][0]["msg"] == "Value error, Improper request ID bad id\n"
    missing = await client.post("/v1/streaming_query/interrupt", json={})
    assert missing.status == 422
    assert (await interrupt(client, rid, user="bob"))[1]["interrupted"] is True
    await resp.read()


async def test_a_text_plain_stream_ends_with_the_note(query_client: Any) -> None:
    client = await query_client()
    resp = await client.post(
        "/v1/streaming_query",
        params={"user_id": "alice"},
        json={**SLOW, "media_type": "text/plain"},
        headers={"X-Request-ID": "plain-stream-1"},
    )
    seen = b""
    while seen.count(b" ") < 3:
        seen += await resp.content.readany()
    assert (await interrupt(client, "plain-stream-1"))[1]["interrupted"] is True
    text = (seen + await resp.content.read()).decode()
    assert text.startswith("t0 t1 t2") and text.endswith(NOTE)
    [stored] = await transcripts(client)
    assert stored["llm_response"] == text


async def test_a_finished_stream_is_not_interrupted(query_client: Any) -> None:
    client = await query_client()
    resp = await client.post("/v1/streaming_query", params={"user_id": "alice"}, json={"query": "q"})
    events = sse_events(await resp.text())
    assert events[-1]["event"] == "end"
    rid = events[0]["data"]["request_id"]
    status, body = await interrupt(client, rid)
    assert (status, body["interrupted"]) == (200, False)
    [stored] = await transcripts(client)
    assert not stored["llm_response"].endswith(NOTE)


@pytest.mark.parametrize("backend", ["filesystem", "sqlite"])
async def test_an_interrupt_reaches_a_stream_on_another_worker(
    make_client: Any, fake_llm: FakeLLM, tmp_path: Path, backend: str
) -> None:
    """Two workers (two applications on one sqlite store): the interrupt arrives at the one
    that does not run the stream; that one's poller finds the mark and stops it."""
    sections = llm_sections(fake_llm.url)
    options = {"path": str(tmp_path / "shared.sqlite3")} if backend == "sqlite" else {}
    store = {"backend": backend, "options": options}
    first: Client = await make_client(user_data_collection={"storage": store}, **sections)
    second: Client = await make_client(user_data_collection={"storage": store}, **sections)
    resp, rid, seen = await start_stream(first)
    assert await interrupt(second, "123e4567-e89b-12d3-a456-426614174000") == (404, not_found_body())
    assert await interrupt(second, rid, user="mallory") == (403, forbidden_body(rid))
    status, body = await interrupt(second, rid)
    assert (status, body["interrupted"]) == (200, True)
    events = sse_events((seen + await resp.content.read()).decode())
    assert events[-1] == {"event": "interrupted", "data": {"request_id": rid}}
    assert len(events) < 200  # stopped long before the 2000 tokens
    cid = events[0]["data"]["conversation_id"]
    [turn] = await storage_from(second.app).get_turns(cid, limit=5)
    assert turn.response.endswith(NOTE)
    assert await storage_from(second.app).get_conversation_owner(cid) == hash_user_id("alice")
    assert (await interrupt(second, rid))[1]["interrupted"] is False


def not_found_body() -> dict[str, Any]:
    unknown = "123e4567-e89b-12d3-a456-426614174000"
    return {
        "detail": {
            "response": "Streaming Request not found",
            "cause": f"Streaming Request with ID {unknown} does not exist",
        }
    }


def forbidden_body(rid: str) -> dict[str, Any]:
    return {
        "detail": {
            "response": "User does not have permission to interrupt this streaming request",
            "cause": f"User mallory does not own streaming request with ID {rid}",
        }
    }


async def test_a_client_chosen_request_id_never_takes_over_another_stream(query_client: Any) -> None:
    client = await query_client()
    resp = await client.post(
        "/v1/streaming_query", params={"user_id": "bob"}, json=SLOW, headers={"X-Request-ID": "shared-id"}
    )
    seen = await resp.content.readuntil(b"\n\n")
    assert json.loads(seen[len(b"data: ") :])["data"]["request_id"] == "shared-id"
    resp2 = await client.post(
        "/v1/streaming_query", params={"user_id": "mallory"}, json=SLOW, headers={"X-Request-ID": "shared-id"}
    )
    start2 = json.loads((await resp2.content.readuntil(b"\n\n"))[len(b"data: ") :])
    assert resp2.headers["X-Request-ID"] == "shared-id"
    assert start2["data"]["request_id"] != "shared-id"  # a fresh id of its own
    assert (await interrupt(client, "shared-id", user="mallory"))[0] == 403
    assert (await interrupt(client, start2["data"]["request_id"], user="mallory"))[1]["interrupted"] is True
    assert (await interrupt(client, "shared-id", user="bob"))[1]["interrupted"] is True
    await resp.read()
    await resp2.read()


async def serve_process(config: Path, port: int) -> asyncio.subprocess.Process:
    env = {k: v for k, v in os.environ.items() if k != "LIGHTSPEED_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lightspeed", "serve", "-c", str(config), "--port", str(port),
        env=env, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL,
    )  # fmt: skip
    async with aiohttp.ClientSession() as session:
        for _ in range(300):
            assert proc.returncode is None, "the service exited"
            with contextlib.suppress(aiohttp.ClientError):
                async with session.get(f"http://127.0.0.1:{port}/liveness") as resp:
                    if resp.status == 200:
                        return proc
            await asyncio.sleep(0.05)
    raise AssertionError("the service did not come up within 15 s")


@pytest.mark.parametrize("backend", ["filesystem", "sqlite"])
async def test_an_interrupt_reaches_a_stream_in_another_process(
    fake_llm: FakeLLM, tmp_path: Path, backend: str
) -> None:
    """Two service processes on one store (what ``service.workers: 2`` runs, each on a port of
    its own so the test chooses which one answers): stream on one, interrupt on the other."""
    storage: dict[str, Any] = {"backend": "sqlite", "options": {"path": str(tmp_path / "shared.sqlite3")}}
    if backend == "filesystem":
        storage = {"backend": "filesystem", "options": {"state_path": str(tmp_path / "state")}}
    config = tmp_path / "lightspeed-stack.yaml"
    config.write_text(
        yaml.safe_dump(
            {
                "service": {"host": "127.0.0.1"},
                "user_data_collection": {
                    "transcripts_enabled": True,
                    "transcripts_storage": str(tmp_path / "transcripts"),
                    "storage": storage,
                },
                **llm_sections(fake_llm.url),
            }
        )
    )
    ports = [free_port(), free_port()]
    procs = [await serve_process(config, port) for port in ports]
    try:
        async with aiohttp.ClientSession() as session:
            resp = await session.post(f"http://127.0.0.1:{ports[0]}/v1/streaming_query", json=SLOW)
            start = json.loads((await resp.content.readuntil(b"\n\n"))[len(b"data: ") :])
            rid = start["data"]["request_id"]
            async with session.post(
                f"http://127.0.0.1:{ports[1]}/v1/streaming_query/interrupt", json={"request_id": rid}
            ) as answer:
                assert (answer.status, (await answer.json())["interrupted"]) == (200, True)
            rest = (await asyncio.wait_for(resp.content.read(), 10)).decode()
            events = sse_events(rest)
            assert events[-1] == {"event": "interrupted", "data": {"request_id": rid}}
            assert events[-2]["data"]["token"].endswith(NOTE)
            async with session.post(
                f"http://127.0.0.1:{ports[1]}/v1/streaming_query/interrupt", json={"request_id": rid}
            ) as answer:
                assert (await answer.json())["interrupted"] is False
    finally:
        for proc in procs:
            proc.send_signal(signal.SIGTERM)
        for proc in procs:
            assert await asyncio.wait_for(proc.wait(), 30) == 0
