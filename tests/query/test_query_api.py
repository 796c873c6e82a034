"""``POST /v1/query`` (and ``/query``) against the real app, a real fake LLM server and real files."""

from __future__ import annotations

import asyncio
import hashlib
import io
import json
import re
import shutil
from pathlib import Path
from typing import Any

import pytest
from aiohttp.test_utils import TestClient, TestServer

from lightspeed import create_app
from lightspeed.auth import DEFAULT_USER_ID
from lightspeed.state import metrics_from, storage_from
from tests.fakes import OWNERS_ONLY
from tests.query.fake_llm import FakeLLM
from tests.query.query_support import (
    Client,
    all_files,
    free_port,
    llm_sections,
    read_transcripts,
    transcripts,
    transcripts_root,
)

UUID4 = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}")
ISO_UTC = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z")
SYSTEM = {"role": "system", "content": "You are a helpful assistant"}


def sha(user: str) -> str:
    return hashlib.sha256(user.encode()).hexdigest()


async def ask(client: Client, body: dict[str, Any], *, path: str = "/v1/query", **kw: Any) -> tuple[int, Any]:
    data = json.dumps(body).encode()
    # A file object: aiohttp's client warns about raw bodies over 1 MiB.
    payload: Any = io.BytesIO(data) if len(data) > 512 * 1024 else data
    resp = await client.post(path, data=payload, headers={"Content-Type": "application/json"}, **kw)
    return resp.status, await resp.json()


@pytest.mark.parametrize("path", ["/v1/query", "/query"])
async def test_a_new_conversation_gets_the_answer_and_one_transcript(
    query_client: Any, fake_llm: FakeLLM, path: str
) -> None:
    client = await query_client()
    status, body = await ask(client, {"query": "What is Kubernetes?"}, path=path)

    assert status == 200, body
    cid = body["conversation_id"]
    assert UUID4.fullmatch(cid)
    assert body == {
        "conversation_id": cid,
        "response": "You asked: What is Kubernetes?",
        "rag_chunks": [],
        "referenced_documents": [],
        "truncated": False,
        "input_tokens": 8,
        "output_tokens": 5,
        "available_quotas": {},
        "tool_calls": [],
        "tool_results": [],
    }
    assert fake_llm.requests == [
        {
            "model": "fake-model",
            "messages": [SYSTEM, {"role": "user", "content": "What is Kubernetes?"}],
            "stream": False,
        }
    ]
    [stored] = await transcripts(client)
    files = all_files(transcripts_root(client))
    assert len(files) == 1
    rel = files[0].relative_to(transcripts_root(client))
    assert rel.parts[:2] == (sha(DEFAULT_USER_ID), cid) and UUID4.fullmatch(rel.stem)
    assert ISO_UTC.fullmatch(stored["metadata"].pop("timestamp"))
    assert stored == {
        "metadata": {
            "provider": "fake",
            "model": "fake-model",
            "query_provider": None,
            "query_model": None,
            "user_id": sha(DEFAULT_USER_ID),
            "conversation_id": cid,
        },
        "redacted_query": "What is Kubernetes?",
        "query_is_valid": True,
        "llm_response": "You asked: What is Kubernetes?",
        "rag_chunks": [],
        "truncated": False,
        "attachments": [],
        "tool_calls": [],
        "tool_results": [],
    }


async def test_named_provider_and_model_are_used_and_recorded(query_client: Any) -> None:
    client = await query_client()
    status, body = await ask(client, {"query": "hello there", "provider": "local", "model": "echo"})
    assert status == 200, body
    assert body["response"] == "hello there"
    meta = (await transcripts(client))[0]["metadata"]
    assert (meta["provider"], meta["model"], meta["query_provider"], meta["query_model"]) == (
        "local",
        "echo",
        "local",
        "echo",
    )


async def test_history_is_sent_up_to_the_limit_and_truncation_is_reported(query_client: Any, fake_llm: FakeLLM) -> None:
    client = await query_client(
        inference={"default_provider": "fake", "default_model": "fake-model", "max_history_turns": 2}
    )
    _, first = await ask(client, {"query": "q1"})
    cid = first["conversation_id"]
    results = [first]
    for q in ("q2", "q3", "q4"):
        status, body = await ask(client, {"query": q, "conversation_id": cid})
        assert status == 200, body
        assert body["conversation_id"] == cid
        results.append(body)

    assert [r["truncated"] for r in results] == [False, False, False, True]
    assert fake_llm.requests[3]["messages"] == [
        SYSTEM,
        {"role": "user", "content": "q2"},
        {"role": "assistant", "content": "You asked: q2"},
        {"role": "user", "content": "q3"},
        {"role": "assistant", "content": "You asked: q3"},
        {"role": "user", "content": "q4"},
    ]
    assert [t["truncated"] for t in await transcripts(client)] == [False, False, False, True]
    assert {t["metadata"]["conversation_id"] for t in await transcripts(client)} == {cid}


