"""User journeys, end to end, as the project's users live them.

- An operator follows docs/collector.md's "Advanced data collector testing": the local
  ingress and the service as real ``lightspeed`` processes, records stored through the
  seed's curl-style requests, an ingress that fails for a while, then takes everything.
- A developer mounts ``create_app`` in a host application that has its own routes.
- A storage folder replaced by a file: a clear error, and nothing stored before is lost.
- ``conversation_id`` path tricks on every endpoint that takes one.
- Odd requests: a body whose Content-Encoding does not decode, a wrong method.
- Operators at the command line: a mistyped command, a configuration from a pipe, a port
  already taken.
- Every configuration key is in the README's configuration reference, and every YAML example
  of README.md and docs/*.md is a valid configuration.
"""

from __future__ import annotations

import asyncio
import gzip
import io
import json
import logging
import os
import re
import signal
import socket
import subprocess
import sys
import tarfile
import typing
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import attrs
import pytest
import yaml
from aiohttp import web
from aiohttp.test_utils import TestClient

from lightspeed import create_app
from lightspeed.config import Config

ROOT = Path(__file__).resolve().parent.parent
# The fixtures of tests/conftest.py (the module name conftest is ambiguous in a whole-suite run).
MakeConfig = Callable[..., Config]
MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]
TOKEN = "your-auth-token"
ECHO = {
    "llm_providers": [{"name": "echo", "type": "echo", "models": ["echo"]}],
    "inference": {"default_provider": "echo", "default_model": "echo"},
}


def _command() -> list[str]:
    """The ``lightspeed`` console script of this environment (``python -m lightspeed`` without it)."""
    script = Path(sys.executable).parent / "lightspeed"
    return [str(script)] if script.exists() else [sys.executable, "-m", "lightspeed"]


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _until(check: Callable[[], Awaitable[bool]], what: str, within: float = 20) -> None:
    deadline = asyncio.get_running_loop().time() + within
    while not await check():
        if asyncio.get_running_loop().time() > deadline:
            raise AssertionError(f"not within {within} s: {what}")
        await asyncio.sleep(0.05)


@asynccontextmanager
async def _process(*args: str, cwd: Path) -> AsyncIterator[asyncio.subprocess.Process]:
    """A ``lightspeed`` subprocess, stopped with SIGTERM (it must exit 0) when the block ends."""
    env = {k: v for k, v in os.environ.items() if k != "LIGHTSPEED_CONFIG"}
    proc = await asyncio.create_subprocess_exec(
        *_command(), *args, cwd=cwd, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    try:
        yield proc
    finally:
        if proc.returncode is None:
            proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 40)
        assert proc.returncode == 0, f"lightspeed {args[0]} exited {proc.returncode}: {err.decode()[-2000:]}"


async def _wait_until_live(http: aiohttp.ClientSession, base: str, proc: asyncio.subprocess.Process) -> None:
    async def live() -> bool:
        assert proc.returncode is None, "the service exited"
        try:
            async with http.get(f"{base}/liveness") as resp:
                return resp.status == 200
        except aiohttp.ClientConnectionError:
            return False

    await _until(live, "the service answers /liveness")


def _tree(root: Path) -> list[Path]:
    return sorted(root.rglob("*"))


def _records(root: Path) -> dict[str, bytes]:
    """The records under ``root``; retried when the collector removes a folder mid-walk."""
    while True:
        try:
            return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*.json"))}
        except FileNotFoundError:
            continue


