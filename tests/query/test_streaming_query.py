"""``POST /v1/streaming_query`` (and ``/streaming_query``): exact SSE frames, errors, abandoned streams."""

from __future__ import annotations

import asyncio
import json
import re
import shutil
from typing import Any

import pytest

from lightspeed.state import metrics_from
from tests.query.fake_llm import FakeLLM
from tests.query.query_support import Client, sse_events, transcripts, transcripts_root

SYSTEM = {"role": "system", "content": "You are a helpful assistant"}


async def stream(client: Client, body: dict[str, Any], path: str = "/v1/streaming_query") -> tuple[Any, str]:
    resp = await client.post(path, json=body)
    return resp, await resp.text()


def token_frames(*tokens: str) -> list[dict[str, Any]]:
    return [{"event": "token", "data": {"id": i, "token": t}} for i, t in enumerate(tokens)]


@pytest.mark.parametrize("path", ["/v1/streaming_query", "/streaming_query"])
async def test_frames_in_the_upstream_order_and_a_transcript_with_attachments(
    query_client: Any, fake_llm: FakeLLM, path: str
) -> None:
    client = await query_client()
    attachment = {"attachment_type": "log", "content_type": "text/plain", "content": "E0001"}
    resp, text = await stream(client, {"query": "What is Kubernetes?", "attachments": [attachment]}, path)

    assert resp.status == 200
    assert resp.headers["Content-Type"] == "text/event-stream"
    events = sse_events(text)
    start = events[0]
    cid = start["data"]["conversation_id"]
    assert start == {"event": "start", "data": {"conversation_id": cid, "request_id": resp.headers["X-Request-ID"]}}
    answer = "You asked: What is Kubernetes?\n\n[Attachment 1: log, text/plain]\nE0001"
    tokens = [
        "You ",
        "asked: ",
        "What ",
        "is ",
        "Kubernetes?\n\n",
        "[Attachment ",
        "1: ",
        "log, ",
        "text/plain]\n",
        "E0001",
    ]
    assert "".join(tokens) == answer
    assert events[1:] == [
        *token_frames(*tokens),
        {"event": "turn_complete", "data": {"id": len(tokens), "token": answer}},
        {
            "event": "end",
            "data": {"referenced_documents": [], "truncated": False, "input_tokens": 13, "output_tokens": 10},
            "available_quotas": {},
        },
    ]
    assert fake_llm.requests[0]["stream"] is True
    [stored] = await transcripts(client)
    assert stored["metadata"]["conversation_id"] == cid
    assert stored["llm_response"] == answer
    assert stored["truncated"] is False
    assert stored["attachments"] == [attachment]


async def test_the_echo_provider_streams_word_by_word(query_client: Any) -> None:
    client = await query_client()
    _, text = await stream(client, {"query": "a b  c", "provider": "local", "model": "echo"})
    events = sse_events(text)
    assert events[1:] == [
        *token_frames("a ", "b  ", "c"),
        {"event": "turn_complete", "data": {"id": 3, "token": "a b  c"}},
        {
            "event": "end",
            "data": {"referenced_documents": [], "truncated": False, "input_tokens": 8, "output_tokens": 3},
            "available_quotas": {},
        },
    ]


async def test_text_plain_streams_the_raw_answer(query_client: Any) -> None:
    client = await query_client()
    resp, text = await stream(client, {"query": "What is Kubernetes?", "media_type": "text/plain"})
    assert resp.status == 200
    assert resp.content_type == "text/plain"
    assert text == "You asked: What is Kubernetes?"


async def test_a_conversation_continues_with_history(query_client: Any, fake_llm: FakeLLM) -> None:
    client = await query_client()
    _, text = await stream(client, {"query": "one"})
    cid = sse_events(text)[0]["data"]["conversation_id"]
    _, text = await stream(client, {"query": "two", "conversation_id": cid})
    assert sse_events(text)[0]["data"]["conversation_id"] == cid
    assert fake_llm.requests[1]["messages"] == [
        SYSTEM,
        {"role": "user", "content": "one"},
        {"role": "assistant", "content": "You asked: one"},
        {"role": "user", "content": "two"},
    ]


