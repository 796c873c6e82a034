"""A follow-up on any worker, sent the moment the answer arrives, sees the previous turn:
``service.workers: 2``, 200 follow-ups each on a new connection (so the kernel spreads them
over both workers), while 16 other clients keep the service busy with queries, streams and
feedback. The fake LLM records what history reached it."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import aiohttp

from tests.query.fake_llm import FakeLLM
from tests.query.query_support import llm_sections
from tests.service_process import Service

FOLLOW_UPS = 200
BUSY_CLIENTS = 16


async def _busy(http: aiohttp.ClientSession, base: str, n: int, done: asyncio.Event) -> int:
    """Short conversations, streams and feedback until ``done``; returns how many answers it got."""
    answers = 0
    while not done.is_set():
        cid = None
        for turn in range(3):
            body: dict[str, Any] = {"query": f"busy {n} turn {turn}"}
            if cid is not None:
                body["conversation_id"] = cid
            path = "/v1/streaming_query" if turn == 1 else "/v1/query"
            async with http.post(f"{base}{path}", json=body) as resp:
                assert resp.status == 200, await resp.text()
                if path == "/v1/query":
                    cid = (await resp.json())["conversation_id"]
                else:
                    assert (await resp.text()).rstrip().endswith("}"), "a stream ended without its last event"
            answers += 1
        fb = {"conversation_id": cid, "user_question": "q", "llm_response": "a", "sentiment": -1}
        async with http.post(f"{base}/v1/feedback", json=fb) as resp:
            assert resp.status == 200, await resp.text()
    return answers


async def test_follow_ups_on_either_worker_see_the_previous_turn(tmp_path: Path, fake_llm: FakeLLM) -> None:
    udc = {
        "feedback_enabled": True,
        "feedback_storage": str(tmp_path / "data" / "feedback"),
        "transcripts_enabled": True,
        "transcripts_storage": str(tmp_path / "data" / "transcripts"),
    }
    config = {**llm_sections(fake_llm.url), "service": {"workers": 2}, "user_data_collection": udc}
    service = Service(tmp_path, config)
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        await service.start(http)
        try:
            done = asyncio.Event()
            busy = [asyncio.create_task(_busy(http, service.base, n, done)) for n in range(BUSY_CLIENTS)]
            # A new connection for every follow-up: SO_REUSEPORT hands each to either worker.
            async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(force_close=True)) as chain:
                cid = None
                for k in range(FOLLOW_UPS + 1):
                    body: dict[str, Any] = {"query": f"chain {k}"}
                    if cid is not None:
                        body["conversation_id"] = cid
                    async with chain.post(f"{service.base}/v1/query", json=body) as resp:
                        assert resp.status == 200, await resp.text()
                        cid = (await resp.json())["conversation_id"]
            done.set()
            assert all(n > 0 for n in await asyncio.gather(*busy))
        finally:
            service.stop()

    asked = {r["messages"][-1]["content"]: r["messages"] for r in fake_llm.requests}
    missed = []
    for k in range(1, FOLLOW_UPS + 1):
        messages = asked[f"chain {k}"]
        if messages[-3] != {"role": "user", "content": f"chain {k - 1}"}:
            missed.append(k)
    assert missed == [], f"{len(missed)} of {FOLLOW_UPS} follow-ups reached the LLM without the previous turn"