async def test_the_advanced_collector_steps_deliver_every_record_once_the_ingress_takes_them(tmp_path: Path) -> None:
    data = tmp_path / "data"
    async with _process("ingress", "--port", "0", "--store", str(data / "ingress"), "--token", TOKEN, cwd=tmp_path) as (
        ingress
    ):
        assert ingress.stdout is not None
        line = (await asyncio.wait_for(ingress.stdout.readline(), 30)).decode()
        match = re.search(r"(http://\S+)/api/ingress/v1/upload", line)
        assert match, line
        ingress_base = match.group(1)
        port = _free_port()
        config = {
            "service": {"host": "127.0.0.1", "port": port, "log_level": "warning", "access_log": False},
            **ECHO,
            "user_data_collection": {
                "feedback_enabled": True,
                "feedback_storage": str(data / "feedback"),
                "transcripts_enabled": True,
                "transcripts_storage": str(data / "transcripts"),
                "data_collector": {
                    "enabled": True,
                    "ingress_server_url": f"{ingress_base}/api/ingress/v1/upload",
                    "ingress_server_auth_token": TOKEN,
                    "ingress_content_service_name": "lightspeed-stack",
                    "collection_interval": 1,
                    "retry_base_seconds": 0.1,
                    "cleanup_after_send": True,
                    "connection_timeout_seconds": 30,
                },
            },
        }
        (tmp_path / "lightspeed-stack.yaml").write_text(yaml.safe_dump(config))
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            # The ingress is down for maintenance (503) before anything is stored.
            async with http.post(f"{ingress_base}/control", json={"faults": [{"status": 503, "repeat": True}]}) as r:
                assert r.status == 200
            async with _process("serve", "-c", "lightspeed-stack.yaml", cwd=tmp_path) as service:
                await _wait_until_live(http, base, service)
                # The seed's steps 3 and 4, on the seed's unprefixed paths.
                async with http.post(f"{base}/query", json={"query": "What is Kubernetes?"}) as resp:
                    assert resp.status == 200, await resp.text()
                    conversation = (await resp.json())["conversation_id"]
                feedback = {
                    "conversation_id": conversation,
                    "user_question": "What is Kubernetes?",
                    "llm_response": "Kubernetes is...",
                    "sentiment": 1,
                    "user_feedback": "Very helpful response",
                }
                async with http.post(f"{base}/feedback", json=feedback) as resp:
                    assert resp.status == 200, await resp.text()
                    assert await resp.json() == {"response": "feedback received"}

                async def stored_and_failing() -> bool:
                    async with http.get(f"{base}/readiness") as resp:
                        collector = (await resp.json())["data_collector"]
                    stored = _records(data / "feedback") | _records(data / "transcripts")
                    return collector["status"] == "failing" and len(stored) == 2

                await _until(stored_and_failing, "both records stored and the failing ingress reported in /readiness")
                # Step 5 of the seed: the files are there while the ingress fails.
                stored = {f"feedback/{k}": v for k, v in _records(data / "feedback").items()}
                stored |= {f"transcripts/{k}": v for k, v in _records(data / "transcripts").items()}
                async with http.post(f"{ingress_base}/control", json={"clear": True}) as r:
                    assert r.status == 200

                async def shipped() -> bool:
                    return not _records(data / "feedback") and not _records(data / "transcripts")

                await _until(shipped, "the collector shipped and removed every record once the ingress is back")
                async with http.get(f"{base}/readiness") as resp:
                    assert (await resp.json())["data_collector"]["status"] == "ok"
                async with http.get(f"{base}/metrics") as resp:
                    metrics = await resp.text()
                assert 'lightspeed_records_uploaded_total{kind="feedback"} 1.0' in metrics
                assert 'lightspeed_records_uploaded_total{kind="transcripts"} 1.0' in metrics
            async with http.get(f"{ingress_base}/control") as r:
                uploads = (await r.json())["uploads"]
    received: dict[str, bytes] = {}
    for upload in uploads:
        assert upload["content_type"] == "application/vnd.redhat.lightspeed-stack.periodic+tar"
        with tarfile.open(data / "ingress" / upload["file"], "r:gz") as archive:
            for member in archive.getmembers():
                extracted = archive.extractfile(member)
                assert extracted is not None and member.name not in received, member.name
                received[member.name] = extracted.read()
    assert received == stored  # every record, byte for byte, once
    assert [p for p in (data / "transcripts").iterdir()] == []  # emptied folders are removed too


def _json_body(value: Any) -> aiohttp.BytesIOPayload:
    return aiohttp.BytesIOPayload(io.BytesIO(json.dumps(value).encode()), content_type="application/json")


