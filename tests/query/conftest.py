"""Fixtures for the query tests: the fake LLM server and clients of the real app wired to it."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from tests.query.fake_llm import FakeLLM
from tests.query.query_support import llm_sections

Client = TestClient[web.Request, web.Application]
QueryClient = Callable[..., Awaitable[Client]]


@pytest.fixture
async def fake_llm() -> AsyncIterator[FakeLLM]:
    fake = await FakeLLM().start()
    try:
        yield fake
    finally:
        await fake.stop()


@pytest.fixture
def query_client(make_client: Any, fake_llm: FakeLLM) -> QueryClient:
    """``await query_client(**sections)``: a client of the real app whose default provider is the fake LLM."""

    async def make(*, llm_timeout: float = 2.0, provider: dict[str, Any] | None = None, **sections: Any) -> Client:
        provider = dict(provider or {})
        merged = llm_sections(provider.pop("url", fake_llm.url), timeout=llm_timeout, **provider)
        merged.update(sections)
        client: Client = await make_client(**merged)
        return client

    return make
