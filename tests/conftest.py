"""Shared fixtures: a configuration on a temporary directory and a client of the real app."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import tempfile
import urllib.error
import urllib.request
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

from lightspeed import create_app
from lightspeed.config import Config, parse_config
from lightspeed.records import hash_user_id
from lightspeed.state import storage_from
from tests.fakes import MakeClient, MakeConfig
from tests.kube_api import KubeApiStandIn
from tests.service_process import NOBODY

#: The user id the noop authentication module gives a caller that names none.
DEFAULT_USER = "00000000-0000-0000-0000-000"


@pytest.fixture
def make_config(tmp_path: Path) -> Callable[..., Config]:
    """Build a Config from YAML-like data, with storage under ``tmp_path``."""

    def make(**sections: Any) -> Config:
        udc = {
            "feedback_enabled": True,
            "feedback_storage": str(tmp_path / "feedback"),
            "transcripts_enabled": True,
            "transcripts_storage": str(tmp_path / "transcripts"),
        }
        udc.update(sections.pop("user_data_collection", {}))
        data = {"name": "test", "user_data_collection": udc, **sections}
        return parse_config(data, env={})

    return make


@pytest.fixture
def make_client(aiohttp_client: Any, make_config: MakeConfig) -> MakeClient:
    """A test client of ``create_app(make_config(**sections))`` on a real loopback server."""

    async def make(**sections: Any) -> TestClient[web.Request, web.Application]:
        client: TestClient[web.Request, web.Application] = await aiohttp_client(create_app(make_config(**sections)))
        return client

    return make


NewConversation = Callable[..., Awaitable[str]]


@pytest.fixture
def new_conversation() -> NewConversation:
    """``await new_conversation(app, user=...)``: a fresh conversation id owned by ``user``,
    registered through the storage interface (queries do that in the real service)."""

    async def make(app: web.Application, user: str = DEFAULT_USER) -> str:
        cid = str(uuid.uuid4())
        await storage_from(app).set_conversation_owner(cid, owner=hash_user_id(user))
        return cid

    return make


HttpJson = Callable[..., tuple[int, Any]]


def _http_json(method: str, url: str, body: Any = None) -> tuple[int, Any]:
    data = json.dumps(body).encode() if body is not None else None
    req = urllib.request.Request(url, data=data, method=method, headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=10) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, json.loads(exc.read())


@pytest.fixture
def unprivileged_base() -> Iterator[Path]:
    """A directory under /tmp that ``nobody`` owns (and can reach), for a service run as nobody
    without capabilities (``service_process.Service(..., unprivileged=True)``), so file modes
    bind; skips unless root with setpriv. A tmpfs mounted at ``disk`` in it is unmounted after."""
    if os.geteuid() != 0:
        pytest.skip("running the service as nobody needs root (setpriv)")
    if shutil.which("setpriv") is None:
        pytest.skip("setpriv (util-linux) is not installed: cannot drop root's capabilities")
    base = Path(tempfile.mkdtemp(prefix="lightspeed-faults-"))
    os.chown(base, NOBODY, NOBODY)
    try:
        yield base
    finally:
        subprocess.run(["umount", "-l", str(base / "disk")], check=False, capture_output=True)
        shutil.rmtree(base, ignore_errors=True)


@pytest.fixture
def http_json() -> HttpJson:
    """``http_json(method, url, body=None) -> (status, parsed JSON)``: a blocking client for
    servers running in subprocesses (error statuses are returned, not raised)."""
    return _http_json


@pytest.fixture
async def kube_api(tmp_path: Path) -> AsyncIterator[KubeApiStandIn]:
    """A started Kubernetes API stand-in (HTTPS on 127.0.0.1, CA made for this test); see tests/kube_api.py."""
    async with KubeApiStandIn(tmp_path) as api:
        yield api
