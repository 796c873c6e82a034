"""Storage faults seen from the API, on a real ``lightspeed serve`` run as ``nobody`` without
capabilities (so file modes bind): a small tmpfs that fills up, and record directories that
cannot be written. While the fault lasts: ``/v1/query`` is a 500 with the upstream's body, feedback
a 500 ``Failed to store feedback``, a stream ends with an ``error`` event instead of ``end``, and
``/readiness`` is 503; never a 200 whose records were not stored. When the fault goes, everything
works again without a restart, the conversations begun before included."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.fakes import fill
from tests.service_process import ECHO, NOBODY, Service

#: The upstream's 500 bodies for a query whose records could not be stored.
QUERY_500 = (
    {"response": "Internal server error", "cause": "An unexpected error occurred while processing the request."},
    {"response": "Database query failed", "cause": "Failed to query the database"},
)


def _config(root: Path) -> dict[str, Any]:
    return {
        **ECHO,
        "user_data_collection": {
            "feedback_enabled": True,
            "feedback_storage": str(root / "feedback"),
            "transcripts_enabled": True,
            "transcripts_storage": str(root / "transcripts"),
        },
    }


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base

    async def query(self, cid: str | None = None) -> tuple[int, Any]:
        body: dict[str, Any] = {"query": "what is a pod?"}
        if cid:
            body["conversation_id"] = cid
        async with self.http.post(f"{self.base}/v1/query", json=body) as resp:
            return resp.status, await resp.json()

    async def stream(self, cid: str | None = None) -> list[dict[str, Any]]:
        body: dict[str, Any] = {"query": "and a deployment?"}
        if cid:
            body["conversation_id"] = cid
        async with self.http.post(f"{self.base}/v1/streaming_query", json=body) as resp:
            assert resp.status == 200
            text = await resp.text()
        return [json.loads(f[len("data: ") :]) for f in text.split("\n\n") if f.startswith("data: ")]

    async def feedback(self, cid: str) -> tuple[int, Any]:
        body = {"conversation_id": cid, "user_question": "q", "llm_response": "a", "sentiment": 1}
        async with self.http.post(f"{self.base}/v1/feedback", json=body) as resp:
            return resp.status, await resp.json()

    async def ready(self) -> int:
        return (await self.readiness())[0]

    async def readiness(self) -> tuple[int, Any]:
        async with self.http.get(f"{self.base}/readiness") as resp:
            return resp.status, await resp.json()

    async def until_ready(self, expected: int, within: float = 10) -> None:
        deadline = asyncio.get_running_loop().time() + within
        while (status := await self.ready()) != expected:
            assert asyncio.get_running_loop().time() < deadline, f"/readiness stayed {status}"
            await asyncio.sleep(0.1)


async def _healthy(api: Api, cid: str) -> None:
    """Everything works: new and old conversations, streams, feedback, readiness."""
    await api.until_ready(200)
    status, body = await api.query()
    assert status == 200, body
    status, body = await api.query(cid)
    assert (status, body["conversation_id"]) == (200, cid)
    assert (await api.stream(cid))[-1]["event"] == "end"
    assert await api.feedback(cid) == (200, {"response": "feedback received"})


async def _failing(api: Api, cid: str, root: Path, cause: str) -> None:
    """Nothing is answered that was not stored, and the probes say why."""
    status, body = await api.query()
    assert status == 500 and body["detail"] in QUERY_500, body
    status, body = await api.query(cid)
    assert status == 500 and body["detail"] in QUERY_500, body
    events = await api.stream(cid)
    assert [e["event"] for e in events].count("end") == 0
    assert events[-1]["event"] == "error" and events[-1]["data"]["status_code"] == 500
    status, body = await api.feedback(cid)
    cause_500 = f"Failed to store feedback at directory: {root / 'feedback'}"  # the upstream's words
    assert (status, body["detail"]) == (500, {"response": "Failed to store feedback", "cause": cause_500}), body
    status, body = await api.readiness()
    assert (status, body["ready"], body["overall_status"]) == (503, False, "unhealthy"), body
    assert cause in body["reason"] and "feedback_storage" in body["reason"], body


async def _with_service(base: Path, root: Path, scenario: Callable[[Api], Awaitable[None]]) -> None:
    service = Service(base, _config(root), unprivileged=True)
    async with aiohttp.ClientSession() as http:
        await service.start(http)
        try:
            await scenario(Api(http, service.base))
        finally:
            service.stop()


@pytest.fixture
def small_disk(unprivileged_base: Path) -> Path:
    """A 3 MiB tmpfs of our own that nobody owns, so filling it harms no one."""
    disk = unprivileged_base / "disk"
    disk.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m,mode=0700", "tmpfs", str(disk)], capture_output=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.decode().strip()}")
    os.chown(disk, NOBODY, NOBODY)
    return disk


async def test_a_full_disk_fails_requests_clearly_and_heals_without_a_restart(
    unprivileged_base: Path, small_disk: Path
) -> None:
    disk = small_disk

    async def scenario(api: Api) -> None:
        status, body = await api.query()
        assert status == 200
        cid = body["conversation_id"]
        await _healthy(api, cid)
        filler = fill(disk)
        await _failing(api, cid, disk, "No space left on device")
        filler.unlink()
        await _healthy(api, cid)

    await _with_service(unprivileged_base, disk, scenario)


async def test_unwritable_record_directories_fail_requests_clearly_and_heal(unprivileged_base: Path) -> None:
    root = unprivileged_base / "data"

    async def scenario(api: Api) -> None:
        status, body = await api.query()
        assert status == 200
        cid = body["conversation_id"]
        await _healthy(api, cid)
        folders = [p for p in root.rglob("*") if p.is_dir()]
        assert {p.name for p in folders} >= {"feedback", "transcripts"}
        for folder in folders:
            folder.chmod(0o500)
        await _failing(api, cid, root, "Permission denied")
        for folder in folders:
            folder.chmod(0o700)
        await _healthy(api, cid)

    await _with_service(unprivileged_base, root, scenario)
