"""The Lightspeed Core Stack's ``ls_`` series on ``/metrics``, under its names and labels,
beside our ``lightspeed_`` ones; requests counted under their route templates."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient
from prometheus_client.parser import text_string_to_metric_families

from tests.query.fake_llm import MODELS

Client = TestClient[web.Request, web.Application]


async def scrape(client: Client) -> dict[tuple[str, frozenset[tuple[str, str]]], float]:
    resp = await client.get("/metrics")
    assert resp.status == 200
    samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
    for family in text_string_to_metric_families(await resp.text()):
        for s in family.samples:
            samples[(s.name, frozenset(s.labels.items()))] = s.value
    return samples


def value(samples: dict[tuple[str, frozenset[tuple[str, str]]], float], name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


async def test_requests_are_counted_under_their_route_template(query_client: Any, new_conversation: Any) -> None:
    client: Client = await query_client()
    assert (await client.post("/v1/query", json={"query": "one"})).status == 200
    assert (await client.post("/query", json={"query": "two"})).status == 200
    assert (await client.post("/v1/query", json={"nope": 1})).status == 422
    cid = await new_conversation(client.app)
    await client.get(f"/v1/conversations/{cid}")
    await client.get("/v1/conversations/not-an-id?secret=x")
    assert (await client.get("/no/such/path/12345")).status == 404
    samples = await scrape(client)
    calls = "ls_rest_api_calls_total"
    assert value(samples, calls, path="/v1/query", status_code="200") == 1
    assert value(samples, calls, path="/query", status_code="200") == 1
    assert value(samples, calls, path="/v1/query", status_code="422") == 1
    assert value(samples, calls, path="/v1/conversations/{conversation_id}", status_code="400") == 1
    assert value(samples, calls, path="<unmatched>", status_code="404") == 1
    assert value(samples, "ls_response_duration_seconds_count", path="/v1/query") == 2
    # Never a raw URL: every path label is a route template (or <unmatched>).
    paths = {dict(labels).get("path") for (name, labels) in samples if name.startswith("ls_rest_api_calls")}
    assert not any(p and (cid in p or "not-an-id" in p or "12345" in p) for p in paths)
    # The scrape itself is counted from the next one on.
    assert value(await scrape(client), calls, path="/metrics", status_code="200") >= 1


async def test_llm_calls_tokens_and_durations(query_client: Any, fake_llm: Any) -> None:
    client: Client = await query_client()
    resp = await client.post("/v1/query", json={"query": "three little words"})
    usage = await resp.json()
    resp = await client.post("/v1/streaming_query", json={"query": "hi"})
    assert resp.status == 200
    assert '"event": "end"' in await resp.text()  # the whole stream, so the call is over
    resp = await client.post("/v1/query", json={"query": "q", "provider": "fake", "model": "broken"})
    assert resp.status == 503
    samples = await scrape(client)
    query = {"provider": "fake", "model": "fake-model", "endpoint": "/v1/query"}
    assert value(samples, "ls_llm_calls_total", **query) == 1
    assert value(samples, "ls_llm_token_sent_total", **query) == usage["input_tokens"]
    assert value(samples, "ls_llm_token_received_total", **query) == usage["output_tokens"]
    assert value(samples, "ls_llm_inference_duration_seconds_count", **query, result="success") == 1
    stream = {"provider": "fake", "model": "fake-model", "endpoint": "/v1/streaming_query"}
    assert value(samples, "ls_llm_calls_total", **stream) == 1
    assert value(samples, "ls_llm_token_received_total", **stream) > 0
    broken = {"provider": "fake", "model": "broken", "endpoint": "/v1/query"}
    assert value(samples, "ls_llm_calls_total", **broken) == 1
    assert value(samples, "ls_llm_calls_failures_total", **broken) == 1
    assert value(samples, "ls_llm_inference_duration_seconds_count", **broken, result="failure") == 1
    assert ("ls_llm_validation_errors_total", frozenset({("endpoint", "/v1/query")})) in samples
    # Ours are still there.
    assert value(samples, "lightspeed_transcripts_stored_total") >= 1


async def test_provider_model_configuration_lists_every_model(query_client: Any) -> None:
    client: Client = await query_client()
    samples = await scrape(client)
    configured = {
        (dict(labels)["provider"], dict(labels)["model"])
        for (name, labels), v in samples.items()
        if name == "ls_provider_model_configuration" and v == 1
    }
    assert configured == {("fake", m) for m in MODELS} | {("local", "echo")}