async def test_someone_elses_conversation_is_403_and_an_unknown_one_404(query_client: Any, fake_llm: FakeLLM) -> None:
    client = await query_client(authorization=OWNERS_ONLY)  # without rules anyone may continue it, as upstream
    _, alice = await ask(client, {"query": "mine"}, params={"user_id": "alice"})
    cid = alice["conversation_id"]

    status, body = await ask(client, {"query": "and mine?", "conversation_id": cid}, params={"user_id": "bob"})
    assert status == 403
    assert body == {
        "detail": {
            "response": "User does not have permission to perform this action",
            "cause": f"User bob does not have permission to query conversation with ID {cid}",
        }
    }
    unknown = "c5260aec-4d82-4370-9fdf-05cf908b3f16"
    status, body = await ask(client, {"query": "x", "conversation_id": unknown})
    assert status == 404
    assert body == {
        "detail": {"response": "Conversation not found", "cause": f"Conversation with ID {unknown} does not exist"}
    }
    assert len(fake_llm.requests) == 1
    assert len(await transcripts(client)) == 1


async def test_feedback_accepts_a_conversation_started_by_a_query(query_client: Any) -> None:
    client = await query_client()
    _, answer = await ask(client, {"query": "What is Kubernetes?"}, params={"user_id": "alice"})
    feedback = {
        "conversation_id": answer["conversation_id"],
        "user_question": "What is Kubernetes?",
        "llm_response": answer["response"],
        "sentiment": 1,
    }
    resp = await client.post("/v1/feedback", json=feedback, params={"user_id": "alice"})
    assert resp.status == 200, await resp.text()
    resp = await client.post("/v1/feedback", json=feedback, params={"user_id": "bob"})
    assert resp.status == 403


def _value_error(loc: list[Any], message: str, input_: Any) -> dict[str, Any]:
    return {
        "type": "value_error",
        "loc": ["body", *loc],
        "msg": f"Value error, {message}",
        "input": input_,
        "ctx": {"error": message},
    }


BAD_BODIES = [
    pytest.param(
        {"query": ""},
        [
            {
                "type": "string_too_short",
                "loc": ["body", "query"],
                "msg": "String should have at least 1 character",
                "input": "",
                "ctx": {"min_length": 1},
            }
        ],
        id="empty-query",
    ),
    pytest.param({"query": "   "}, [_value_error(["query"], "Query must not be blank", "   ")], id="blank-query"),
    pytest.param(
        {"conversation_id": None},
        [{"type": "missing", "loc": ["body", "query"], "msg": "Field required", "input": {"conversation_id": None}}],
        id="missing-query",
    ),
    pytest.param(
        {"query": "q", "colour": "red"},
        [
            {
                "type": "extra_forbidden",
                "loc": ["body", "colour"],
                "msg": "Extra inputs are not permitted",
                "input": "red",
            }
        ],
        id="unknown-field",
    ),
    pytest.param(
        {"query": "q", "provider": "fake"},
        [_value_error([], "Model must be specified if provider is specified", {"query": "q", "provider": "fake"})],
        id="provider-without-model",
    ),
    pytest.param(
        {"query": "q", "model": "fake-model"},
        [_value_error([], "Provider must be specified if model is specified", {"query": "q", "model": "fake-model"})],
        id="model-without-provider",
    ),
    pytest.param(
        {"query": "q", "conversation_id": "../../etc"},
        [_value_error(["conversation_id"], "Improper conversation ID '../../etc'", "../../etc")],
        id="bad-conversation-id",
    ),
    pytest.param(
        {"query": "q", "media_type": "text/html"},
        [
            _value_error(
                [],
                "media_type must be either 'application/json' or 'text/plain'",
                {"query": "q", "media_type": "text/html"},
            )
        ],
        id="bad-media-type",
    ),
    pytest.param(
        {"query": "q", "attachments": [{"attachment_type": "log", "content": 5, "extra": 1}]},
        [
            {
                "type": "extra_forbidden",
                "loc": ["body", "attachments", 0, "extra"],
                "msg": "Extra inputs are not permitted",
                "input": 1,
            },
            {
                "type": "missing",
                "loc": ["body", "attachments", 0, "content_type"],
                "msg": "Field required",
                "input": {"attachment_type": "log", "content": 5, "extra": 1},
            },
            {
                "type": "string_type",
                "loc": ["body", "attachments", 0, "content"],
                "msg": "Input should be a valid string",
                "input": 5,
            },
        ],
        id="bad-attachment-fields",
    ),
    pytest.param(
        {"query": 7, "no_tools": "yes"},
        [
            {"type": "string_type", "loc": ["body", "query"], "msg": "Input should be a valid string", "input": 7},
            {
                "type": "bool_type",
                "loc": ["body", "no_tools"],
                "msg": "Input should be a valid boolean",
                "input": "yes",
            },
        ],
        id="wrong-types",
    ),
]


