"""Answered means stored, under SIGKILL: a real ``lightspeed serve`` answering queries, streams
and feedback is killed at random moments, 30 times over one data directory; afterwards every
answer a client received (a 200 body, a stream's ``end`` event, ``feedback received``) has its
transcript, its history turn or its feedback file on disk."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path
from typing import Any

import aiohttp

from lightspeed.config import parse_config
from lightspeed.storage import create_backend
from tests.service_process import ECHO, Service

KILLS = 30
CLIENTS = 4


def _events(text: str) -> list[dict[str, Any]]:
    return [json.loads(frame[len("data: ") :]) for frame in text.split("\n\n") if frame.startswith("data: ")]


async def _client(
    http: aiohttp.ClientSession,
    base: str,
    name: str,
    answered: list[tuple[str, str]],
    feedback: list[str],
) -> None:
    """Queries, streams and feedback in one conversation until the service dies under it."""
    cid: str | None = None
    i = 0
    try:
        while True:
            i += 1
            query = f"{name} question {i}"
            body: dict[str, Any] = {"query": query}
            if cid is not None:
                body["conversation_id"] = cid
            if i % 2:
                async with http.post(f"{base}/v1/query", json=body) as resp:
                    assert resp.status == 200, await resp.text()
                    got = await resp.json()
                    cid = got["conversation_id"]
            else:
                async with http.post(f"{base}/v1/streaming_query", json=body) as resp:
                    assert resp.status == 200, await resp.text()
                    events = _events(await resp.text())
                if events[-1]["event"] != "end":
                    return  # cut by the kill: not an answer
            assert cid is not None
            answered.append((cid, query))
            note = f"{name} feedback {i}"
            fb = {"conversation_id": cid, "user_question": note, "llm_response": query, "sentiment": 1}
            async with http.post(f"{base}/v1/feedback", json=fb) as resp:
                assert resp.status == 200, await resp.text()
                assert await resp.json() == {"response": "feedback received"}
            feedback.append(note)
    except (TimeoutError, aiohttp.ClientError):
        return  # the service was killed


async def test_every_answer_received_survives_a_sigkill(tmp_path: Path) -> None:
    data = tmp_path / "data"
    udc = {
        "feedback_enabled": True,
        "feedback_storage": str(data / "feedback"),
        "transcripts_enabled": True,
        "transcripts_storage": str(data / "transcripts"),
    }
    config = {**ECHO, "user_data_collection": udc}
    answered: list[tuple[str, str]] = []
    feedback: list[str] = []
    rng = random.Random(20261202)
    timeout = aiohttp.ClientTimeout(total=20)
    async with aiohttp.ClientSession(timeout=timeout, connector=aiohttp.TCPConnector(limit=0)) as http:
        service = Service(tmp_path, config)
        for run in range(KILLS):
            await service.start(http)
            clients = [
                asyncio.create_task(_client(http, service.base, f"run {run} client {n}", answered, feedback))
                for n in range(CLIENTS)
            ]
            await asyncio.sleep(rng.uniform(0.02, 0.25))
            service.kill()
            await asyncio.gather(*clients)
    assert len(answered) >= KILLS and feedback, "too few answers to tell anything"

    # What is on disk, read as the next service would read it.
    stored_transcripts = set()
    for path in (data / "transcripts").rglob("*.json"):
        transcript = json.loads(path.read_bytes())
        stored_transcripts.add((transcript["metadata"]["conversation_id"], transcript["redacted_query"]))
    missing = [a for a in answered if a not in stored_transcripts]
    assert missing == [], f"{len(missing)} of {len(answered)} answered queries have no transcript"

    stored_feedback = {json.loads(p.read_bytes())["user_question"] for p in (data / "feedback").glob("*.json")}
    assert [f for f in feedback if f not in stored_feedback] == []

    store = create_backend(parse_config({"user_data_collection": udc}).user_data_collection)
    async with store:
        for cid in {cid for cid, _ in answered}:
            turns = {t.query for t in await store.get_turns(cid, limit=10_000)}
            lost = [q for c, q in answered if c == cid and q not in turns]
            assert lost == [], f"conversation {cid}: answered turns missing from its history"
