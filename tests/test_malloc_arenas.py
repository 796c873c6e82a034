"""``lightspeed serve`` caps glibc's malloc arenas (decision ops-01-malloc-arenas), unless the
operator set ``MALLOC_ARENA_MAX``: counted in the real process's memory map under load."""

from __future__ import annotations

import asyncio
import platform
from pathlib import Path

import aiohttp
import pytest

from tests.service_process import ECHO, Service

pytestmark = pytest.mark.skipif(
    platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc's arenas on Linux"
)

#: glibc maps each arena beyond the main one as a 64 MiB region aligned to its size (HEAP_MAX_SIZE).
ARENA_BYTES = 64 << 20


def thread_arenas(pid: int) -> int:
    """The arenas besides the main one: anonymous regions at a 64 MiB boundary, writable at the
    start, whose reserved rest (``---p``) ends exactly 64 MiB further."""
    maps = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        lo, hi = (int(x, 16) for x in fields[0].split("-"))
        maps.append((lo, hi, fields[1], len(fields) == 5))
    found = 0
    for i, (lo, hi, perms, anonymous) in enumerate(maps):
        if not (anonymous and perms == "rw-p" and lo % ARENA_BYTES == 0):
            continue
        rest = maps[i + 1] if i + 1 < len(maps) else None
        whole = hi - lo == ARENA_BYTES
        reserved = rest is not None and rest[0] == hi and rest[2] == "---p" and rest[1] == lo + ARENA_BYTES
        found += whole or reserved
    return found


async def _busy_service(tmp_path: Path, http: aiohttp.ClientSession) -> int:
    """Start the service, keep every thread of its store busy for a while, count its arenas."""
    data = tmp_path / "data"
    udc = {
        "feedback_enabled": True,
        "feedback_storage": str(data / "feedback"),
        "transcripts_enabled": True,
        "transcripts_storage": str(data / "transcripts"),
    }
    service = Service(tmp_path, {**ECHO, "user_data_collection": udc})
    await service.start(http)
    try:

        async def client(n: int) -> None:
            for i in range(15):
                async with http.post(f"{service.base}/v1/query", json={"query": f"client {n} question {i}"}) as resp:
                    assert resp.status == 200, await resp.text()
                    cid = (await resp.json())["conversation_id"]
                fb = {
                    "conversation_id": cid,
                    "user_question": "q",
                    "llm_response": "a",
                    "sentiment": 1,
                    "user_feedback": "fine",
                }
                async with http.post(f"{service.base}/v1/feedback", json=fb) as resp:
                    assert resp.status == 200, await resp.text()

        await asyncio.gather(*(client(n) for n in range(24)))
        assert service.proc is not None
        return thread_arenas(service.proc.pid)
    finally:
        service.stop()


async def test_serve_keeps_two_arenas_and_the_operator_can_choose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as http:
        monkeypatch.delenv("MALLOC_ARENA_MAX", raising=False)
        (tmp_path / "capped").mkdir()
        capped = await _busy_service(tmp_path / "capped", http)
        # The operator's value wins (glibc reads it at start; lightspeed then leaves the cap alone).
        monkeypatch.setenv("MALLOC_ARENA_MAX", "16")
        (tmp_path / "operator").mkdir()
        chosen = await _busy_service(tmp_path / "operator", http)
    assert capped <= 1  # the main arena and at most one more
    assert chosen > 1  # the store's threads took arenas of their own: the count above can see them