@pytest.mark.parametrize(("body", "errors"), BAD_BODIES)
async def test_invalid_bodies_are_422_in_pydantic_shape(
    query_client: Any, fake_llm: FakeLLM, body: Any, errors: Any
) -> None:
    client = await query_client()
    for path in ("/v1/query", "/v1/streaming_query"):
        status, got = await ask(client, body, path=path)
        assert status == 422
        assert got == {"detail": errors}
    assert fake_llm.requests == []
    assert await transcripts(client) == []


async def test_upstream_optional_fields_are_accepted(query_client: Any) -> None:
    client = await query_client()
    body = {
        "query": "q",
        "conversation_id": "",
        "system_prompt": "Be brief.",
        "no_tools": True,
        "generate_topic_summary": False,
        "media_type": "application/json",
        "solr": {"fq": ["product:*openshift*"]},
        "vector_store_ids": ["vs1"],
        "shield_ids": [],
    }
    status, got = await ask(client, body)
    assert status == 200, got


@pytest.mark.parametrize("path", ["/v1/query", "/v1/streaming_query"])
async def test_a_lone_surrogate_anywhere_is_422_and_nothing_is_stored(
    query_client: Any, fake_llm: FakeLLM, path: str
) -> None:
    """JSON can carry "\\ud800", UTF-8 cannot: refused at validation, never a dropped record or a cut stream."""
    client = await query_client()
    attachment = {"attachment_type": "log", "content_type": "text/plain", "content": "half \ud800 a pair"}
    body = {"query": "q", "attachments": [attachment], "system_prompt": "\udfff", "shield_ids": ["ok", "\udc00"]}
    raw = json.dumps(body).encode()
    assert b"\\ud800" in raw and b"\\udfff" in raw
    resp = await client.post(path, data=raw, headers={"Content-Type": "application/json"})
    assert resp.status == 422
    errors = (await resp.json())["detail"]
    assert [(e["type"], e["loc"]) for e in errors] == [
        ("string_unicode", ["body", "attachments", 0, "content"]),
        ("string_unicode", ["body", "system_prompt"]),
        ("string_unicode", ["body", "shield_ids", 1]),
    ]
    assert errors[0]["msg"] == "Input should be a valid string, unable to parse raw data as a unicode string"
    assert fake_llm.requests == []
    assert await transcripts(client) == []
    # A well-formed pair of surrogates is one character, and welcome.
    status, _ = await ask(client, {"query": "smile \ud83d\ude00"})
    assert status == 200
    assert [t["redacted_query"] for t in await transcripts(client)] == ["smile \U0001f600"]


async def test_a_2mb_query_is_413_with_a_clear_message(query_client: Any, fake_llm: FakeLLM) -> None:
    client = await query_client()
    for path in ("/v1/query", "/v1/streaming_query"):
        status, got = await ask(client, {"query": "x" * (2 * 1024 * 1024)}, path=path)
        assert status == 413
        assert got == {
            "detail": {
                "response": "Request body too large",
                "cause": "The request body exceeds the limit of 1048576 bytes (service.max_request_body_bytes).",
            }
        }
    assert fake_llm.requests == []
    # The limit is configurable.
    client = await query_client(service={"max_request_body_bytes": 4 * 1024 * 1024})
    status, got = await ask(client, {"query": "x" * (2 * 1024 * 1024)})
    assert status == 200


@pytest.mark.parametrize(
    ("body", "cause"),
    [
        # The upstream's words: an unknown provider is an unknown model too.
        ({"provider": "nope", "model": "m"}, "Model with ID m does not exist"),
        ({"provider": "local", "model": "gpt-4"}, "Model with ID gpt-4 does not exist"),
    ],
)
async def test_unknown_provider_or_model_is_404(query_client: Any, body: dict[str, Any], cause: str) -> None:
    client = await query_client()
    status, got = await ask(client, {"query": "q", **body})
    assert status == 404
    assert got == {"detail": {"response": "Model not found", "cause": cause}}