async def test_a_host_application_keeps_its_own_routes_and_errors(make_config: MakeConfig) -> None:
    # lightspeed allows 4 MiB bodies; the host keeps aiohttp's default of 1 MiB for its own routes.
    config = make_config(service={"max_request_body_bytes": 4 * 1024 * 1024}, **ECHO)

    async def index(request: web.Request) -> web.Response:
        return web.Response(text="host")

    async def upload(request: web.Request) -> web.Response:
        return web.Response(text=str(len(await request.read())))

    host = web.Application()
    host.router.add_get("/", index)
    host.router.add_post("/upload", upload)
    host.add_subapp("/lightspeed", create_app(config))
    runner = web.AppRunner(host)
    await runner.setup()
    try:
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        base = f"http://127.0.0.1:{port}"
        async with aiohttp.ClientSession() as http:
            async with http.get(f"{base}/") as resp:
                assert (resp.status, await resp.text()) == (200, "host")
            async with http.get(f"{base}/missing") as resp:  # the host's own 404, not lightspeed's JSON
                assert resp.status == 404 and resp.content_type == "text/plain"
            async with http.post(f"{base}/upload", data=io.BytesIO(b"x" * (2 * 1024 * 1024))) as resp:
                assert resp.status == 413  # the host's limit still holds for the host's routes
            async with http.get(f"{base}/lightspeed/missing") as resp:
                assert resp.status == 404 and await resp.json() == {"detail": "Not Found"}
            # A 2 MB query is within lightspeed's limit although above the host's.
            async with http.post(f"{base}/lightspeed/v1/query", data=_json_body({"query": "x" * 2_000_000})) as resp:
                assert resp.status == 200, await resp.text()
                conversation = (await resp.json())["conversation_id"]
            async with http.post(f"{base}/lightspeed/v1/query", data=_json_body({"query": "x" * 5_000_000})) as resp:
                assert resp.status == 413
                assert (await resp.json())["detail"]["response"] == "Request body too large"
            body = {"conversation_id": conversation, "user_question": "q", "llm_response": "r", "sentiment": -1}
            async with http.post(f"{base}/lightspeed/feedback", json=body) as resp:
                assert resp.status == 200, await resp.text()
    finally:
        await runner.cleanup()


async def test_a_storage_folder_replaced_by_a_file_is_a_clear_error_and_loses_nothing(
    make_client: MakeClient, tmp_path: Path
) -> None:
    client = await make_client(**ECHO)
    resp = await client.post("/v1/query", json={"query": "What is Kubernetes?"})
    conversation = (await resp.json())["conversation_id"]
    body = {"conversation_id": conversation, "user_question": "q", "llm_response": "r", "sentiment": 1}
    assert (await client.post("/v1/feedback", json=body)).status == 200
    before = _records(tmp_path / "feedback")
    assert len(before) == 1

    folder = tmp_path / "feedback"
    folder.rename(tmp_path / "feedback.saved")
    folder.write_text("someone put a file here")
    resp = await client.post("/v1/feedback", json=body)
    assert resp.status == 500
    assert (await resp.json())["detail"]["response"] == "Failed to store feedback"
    resp = await client.get("/readiness")
    assert resp.status == 503 and (await resp.json())["ready"] is False
    assert (await client.get("/liveness")).status == 200  # the service keeps running

    folder.unlink()
    (tmp_path / "feedback.saved").rename(folder)
    assert (await client.get("/readiness")).status == 200
    assert (await client.post("/v1/feedback", json=body)).status == 200
    after = _records(folder)
    assert len(after) == 2 and all(after[name] == data for name, data in before.items())
    assert [p.name for p in folder.iterdir() if not p.name.endswith(".json")] == []  # nothing half-written


TRICKS = [
    "../../etc",
    "..",
    "/etc/passwd",
    "a/b",
    "..%2F..%2Fetc",
    "11111111-1111-4111-8111-111111111111/../x",
    "11111111-1111-4111-8111-111111111111\x00",
    "C:\\Windows",
    " ",
    "x" * 10_000,
]


@pytest.mark.parametrize("endpoint", ["/v1/query", "/v1/streaming_query", "/v1/feedback", "/feedback"])
async def test_conversation_id_tricks_are_rejected_and_create_nothing(
    make_client: MakeClient, tmp_path: Path, endpoint: str
) -> None:
    client = await make_client(**ECHO)
    before = _tree(tmp_path)
    for trick in TRICKS:
        body: dict[str, Any] = {"conversation_id": trick}
        if "feedback" in endpoint:
            body |= {"user_question": "q", "llm_response": "r", "sentiment": 1}
        else:
            body |= {"query": "q"}
        resp = await client.post(endpoint, json=body)
        assert resp.status == 422, (trick, await resp.text())
        assert resp.content_type == "application/json"
        errors = (await resp.json())["detail"]
        assert [e["loc"] for e in errors] == [["body", "conversation_id"]], (trick, errors)
    # The app may create its storage roots; nothing named after a trick, nothing outside tmp_path.
    created = [p for p in _tree(tmp_path) if p not in before]
    assert [p for p in created if not p.is_dir()] == []
    assert [p for p in _tree(tmp_path.parent) if p.name == "etc" or "passwd" in p.name] == []


