"""The application: probes, error envelopes, authentication modules, typed state, and
mounting ``create_app`` as a sub-application of another app on a real server."""

from __future__ import annotations

import asyncio
import json
import logging
import shutil
import uuid
import warnings
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp import web
from aiohttp.test_utils import TestClient

import lightspeed
from lightspeed import __version__, create_app
from lightspeed.api import health
from lightspeed.auth.routes import public
from lightspeed.config import Config
from lightspeed.records import hash_user_id
from lightspeed.state import auth_from, config_from, http_from, storage_from
from lightspeed.storage import StorageUnavailable, register_backend
from lightspeed.storage.filesystem import FilesystemStorage

Client = TestClient[web.Request, web.Application]
MakeClient = Callable[..., Awaitable[Client]]
NewConversation = Callable[..., Awaitable[str]]

GENERIC_500_RESPONSE = "Internal server error"


def feedback(cid: str) -> dict[str, Any]:
    return {"conversation_id": cid, "user_question": "q", "llm_response": "a", "sentiment": -1}


# ------------------------------------------------------------------ probes and info


@pytest.mark.parametrize("prefix", ["", "/v1"])
async def test_probes(make_client: MakeClient, prefix: str) -> None:
    client = await make_client()
    resp = await client.get(f"{prefix}/liveness")
    assert (resp.status, await resp.json()) == (200, {"alive": True})
    resp = await client.get(f"{prefix}/readiness")
    assert resp.status == 200
    body = await resp.json()
    # The upstream's shape and words.
    assert body == {
        "ready": True,
        "reason": "All providers are healthy",
        "overall_status": "healthy",
        "impacts": None,
        "providers": [],
    }


@pytest.mark.parametrize("root", ["feedback", "transcripts"])
async def test_readiness_503_when_storage_cannot_be_written(make_client: MakeClient, tmp_path: Path, root: str) -> None:
    client = await make_client()
    target = tmp_path / root
    shutil.rmtree(target)
    target.write_bytes(b"")  # root ignores permissions; a file in the directory's place stops writes
    resp = await client.get("/readiness")
    assert resp.status == 503
    body = await resp.json()
    assert body["ready"] is False and body["providers"] == [] and body["overall_status"] == "unhealthy"
    assert body["impacts"] == [body["reason"]]  # the upstream's list of sentences
    [check] = body["checks"]
    assert check["component"] == "storage" and check["status"] == "unhealthy"
    assert check["reason"] == body["reason"]
    assert "Storage backend 'filesystem' is not available" in body["reason"]
    assert "Not a directory" in body["reason"]
    assert (await client.get("/liveness")).status == 200

    target.unlink()
    assert (await client.get("/readiness")).status == 200


async def test_info(make_client: MakeClient) -> None:
    client = await make_client(name="my-service")
    resp = await client.get("/v1/info")
    assert resp.status == 200
    body = await resp.json()
    assert body["name"] == "my-service"
    assert body["service_version"] == __version__
    assert body["storage"]["backend"] == "filesystem"
    assert body["storage"]["distribution"] == "lightspeed"