@pytest.mark.parametrize(
    ("model", "status", "response", "cause_part", "logged"),
    [
        ("ratelimit", 429, "The model quota has been exceeded", "quota for model ratelimit has been", "Rate limit"),
        ("broken", 503, "Unable to connect to the LLM provider", "answered 500: a server error", "internal failure"),
        ("reject", 413, "Prompt is too long", "the context window size of model 'reject'.", "maximum context"),
        ("badrequest", 400, "The LLM provider rejected the request", "answered 400: the request was rejected", "top_p"),
        ("denied", 502, "The LLM provider refused the service's credentials", "answered 401", "Incorrect API key"),
        ("gone", 404, "Model not found", "Model with ID gone does not exist", "The model `gone`"),
        ("malformed", 502, "The LLM provider sent an invalid answer", "not a chat completion", "{not json"),
        ("surrogate", 502, "The LLM provider sent an invalid answer", "not a chat completion", None),
        ("drop", 503, "Unable to connect to the LLM provider", "Provider 'fake' at http://127.0.0.1:", "Disconnected"),
        ("hang", 504, "The LLM provider did not answer in time", "no answer within 0.3 s", None),
    ],
)
async def test_provider_failures_are_explained(
    query_client: Any,
    fake_llm: FakeLLM,
    caplog: Any,
    model: str,
    status: int,
    response: str,
    cause_part: str,
    logged: str | None,
) -> None:
    """The client gets our words for what failed; the server's own words go to the log."""
    client = await query_client(llm_timeout=0.3)
    for path in ("/v1/query", "/v1/streaming_query"):
        if path.endswith("streaming_query") and model in ("malformed", "surrogate", "drop"):
            continue  # these break off after the stream began; see the streaming tests
        caplog.clear()
        resp = await client.post(path, json={"query": "q", "provider": "fake", "model": model})
        assert resp.status == status, await resp.text()
        assert resp.content_type == "application/json"
        got = await resp.json()
        assert got["detail"]["response"] == response
        assert cause_part in got["detail"]["cause"]
        if logged is not None:
            assert logged not in got["detail"]["cause"]
            assert logged in caplog.text
        if status == 429:
            assert resp.headers["Retry-After"] == "7"
    assert await transcripts(client) == []


async def test_an_unreachable_provider_is_503(query_client: Any) -> None:
    url = f"http://127.0.0.1:{free_port()}/v1"
    client = await query_client(provider={"url": url})
    status, got = await ask(client, {"query": "q"})
    assert status == 503
    assert got["detail"]["response"] == "Unable to connect to the LLM provider"
    assert url in got["detail"]["cause"]


async def test_attachments_reach_the_llm_and_the_transcript(query_client: Any, fake_llm: FakeLLM) -> None:
    client = await query_client()
    attachment = {"attachment_type": "configuration", "content_type": "application/yaml", "content": "kind: Pod"}
    status, _ = await ask(client, {"query": "Why?", "attachments": [attachment]})
    assert status == 200
    assert fake_llm.requests[0]["messages"][-1] == {
        "role": "user",
        "content": "Why?\n\n[Attachment 1: configuration, application/yaml]\nkind: Pod",
    }
    [stored] = await transcripts(client)
    assert stored["attachments"] == [attachment]
    assert stored["redacted_query"] == "Why?"


SECRET = "hunter2-XYZZY-77"


