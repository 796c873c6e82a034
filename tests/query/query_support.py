"""Helpers for the query tests: stored transcripts, SSE frames, free ports."""

from __future__ import annotations

import json
import socket
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from lightspeed.state import config_from
from tests.query.fake_llm import MODELS

Client = TestClient[web.Request, web.Application]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def transcripts_root(client: Client) -> Path:
    path = config_from(client.app).user_data_collection.transcripts_storage
    assert path is not None
    return Path(path)


async def transcripts(client: Client) -> list[dict[str, Any]]:
    """Every stored transcript, oldest first (an answer that arrived has its transcript stored)."""
    return read_transcripts(transcripts_root(client))


def read_transcripts(root: Path) -> list[dict[str, Any]]:
    files = sorted(root.rglob("*.json"), key=lambda p: p.stat().st_mtime_ns) if root.is_dir() else []
    return [json.loads(p.read_bytes()) for p in files]


def sse_events(text: str) -> list[dict[str, Any]]:
    """The JSON of every ``data:`` frame; fails on anything that is not a well-formed frame."""
    assert text.endswith("\n\n"), text[-200:]
    frames = text[:-2].split("\n\n")
    events = []
    for frame in frames:
        assert frame.startswith("data: "), frame
        events.append(json.loads(frame[len("data: ") :]))
    return events


def all_files(root: Path) -> list[Path]:
    """Every regular file under ``root``."""
    return [p for p in root.rglob("*") if p.is_file()]


def llm_sections(url: str, *, timeout: float = 2.0, **extra: Any) -> dict[str, Any]:
    provider = {"name": "fake", "type": "openai", "url": url, "models": list(MODELS), "timeout_seconds": timeout}
    provider.update(extra)
    return {
        "inference": {"default_provider": "fake", "default_model": "fake-model"},
        "llm_providers": [provider, {"name": "local", "type": "echo", "models": ["echo"]}],
    }
