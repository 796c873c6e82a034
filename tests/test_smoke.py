from __future__ import annotations

from collections.abc import Callable
from typing import Any

from lightspeed import create_app
from lightspeed.config import Config


async def test_liveness(aiohttp_client: Any, make_config: Callable[..., Config]) -> None:
    client = await aiohttp_client(create_app(make_config()))
    resp = await client.get("/liveness")
    assert resp.status == 200
    assert await resp.json() == {"alive": True}
