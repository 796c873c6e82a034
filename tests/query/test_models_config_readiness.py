"""``GET /v1/models``, ``GET /v1/config`` and ``/readiness`` in the Lightspeed Core Stack's shapes."""

from __future__ import annotations

from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.query.fake_llm import MODELS

Client = TestClient[web.Request, web.Application]


async def test_models_lists_every_configured_model_in_the_upstream_shape(query_client: Any) -> None:
    client: Client = await query_client()
    resp = await client.get("/v1/models")
    assert resp.status == 200
    models = (await resp.json())["models"]
    assert models[0] == {
        "identifier": "fake/fake-model",
        "metadata": {},
        "api_model_type": "llm",
        "provider_id": "fake",
        "type": "model",
        "provider_resource_id": "fake-model",
        "model_type": "llm",
    }
    assert [(m["provider_id"], m["provider_resource_id"]) for m in models] == [
        *(("fake", m) for m in MODELS),
        ("local", "echo"),
    ]
    assert (await (await client.get("/v1/models?model_type=llm")).json())["models"] == models
    assert (await (await client.get("/v1/models?model_type=embedding")).json()) == {"models": []}


async def test_config_is_the_effective_configuration_with_secrets_masked(query_client: Any) -> None:
    client: Client = await query_client(provider={"api_key": "sk-very-secret-key"})
    resp = await client.get("/v1/config")
    assert resp.status == 200
    text = await resp.text()
    assert "sk-very-secret-key" not in text
    configuration = (await resp.json())["configuration"]
    assert configuration["llm_providers"][0]["api_key"] == "********"
    assert configuration["user_data_collection"]["feedback_enabled"] is True
    assert configuration["inference"]["default_provider"] == "fake"


async def test_readiness_follows_the_providers_recent_calls(query_client: Any) -> None:
    client: Client = await query_client()
    healthy = await (await client.get("/readiness")).json()
    assert (healthy["overall_status"], healthy["reason"]) == ("healthy", "All providers are healthy")
    # The default provider fails: not ready, in the upstream's words.
    resp = await client.post("/v1/query", json={"query": "q", "provider": "fake", "model": "broken"})
    assert resp.status == 503
    resp = await client.get("/readiness")
    assert resp.status == 503
    body = await resp.json()
    assert body["ready"] is False and body["overall_status"] == "unhealthy"
    assert body["reason"] == "Providers not healthy: fake"
    assert body["providers"] == [
        {"provider_id": "fake", "status": "error", "message": "Unable to connect to the LLM provider (503)"}
    ]
    # The upstream's impact for an unhealthy provider, word for word.
    assert body["impacts"] == ["Provider fake: Unable to connect to the LLM provider (503)"]
    assert [(c["component"], c["status"]) for c in body["checks"]] == [("llm", "unhealthy")]
    # A call that works makes it healthy again.
    assert (await client.post("/v1/query", json={"query": "q"})).status == 200
    assert (await client.get("/readiness")).status == 200


async def test_a_failing_provider_that_is_not_the_default_degrades(query_client: Any, fake_llm: Any) -> None:
    client: Client = await query_client(
        llm_providers=[
            {"name": "fake", "type": "openai", "url": fake_llm.url, "models": list(MODELS)},
            {"name": "down", "type": "openai", "url": "http://127.0.0.1:9", "models": ["m"], "timeout_seconds": 1},
        ]
    )
    resp = await client.post("/v1/query", json={"query": "q", "provider": "down", "model": "m"})
    assert resp.status == 503
    resp = await client.get("/readiness")
    assert resp.status == 200
    body = await resp.json()
    assert (body["ready"], body["overall_status"]) == (True, "degraded")
    assert body["reason"] == "Providers not healthy: down"
    assert [p["provider_id"] for p in body["providers"]] == ["down"]