async def test_secrets_matching_a_filter_never_reach_the_llm_or_the_store(
    query_client: Any, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    client = await query_client(
        query_filters=[
            {"name": "password", "pattern": r"hunter2-[A-Z]+-\d+", "replace_with": "[PASSWORD]"},
            {"name": "ip", "pattern": r"\b\d+\.\d+\.\d+\.\d+\b", "replace_with": "<ip>"},
        ]
    )
    attachment = {"attachment_type": "log", "content_type": "text/plain", "content": f"login {SECRET} from 10.0.0.1"}
    body = {"query": f"my password is {SECRET}", "attachments": [attachment], "system_prompt": f"Never say {SECRET}"}
    status, first = await ask(client, body)
    assert status == 200
    resp = await client.post("/v1/streaming_query", json={**body, "conversation_id": first["conversation_id"]})
    assert SECRET not in await resp.text()

    assert SECRET not in fake_llm.received_text
    assert "my password is [PASSWORD]" in fake_llm.received_text
    stored = await transcripts(client)
    assert len(stored) == 2
    assert stored[0]["redacted_query"] == "my password is [PASSWORD]"
    assert stored[1]["attachments"][0]["content"] == "login [PASSWORD] from <ip>"
    files = all_files(tmp_path)
    assert len(files) >= 4  # two transcripts, the conversation's owner and its history
    for path in files:
        assert SECRET.encode() not in path.read_bytes(), path


async def test_a_transcript_that_cannot_be_stored_is_a_500_not_an_answer(query_client: Any, caplog: Any) -> None:
    client = await query_client()
    root = transcripts_root(client)
    shutil.rmtree(root, ignore_errors=True)
    root.write_text("a file where the transcripts directory belongs")

    resp = await client.post("/v1/query", json={"query": "still answered?"})
    assert resp.status == 500
    assert await resp.json() == {
        "detail": {
            "response": "Internal server error",
            "cause": "An unexpected error occurred while processing the request.",
        }
    }
    stats = metrics_from(client.app).queries
    assert (stats.transcript_failures, stats.transcripts_stored) == (1, 0)
    assert "cannot store the transcript" in caplog.text
    # Operators see it in the metrics.
    metrics = await (await client.get("/metrics")).text()
    assert "lightspeed_transcript_store_failures_total 1.0" in metrics
    assert "lightspeed_transcripts_stored_total 0.0" in metrics

    # Once the transcripts can be stored again, the service answers, without a restart.
    root.unlink()
    status, body = await ask(client, {"query": "and now?"})
    assert status == 200
    assert [t["redacted_query"] for t in await transcripts(client)] == ["and now?"]
    status, _ = await ask(client, {"query": "again", "conversation_id": body["conversation_id"]})
    assert status == 200


async def test_no_transcripts_when_disabled_but_history_is_kept(query_client: Any, fake_llm: FakeLLM) -> None:
    client = await query_client(user_data_collection={"transcripts_enabled": False, "transcripts_storage": None})
    _, first = await ask(client, {"query": "one"})
    status, _ = await ask(client, {"query": "two", "conversation_id": first["conversation_id"]})
    assert status == 200
    assert fake_llm.requests[1]["messages"][1] == {"role": "user", "content": "one"}
    assert metrics_from(client.app).queries.transcripts_stored == 0


async def test_the_api_key_is_sent_and_a_key_file_is_reread_when_it_changes(
    query_client: Any, fake_llm: FakeLLM, tmp_path: Path
) -> None:
    key_file = tmp_path / "key"
    key_file.write_text("first-key\n")
    client = await query_client(provider={"api_key_path": str(key_file)})
    await ask(client, {"query": "q"})
    key_file.write_text("second-key-longer\n")
    await asyncio.sleep(1.1)  # the file is looked at no more than once a second
    await ask(client, {"query": "q"})
    assert fake_llm.auth_headers == ["Bearer first-key", "Bearer second-key-longer"]


async def test_with_max_history_turns_0_no_history_is_sent_and_truncated_says_so(
    query_client: Any, fake_llm: FakeLLM
) -> None:
    client = await query_client(
        inference={"default_provider": "fake", "default_model": "fake-model", "max_history_turns": 0}
    )
    _, first = await ask(client, {"query": "one"})
    status, second = await ask(client, {"query": "two", "conversation_id": first["conversation_id"]})
    assert status == 200
    assert (first["truncated"], second["truncated"]) == (False, True)
    assert fake_llm.requests[1]["messages"] == [SYSTEM, {"role": "user", "content": "two"}]


async def test_a_llama_stack_conversation_id_is_accepted(query_client: Any) -> None:
    client = await query_client()
    cid = "conv_" + "ab" * 24
    await storage_from(client.app).set_conversation_owner(cid, owner=sha(DEFAULT_USER_ID))
    status, body = await ask(client, {"query": "q", "conversation_id": cid})
    assert status == 200
    assert body["conversation_id"] == cid
    [stored] = await transcripts(client)
    assert stored["metadata"]["conversation_id"] == cid


async def test_answers_still_being_stored_are_stored_at_shutdown(make_config: Any, fake_llm: FakeLLM) -> None:

    config = make_config(**llm_sections(fake_llm.url))
    async with TestClient(TestServer(create_app(config))) as client:
        for i in range(20):
            resp = await client.post("/v1/query", json={"query": f"q{i}"})
            assert resp.status == 200
    # The client and the app are closed: whatever was pending was stored before the store closed.
    assert config.user_data_collection.transcripts_storage is not None
    stored = read_transcripts(Path(config.user_data_collection.transcripts_storage))
    assert sorted(t["redacted_query"] for t in stored) == sorted(f"q{i}" for i in range(20))
