"""Fixtures of the authentication tests: a real JWKS server on 127.0.0.1, an in-cluster stand-in."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from aiohttp import web

import lightspeed.kube.credentials
from tests.auth.auth_support import JwksServer
from tests.kube_api import KubeApiStandIn


@pytest.fixture
async def jwks() -> AsyncIterator[JwksServer]:
    server = JwksServer()
    app = web.Application()
    app.router.add_get("/jwks", server.handle)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    server.url = f"http://127.0.0.1:{runner.addresses[0][1]}/jwks"
    try:
        yield server
    finally:
        await runner.cleanup()


@pytest.fixture
def in_cluster(kube_api: KubeApiStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> KubeApiStandIn:
    """Make the process look like a pod whose service account talks to the stand-in."""
    env, sa_dir = kube_api.in_cluster(tmp_path)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(lightspeed.kube.credentials, "DEFAULT_SERVICE_ACCOUNT_DIR", str(sa_dir))
    return kube_api
