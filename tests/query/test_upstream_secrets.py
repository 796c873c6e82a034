"""What an LLM provider says never leaks a secret, and its URL is joined as a path.

A fake LLM echoes the request's headers (the API key, the Basic credentials of a URL's user
info), its path and its query string (an ``api-key=`` parameter) into its error bodies. A real
``lightspeed serve`` process asks it through three providers, whole and streamed; then every
response and the whole log are searched for the secrets. ``check-config`` masks them too.
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import os
import signal
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from lightspeed.llm.openai import join_url
from lightspeed.masking import Masker, masked_url, public_url
from tests.query.fake_llm import FakeLLM
from tests.query.query_support import free_port, sse_events

KEY = "sk-live-KEY0123456789abcdef"
QUERY_KEY = "qsecret-5511aa"
FILE_KEY = "filekey-99887766"
PASSWORD = "pw-userinfo-4242"
BASIC = base64.b64encode(f"svc:{PASSWORD}".encode()).decode()
SECRETS = (KEY, QUERY_KEY, FILE_KEY, PASSWORD, BASIC, f"sk-...{KEY[-4:]}")
LEAKY = ("leak401", "leak500", "leakstream", "leakchunk")


# ------------------------------------------------------------------ URL joining


@pytest.mark.parametrize(
    ("base", "expected"),
    [
        ("http://h/v1", "http://h/v1/chat/completions"),
        ("http://h/v1/", "http://h/v1/chat/completions"),
        ("http://h", "http://h/chat/completions"),
        ("http://h/", "http://h/chat/completions"),
        (
            "https://h/openai/deployments/gpt-4o?api-version=2024-10-21",
            "https://h/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21",
        ),
        (
            "https://h/openai/deployments/gpt-4o/?api-version=2024-10-21&api-key=k%2B1",
            "https://h/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21&api-key=k%2B1",
        ),
    ],
)
def test_join_url_appends_the_path_and_keeps_the_query(base: str, expected: str) -> None:
    assert str(join_url(base, "chat", "completions")) == expected


@pytest.mark.parametrize(
    ("suffix", "target"),
    [
        ("/v1", "/v1/chat/completions"),
        ("/v1/", "/v1/chat/completions"),
        ("", "/chat/completions"),
        ("/gateway/v1?api-version=2024-10-21", "/gateway/v1/chat/completions?api-version=2024-10-21"),
        ("/gateway/v1/?api-version=2024-10-21&x=1", "/gateway/v1/chat/completions?api-version=2024-10-21&x=1"),
    ],
)
async def test_the_provider_calls_the_joined_url(
    query_client: Any, fake_llm: FakeLLM, suffix: str, target: str
) -> None:
    origin = fake_llm.url.removesuffix("/v1")
    client = await query_client(provider={"url": origin + suffix})
    resp = await client.post("/v1/query", json={"query": "where?"})
    assert resp.status == 200, await resp.text()
    resp = await client.post("/v1/streaming_query", json={"query": "where?"})
    assert resp.status == 200
    assert sse_events(await resp.text())[-1]["event"] == "end"
    assert fake_llm.targets == [target, target]


def test_urls_shown_to_clients_and_operators() -> None:
    url = f"https://svc:{PASSWORD}@h:8443/v1?api-version=2024-10-21&api-key={QUERY_KEY}#x"
    assert public_url(url) == "https://h:8443/v1"
    assert masked_url(url) == "https://svc:********@h:8443/v1?api-version=2024-10-21&api-key=********#x"


def test_the_masker_masks_secrets_and_credential_shaped_values() -> None:
    masker = Masker([FILE_KEY])
    text = (
        f"key {FILE_KEY}; Authorization: Bearer abc.DEF-123456; {{'authorization': 'Basic {BASIC}'}}; "
        f'"x-api-key": "zz-9988776655"; https://u:{PASSWORD}@h/p?api-key={QUERY_KEY}&api-version=1; '
        f"sk-...{KEY[-4:]} eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiIxMjM0In0.c2lnbmF0dXJl"
    )
    masked = masker.mask(text)
    for secret in (*SECRETS, "abc.DEF-123456", "zz-9988776655", "eyJhbGciOiJIUzI1NiJ9"):
        assert secret not in masked
    assert "Authorization: Bearer ********" in masked
    assert "api-version=1" in masked
    assert masker.mask("Token usage: 12 prompt, 30 completion") == "Token usage: 12 prompt, 30 completion"


# ------------------------------------------------------------------ the whole service


def _config(tmp_path: Path, fake_url: str, port: int) -> Path:
    origin = fake_url.removesuffix("/v1")
    key_file = tmp_path / "key"
    key_file.write_text(FILE_KEY + "\n")
    models = ["fake-model", *LEAKY]
    data = {
        "service": {"host": "127.0.0.1", "port": port, "log_level": "debug"},
        "user_data_collection": {
            "feedback_enabled": True,
            "feedback_storage": str(tmp_path / "feedback"),
            "transcripts_enabled": True,
            "transcripts_storage": str(tmp_path / "transcripts"),
        },
        "llm_providers": [
            {
                "name": "keyed",
                "type": "openai",
                "url": f"{origin}/v1?api-version=2024-10-21&api-key={QUERY_KEY}",
                "api_key": KEY,
                "models": models,
                "timeout_seconds": 5,
            },
            {"name": "filed", "type": "openai", "url": fake_url, "api_key_path": str(key_file), "models": models},
            {
                "name": "userinfo",
                "type": "openai",
                "url": origin.replace("http://", f"http://svc:{PASSWORD}@") + "/v1",
                "models": models,
            },
        ],
        "inference": {"default_provider": "keyed", "default_model": "fake-model"},
    }
    path = tmp_path / "lightspeed-stack.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@contextlib.asynccontextmanager
async def _serve(config: Path, port: int, log: Path) -> AsyncIterator[str]:
    env = {k: v for k, v in os.environ.items() if k != "LIGHTSPEED_CONFIG"}
    with log.open("wb") as out:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "lightspeed", "serve", "-c", str(config), stdout=out, stderr=out, env=env
        )
    base = f"http://127.0.0.1:{port}"
    try:
        async with aiohttp.ClientSession() as session:
            for _ in range(400):
                assert proc.returncode is None, "the service exited: see serve.log"
                with contextlib.suppress(aiohttp.ClientError):
                    async with session.get(f"{base}/liveness") as resp:
                        if resp.status == 200:
                            break
                await asyncio.sleep(0.05)
        yield base
    finally:
        proc.send_signal(signal.SIGTERM)
        await asyncio.wait_for(proc.wait(), 30)


async def test_no_secret_reaches_a_client_or_the_log(fake_llm: FakeLLM, tmp_path: Path) -> None:
    port = free_port()
    config = _config(tmp_path, fake_llm.url, port)
    log = tmp_path / "serve.log"
    seen: list[str] = []
    async with _serve(config, port, log) as base, aiohttp.ClientSession() as session:
        for provider in ("keyed", "filed", "userinfo"):
            for model in LEAKY:
                for path in ("/v1/query", "/v1/streaming_query"):
                    body = {"query": "leak?", "provider": provider, "model": model}
                    async with session.post(base + path, json=body) as resp:
                        text = await resp.text()
                        seen.append(f"{resp.status} {dict(resp.headers)!r} {text}")
                        assert resp.status in (200, 502, 503), text  # streams break off after 200
    # Every call reached the fake LLM with the real credentials...
    assert len(fake_llm.requests) == 3 * len(LEAKY) * 2
    assert f"Bearer {KEY}" in fake_llm.auth_headers
    assert f"Bearer {FILE_KEY}" in fake_llm.auth_headers
    assert f"Basic {BASIC}" in fake_llm.auth_headers
    assert any(QUERY_KEY in t for t in fake_llm.targets)
    # ...and its echo of them reached neither a client nor the log.
    responses = "\n".join(seen)
    logged = log.read_bytes().decode(errors="replace")
    for secret in SECRETS:
        assert secret not in responses, secret
        assert secret not in logged, secret
    # Clients get our words; the log keeps what the provider said, masked.
    assert "Provider 'keyed' answered 401" in responses
    assert "Provider 'userinfo' at http://127.0.0.1:" in responses or "Provider 'userinfo' answered" in responses
    assert "You sent headers" not in responses
    assert "Incorrect API key provided: ********" in logged
    assert "upstream gateway failure" in logged
    assert "'Authorization': 'Bearer ********'" in logged
    assert "api-key=********" in logged


def test_check_config_masks_every_secret(tmp_path: Path) -> None:
    config = _config(tmp_path, "http://127.0.0.1:9/v1", 8080)
    check = subprocess.run(
        [sys.executable, "-m", "lightspeed", "check-config", "-c", str(config)],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    for secret in SECRETS:
        assert secret not in check.stdout + check.stderr
    assert "/v1?api-version=2024-10-21&api-key=********" in check.stdout
    assert "http://svc:********@127.0.0.1:9/v1" in check.stdout