@pytest.mark.parametrize(
    ("model", "status", "response", "llm_response"),
    [
        ("drop", 503, "Unable to connect to the LLM provider", "You asked: q "),
        ("malformed", 502, "The LLM provider sent an invalid answer", "Fine "),
        # Valid JSON, but text UTF-8 cannot hold (nothing could store it): an invalid answer.
        ("surrogate", 502, "The LLM provider sent an invalid answer", "Fine "),
    ],
)
async def test_a_failure_after_the_stream_began_is_an_error_event_and_a_truncated_transcript(
    query_client: Any, model: str, status: int, response: str, llm_response: str
) -> None:
    client = await query_client()
    resp, text = await stream(client, {"query": "q r s", "provider": "fake", "model": model})
    assert resp.status == 200
    events = sse_events(text)
    assert events[0]["event"] == "start"
    assert "".join(e["data"]["token"] for e in events if e["event"] == "token") == llm_response
    error = events[-1]
    assert error["event"] == "error"
    assert error["data"]["status_code"] == status
    assert error["data"]["response"] == response
    assert error["data"]["cause"]
    assert [e["event"] for e in events].count("end") == 0
    [stored] = await transcripts(client)
    assert stored["truncated"] is True
    assert stored["llm_response"] == llm_response


async def test_a_plain_text_stream_ends_a_failure_with_the_upstream_status_line(query_client: Any) -> None:
    client = await query_client()
    body = {"query": "q r s", "provider": "fake", "model": "drop", "media_type": "text/plain"}
    resp, text = await stream(client, body)
    assert resp.status == 200
    assert resp.headers["Content-Type"].startswith("text/plain")
    # the tokens sent so far, then the upstream's line: "Status: {status} - {response} - {cause}"
    assert re.fullmatch(r"You asked: q Status: 503 - Unable to connect to the LLM provider - [^\n]+", text), text
    [stored] = await transcripts(client)
    assert stored["truncated"] is True


async def test_a_client_that_goes_away_mid_stream_leaves_a_truncated_transcript(
    query_client: Any, fake_llm: FakeLLM
) -> None:
    client = await query_client()
    resp = await client.post("/v1/streaming_query", json={"query": "q", "provider": "fake", "model": "slow"})
    assert resp.status == 200
    seen = b""
    while seen.count(b'"event": "token"') < 3:
        seen += await resp.content.readany()
    resp.close()  # drop the connection with the answer half sent

    # The truncated transcript is stored after the stream is dropped: wait until the store is done
    # (counted), not until its file shows, which comes a moment before.
    stats = metrics_from(client.app).queries
    deadline = asyncio.get_running_loop().time() + 30  # generous: the suite runs on busy 2-core machines
    for _ in range(1200):
        if stats.transcripts_stored or asyncio.get_running_loop().time() > deadline:
            break
        await asyncio.sleep(0.025)
    [transcript] = await transcripts(client)
    assert transcript["truncated"] is True
    assert transcript["llm_response"].startswith("t0 t1 t2 ")
    assert len(transcript["llm_response"].split()) < fake_llm.slow_tokens
    assert stats.transcripts_stored == 1


async def test_records_that_cannot_be_stored_end_the_stream_with_an_error_event(query_client: Any) -> None:
    client = await query_client()
    root = transcripts_root(client)
    shutil.rmtree(root, ignore_errors=True)
    root.write_text("a file where the transcripts directory belongs")

    resp, text = await stream(client, {"query": "q r"})
    assert resp.status == 200  # the stream had begun
    events = sse_events(text)
    names = [e["event"] for e in events]
    assert (names[0], names[-2:], names.count("end")) == ("start", ["turn_complete", "error"], 0)
    assert events[-1]["data"] == {
        "status_code": 500,
        "response": "Internal server error",
        "cause": "An unexpected error occurred while processing the request.",
    }

    root.unlink()  # the fault goes: the next stream ends normally, without a restart
    resp, text = await stream(client, {"query": "q r"})
    assert [e["event"] for e in sse_events(text)][-2:] == ["turn_complete", "end"]
    assert len(await transcripts(client)) == 1


async def test_errors_before_the_stream_begins_are_plain_json(query_client: Any, fake_llm: FakeLLM) -> None:
    client = await query_client()
    resp, text = await stream(client, {"query": "q", "provider": "fake", "model": "ratelimit"})
    assert resp.status == 429
    assert resp.headers["Retry-After"] == "7"
    assert json.loads(text)["detail"]["response"] == "The model quota has been exceeded"
    resp, text = await stream(client, {"query": "q", "provider": "local", "model": "nope"})
    assert resp.status == 404
    assert json.loads(text)["detail"]["response"] == "Model not found"
    assert await transcripts(client) == []