def _config_keys(cls: type, path: str = "") -> list[str]:
    """Every key of the configuration file, as dotted paths (list items without an index)."""
    keys = []
    hints = typing.get_type_hints(cls)
    for field in attrs.fields(cls):
        keys.append(f"{path}{field.name}")
        inner = hints[field.name]
        if typing.get_origin(inner) is tuple:
            inner = typing.get_args(inner)[0]
        if isinstance(inner, type) and attrs.has(inner):
            keys += _config_keys(inner, f"{path}{field.name}.")
    return keys


def test_every_configuration_key_is_in_the_readme_configuration_reference() -> None:
    docs = (ROOT / "README.md").read_text()
    keys = _config_keys(Config)
    assert "user_data_collection.data_collector.lease_seconds" in keys and "llm_providers.api_key_path" in keys
    missing = [key for key in keys if not re.search(rf"(^|\s|`){re.escape(key.rsplit('.', 1)[-1])}:", docs, re.M)]
    assert missing == [], f"configuration keys missing from README.md: {missing}"


class _EveryVariable(dict[str, str]):
    """An environment where every ``${env.NAME}`` the docs use is set."""

    def __contains__(self, name: object) -> bool:
        return True

    def __missing__(self, name: str) -> str:
        return "value"


def test_every_example_configuration_in_the_docs_is_valid() -> None:
    """Each YAML block of README.md and docs/*.md that looks like a configuration file parses."""
    from lightspeed.config import parse_config

    checked = 0
    for doc in [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]:
        for block in re.findall(r"```yaml\n(.*?)```", doc.read_text(), re.S):
            data = yaml.safe_load(block)
            if not isinstance(data, dict) or not set(data) <= {f.name for f in attrs.fields(Config)}:
                continue
            parse_config(data, env=_EveryVariable())
            checked += 1
    assert checked >= 2