async def test_request_id_is_echoed(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.get("/liveness", headers={"X-Request-ID": "abc-123"})
    assert resp.headers["X-Request-ID"] == "abc-123"
    resp = await client.get("/liveness")
    assert len(resp.headers["X-Request-ID"]) == 32


# ------------------------------------------------------------------ error envelopes


async def test_unknown_route_is_json_404(make_client: MakeClient) -> None:
    client = await make_client()
    for path in ("/nope", "/v1/nope", "/v1/feedback/x"):
        resp = await client.get(path)
        assert resp.status == 404
        assert resp.content_type == "application/json"
        assert await resp.json() == {"detail": "Not Found"}


async def test_wrong_method_is_json_405(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.delete("/v1/feedback")
    assert resp.status == 405
    assert resp.content_type == "application/json"
    assert await resp.json() == {"detail": "Method Not Allowed"}
    assert "POST" in resp.headers["Allow"]
    resp = await client.post("/liveness")
    assert resp.status == 405 and await resp.json() == {"detail": "Method Not Allowed"}


async def test_unexpected_exception_is_generic_500(
    aiohttp_client: Any, make_config: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    app = create_app(make_config())

    @public  # a route added to the app declares what it needs, as every route must
    async def boom(request: web.Request) -> web.Response:
        raise RuntimeError("secret internal detail /etc/shadow")

    app.router.add_get("/boom", boom)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.ERROR, logger="lightspeed"):
        resp = await client.get("/boom", headers={"X-Request-ID": "rid-500"})
    assert resp.status == 500
    text = await resp.text()
    assert "Traceback" not in text and "secret internal detail" not in text and "RuntimeError" not in text
    assert json.loads(text) == {
        "detail": {
            "response": GENERIC_500_RESPONSE,
            "cause": "An unexpected error occurred while handling the request (request id rid-500).",
        }
    }
    logged = [r for r in caplog.records if r.exc_info]
    assert logged, "the traceback must be logged"
    assert "secret internal detail" in str(logged[0].exc_info[1])  # type: ignore[index]
    assert "rid-500" in logged[0].getMessage()
    assert (await client.get("/liveness")).status == 200


# ------------------------------------------------------------------ authentication


async def test_noop_default_and_query_user(make_client: MakeClient) -> None:
    client = await make_client()
    resp = await client.put("/v1/feedback/status", json={"status": True})
    assert (await resp.json())["status"]["updated_by"] == "00000000-0000-0000-0000-000"
    resp = await client.put("/v1/feedback/status?user_id=carol", json={"status": True})
    assert (await resp.json())["status"]["updated_by"] == "carol"


async def test_noop_user_owns_conversations(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client()
    cid = await new_conversation(client.app, "dave")
    assert (await client.post("/v1/feedback?user_id=dave", json=feedback(cid))).status == 200
    assert (await client.post("/v1/feedback", json=feedback(cid))).status == 403


@pytest.mark.parametrize("module", ["noop", "noop-with-token"])
async def test_empty_user_id_is_400(make_client: MakeClient, module: str) -> None:
    client = await make_client(authentication={"module": module})
    headers = {"Authorization": "Bearer t"}
    for method, path, body in (
        ("PUT", "/v1/feedback/status", {"status": True}),
        ("POST", "/v1/feedback", {}),
    ):
        resp = await client.request(method, f"{path}?user_id=", json=body, headers=headers)
        assert resp.status == 400
        assert await resp.json() == {"detail": "user_id cannot be empty"}  # the upstream's plain-string body


async def test_noop_with_token(make_client: MakeClient, new_conversation: NewConversation) -> None:
    client = await make_client(authentication={"module": "noop-with-token"})
    cid = await new_conversation(client.app)
    resp = await client.post("/v1/feedback", json=feedback(cid))
    assert resp.status == 401
    assert await resp.json() == {
        "detail": {
            "response": "Missing or invalid credentials provided by client",
            "cause": "No Authorization header found",
        }
    }
    for header in ("Basic dXNlcjpwYXNz", "Bearer", "Bearer   "):
        resp = await client.post("/v1/feedback", json=feedback(cid), headers={"Authorization": header})
        assert resp.status == 401
        assert (await resp.json())["detail"]["response"] == "Missing or invalid credentials provided by client"
    resp = await client.put("/v1/feedback/status", json={"status": True})
    assert resp.status == 401
    resp = await client.post("/v1/feedback", json=feedback(cid), headers={"Authorization": "Bearer abc"})
    assert resp.status == 200
    resp = await client.put(
        "/v1/feedback/status?user_id=eve", json={"status": True}, headers={"Authorization": "bearer x"}
    )
    assert (await resp.json())["status"]["updated_by"] == "eve"


# ------------------------------------------------------------------ typed state


def test_str_keys_fail_the_suite() -> None:
    app = web.Application()
    # pyproject's filterwarnings turns NotAppKeyWarning into an error, so a str key cannot slip in.
    with pytest.raises(web.NotAppKeyWarning):
        app["storage"] = object()


def test_app_state_uses_only_app_keys(make_config: Callable[..., Config]) -> None:
    app = create_app(make_config())
    assert all(isinstance(key, web.AppKey) for key in app)
    assert config_from(app) is not None and storage_from(app) is not None and auth_from(app) is not None
    with pytest.raises(KeyError):
        http_from(app)  # opened by its cleanup context, not before


def test_wiring_lives_in_state_and_app() -> None:
    """Every AppKey is defined in lightspeed/state.py, and only lightspeed/app.py appends
    cleanup contexts: the whole wiring can be read in those two files."""
    package = Path(lightspeed.__file__).parent
    keys, contexts = [], []
    for path in package.rglob("*.py"):
        text = path.read_text()
        name = path.relative_to(package).as_posix()
        if "AppKey(" in text or "RequestKey(" in text:
            keys.append(name)
        if "cleanup_ctx.append" in text:
            contexts.append(name)
    assert keys == ["state.py"]
    assert contexts == ["app.py"]


async def test_resources_opened_and_closed(make_config: Callable[..., Config]) -> None:
    app = create_app(make_config())
    runner = web.AppRunner(app)
    await runner.setup()
    try:
        assert not http_from(app).closed
        storage = storage_from(app)
        await storage.ping()
    finally:
        await runner.cleanup()
    assert http_from(app).closed
    with pytest.raises(StorageUnavailable):
        await storage.ping()


# ------------------------------------------------------------------ embedding as a sub-app


async def test_mounted_under_a_prefix_on_a_real_server(make_config: Callable[..., Config], tmp_path: Path) -> None:
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        host = web.Application()

        async def hello(request: web.Request) -> web.Response:
            return web.Response(text="host")

        host.router.add_get("/", hello)
        sub = create_app(make_config())
        host.add_subapp("/lightspeed", sub)
        runner = web.AppRunner(host)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        try:
            port = runner.addresses[0][1]
            base = f"http://127.0.0.1:{port}"
            cid = str(uuid.uuid4())
            await storage_from(sub).set_conversation_owner(cid, owner=hash_user_id("00000000-0000-0000-0000-000"))
            async with aiohttp.ClientSession() as session:
                async with session.get(f"{base}/") as resp:
                    assert await resp.text() == "host"
                async with session.get(f"{base}/lightspeed/liveness") as resp:
                    assert (resp.status, await resp.json()) == (200, {"alive": True})
                async with session.post(f"{base}/lightspeed/v1/feedback", json=feedback(cid)) as resp:
                    assert (resp.status, await resp.json()) == (200, {"response": "feedback received"})
                async with session.post(f"{base}/lightspeed/feedback", json=feedback(cid)) as resp:
                    assert resp.status == 200
                other = str(uuid.uuid4())
                async with session.post(f"{base}/lightspeed/v1/feedback", json=feedback(other)) as resp:
                    assert resp.status == 404
                    assert await resp.json() == {
                        "detail": {
                            "response": "Conversation not found",
                            "cause": f"Conversation with ID {other} does not exist",
                        }
                    }
                async with session.post(f"{base}/lightspeed/v1/feedback", json={"sentiment": 1}) as resp:
                    assert resp.status == 422
                    detail = (await resp.json())["detail"]
                    assert [e["loc"] for e in detail] == [
                        ["body", "conversation_id"],
                        ["body", "user_question"],
                        ["body", "llm_response"],
                    ]
                async with session.get(f"{base}/lightspeed/v1/nope") as resp:
                    assert resp.status == 404
                    assert await resp.json() == {"detail": "Not Found"}
                async with session.delete(f"{base}/lightspeed/v1/feedback") as resp:
                    assert (resp.status, await resp.json()) == (405, {"detail": "Method Not Allowed"})
                async with session.get(f"{base}/v1/feedback/status") as resp:
                    assert resp.status == 404  # nothing of ours outside the prefix
            assert len(list((tmp_path / "feedback").glob("*.json"))) == 2
            storage = storage_from(sub)
        finally:
            await runner.cleanup()
        with pytest.raises(StorageUnavailable):
            await storage.ping()
        assert http_from(sub).closed
    assert [str(w.message) for w in caught] == []


@pytest.mark.parametrize(
    ("ping", "reason"),
    [
        ("hang", "no answer within 0.05 s"),
        ("oserror", "unexpected ConnectionRefusedError: [Errno 111] refused"),
        ("unavailable", "database is down"),
    ],
)
async def test_readiness_503_whatever_the_backend_does(
    make_config: Callable[..., Config], aiohttp_client: Any, monkeypatch: pytest.MonkeyPatch, ping: str, reason: str
) -> None:
    class Flaky(FilesystemStorage):
        async def ping(self) -> None:
            if ping == "hang":
                await asyncio.sleep(10)
            elif ping == "oserror":
                raise ConnectionRefusedError(111, "refused")
            raise StorageUnavailable("database is down")

    monkeypatch.setattr(health, "PING_TIMEOUT_SECONDS", 0.05)
    with register_backend("flaky-test", Flaky):
        app = create_app(make_config(user_data_collection={"storage": {"backend": "flaky-test"}}))
    client = await aiohttp_client(app)
    resp = await client.get("/readiness")
    assert resp.status == 503
    body = await resp.json()
    assert body == {
        "ready": False,
        "reason": f"Storage backend 'flaky-test' is not available: {reason}",
        "overall_status": "unhealthy",
        "impacts": [f"Storage backend 'flaky-test' is not available: {reason}"],
        "providers": [],
        "checks": [
            {
                "component": "storage",
                "status": "unhealthy",
                "reason": f"Storage backend 'flaky-test' is not available: {reason}",
                "impact": body["checks"][0]["impact"],
            }
        ],
    }
    assert body["checks"][0]["impact"]
    assert (await client.get("/liveness")).status == 200


async def test_create_app_with_a_given_storage(make_config: Callable[..., Config], aiohttp_client: Any) -> None:
    config = make_config()
    storage = FilesystemStorage(options={}, collection=config.user_data_collection)
    app = create_app(config, storage=storage)
    assert storage_from(app) is storage
    client = await aiohttp_client(app)
    assert (await client.get("/readiness")).status == 200
    await client.close()
    with pytest.raises(StorageUnavailable):  # the app opened it, and closed it
        await storage.ping()


async def test_a_client_leaving_mid_request_is_not_an_error(
    aiohttp_client: Any, make_config: Callable[..., Config], caplog: pytest.LogCaptureFixture
) -> None:
    """Load generators and impatient clients close connections mid-request, which surfaces in a
    handler as ConnectionResetError (reading the body, or writing a stream). That is no server
    error, so it must not be logged as one with a traceback."""
    app = create_app(make_config())

    @public
    async def reading_from_a_gone_client(request: web.Request) -> web.Response:
        raise ConnectionResetError("Connection lost")

    app.router.add_post("/test-reset", reading_from_a_gone_client)
    client = await aiohttp_client(app)
    with caplog.at_level(logging.DEBUG):
        resp = await client.post("/test-reset", data=b"{}")
        assert resp.status == 400
        assert (await resp.json())["detail"]["response"] == "Client disconnected"
    errors = [r for r in caplog.records if r.levelno >= logging.ERROR]
    assert errors == [], [r.getMessage() for r in errors]