@pytest.mark.parametrize("path", ["/v1/query", "/v1/feedback", "/v1/feedback/status"])
async def test_a_body_that_cannot_be_decoded_is_a_clear_400(
    make_client: MakeClient, path: str, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client(**ECHO)
    method = client.put if path.endswith("status") else client.post
    resp = await method(path, data=b"not gzip at all", headers={"Content-Encoding": "gzip"})
    assert resp.status == 400
    detail = (await resp.json())["detail"]
    assert detail["response"] == "Invalid request body"
    assert "content-encoding" in detail["cause"].lower()
    resp = await method(path, data=gzip.compress(b'{"status": tru'), headers={"Content-Encoding": "gzip"})
    assert resp.status == 422  # a body that decodes is parsed as usual
    assert (await client.get("/v1/feedback/status")).status == 200
    assert [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR] == []  # no traceback logged


@pytest.mark.parametrize(
    ("method", "path"), [("GET", "/v1/query"), ("DELETE", "/v1/feedback/status"), ("PUT", "/feedback")]
)
async def test_a_wrong_method_is_a_json_405_naming_the_allowed_ones(
    make_client: MakeClient, method: str, path: str
) -> None:
    client = await make_client(**ECHO)
    resp = await client.request(method, path)
    assert resp.status == 405
    assert resp.content_type == "application/json"
    assert "Allow" in resp.headers


def test_a_mistyped_command_is_named_not_taken_for_serve(capsys: pytest.CaptureFixture[str]) -> None:
    from lightspeed.cli import main

    with pytest.raises(SystemExit) as info:
        main(["chek-config", "-c", "lightspeed-stack.yaml"])
    assert info.value.code == 2
    err = capsys.readouterr().err
    assert "unknown command 'chek-config'" in err and "check-config" in err


def test_a_configuration_can_come_from_a_pipe(tmp_path: Path) -> None:
    """``lightspeed check-config -c <(vault read ...)``: a pipe is a file one can name."""
    script = f"{' '.join(_command())} check-config -c <(printf 'name: piped\\n')"
    done = subprocess.run(["bash", "-c", script], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "name: piped" in done.stdout
    command = [*_command(), "check-config", "-c", str(tmp_path)]
    done = subprocess.run(command, capture_output=True, text=True, timeout=60)
    assert done.returncode == 1 and "is not a file" in done.stderr  # a directory is still an error


@pytest.mark.parametrize("command", ["serve", "ingress"])
def test_a_port_already_taken_is_one_clear_line_not_a_traceback(tmp_path: Path, command: str) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        (tmp_path / "lightspeed-stack.yaml").write_text(f"service: {{host: 127.0.0.1, port: {port}}}\n")
        args = ["-c", "lightspeed-stack.yaml"] if command == "serve" else ["--port", str(port), "--store", "in"]
        done = subprocess.run([*_command(), command, *args], capture_output=True, text=True, timeout=60, cwd=tmp_path)
    assert done.returncode == 2
    assert "error" in done.stderr and "address already in use" in done.stderr
    assert "Traceback" not in done.stderr


async def test_a_restart_says_when_the_stored_feedback_flag_overrides_the_file(
    make_client: MakeClient, caplog: pytest.LogCaptureFixture
) -> None:
    client = await make_client()
    assert (await client.put("/v1/feedback/status", json={"status": False})).status == 200
    await client.close()
    with caplog.at_level(logging.WARNING, logger="lightspeed.api.feedback"):
        restarted = await make_client()  # the same store, feedback_enabled: true in the file
    resp = await restarted.get("/v1/feedback/status")
    assert (await resp.json())["status"] == {"enabled": False}  # the flag survives the restart ...
    warnings = [r.getMessage() for r in caplog.records if r.name == "lightspeed.api.feedback"]
    assert any("feedback is disabled by an earlier PUT" in m and "feedback_enabled is true" in m for m in warnings)


def test_urls_that_could_never_work_are_refused_at_load() -> None:
    from lightspeed.config import parse_config
    from lightspeed.errors import ConfigError

    data = {
        "llm_providers": [
            {"name": "a", "type": "openai", "url": "https://user:pw@llm.example/v1", "api_key": "k", "models": ["m"]},
            {"name": "b", "type": "openai", "url": "llm.example/v1", "models": ["m"]},
            {"name": "c", "type": "openai", "url": "https://user:pw@llm.example/v1", "models": ["m"]},  # basic auth
        ],
        "user_data_collection": {
            "data_collector": {
                "ingress_server_url": "https://u:secret@ingress.example/up",
                "ingress_server_auth_token": "t",
            }
        },
    }
    with pytest.raises(ConfigError) as info:
        parse_config(data, env={})
    assert info.value.problems == [
        "user_data_collection.data_collector.ingress_server_url: must not contain a user or password beside the token"
        " (aiohttp sends only one)",
        "llm_providers[0].url: must not contain a user or password beside an api_key (aiohttp sends only one)",
        "llm_providers[1].url: must be an http:// or https:// URL, got 'llm.example/v1'",
    ]
    assert "secret" not in str(info.value)


async def test_a_malformed_request_is_one_warning_line_in_the_log(tmp_path: Path) -> None:
    port = _free_port()
    (tmp_path / "lightspeed-stack.yaml").write_text(f"service: {{host: 127.0.0.1, port: {port}}}\n")
    proc = await asyncio.create_subprocess_exec(
        *_command(), "serve", "-c", "lightspeed-stack.yaml", cwd=tmp_path, stderr=asyncio.subprocess.PIPE
    )
    try:
        async with aiohttp.ClientSession() as http:
            await _wait_until_live(http, f"http://127.0.0.1:{port}", proc)
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        writer.write(b"GET /liveness HTTP/1.1\r\nHost: x\r\nX-Big: " + b"h" * 20_000 + b"\r\n\r\n")
        answer = await reader.read()
        writer.close()
        assert b" 400 Bad Request" in answer.split(b"\r\n", 1)[0]
    finally:
        proc.send_signal(signal.SIGTERM)
        _, err = await asyncio.wait_for(proc.communicate(), 40)
    log = err.decode()
    assert proc.returncode == 0, log
    assert "Traceback" not in log
    assert re.search(r"WARNING aiohttp.server .*Error handling request from 127.0.0.1: .*8190 bytes", log), log
