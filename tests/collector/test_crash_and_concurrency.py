"""Collectors killed with SIGKILL at random points, and several collectors on one store."""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from aiohttp.test_utils import TestClient, TestServer

from lightspeed import create_app
from lightspeed.collector import Collector, IngressClient
from lightspeed.config import parse_config
from lightspeed.records import hash_user_id
from lightspeed.state import storage_from
from lightspeed.storage.filesystem import FilesystemStorage
from tests.collector.collector_support import Ingress, store_records, tree_files

WORKER = Path(__file__).with_name("collector_worker.py")


class Zygote:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        self.proc = proc

    @classmethod
    async def start(cls, stderr: Path) -> Zygote:
        with stderr.open("wb") as err:
            proc = await asyncio.create_subprocess_exec(
                sys.executable, str(WORKER), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=err
            )
        return cls(proc)

    async def _ask(self, line: str) -> str:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write(line.encode() + b"\n")
        await self.proc.stdin.drain()
        return (await asyncio.wait_for(self.proc.stdout.readline(), 60)).decode().strip()

    async def spawn(self, spec: dict[str, Any]) -> int:
        return int(await self._ask(f"spawn {json.dumps(spec)}"))

    async def wait(self, pid: int) -> int:
        return int((await self._ask(f"wait {pid}")).split()[1])

    async def stop(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.close()
        await asyncio.wait_for(self.proc.wait(), 30)


def udc_for(tmp_path: Path, ingress: Ingress, **collector: Any) -> dict[str, Any]:
    return {
        "feedback_enabled": True,
        "feedback_storage": str(tmp_path / "data" / "feedback"),
        "transcripts_enabled": True,
        "transcripts_storage": str(tmp_path / "data" / "transcripts"),
        "data_collector": {
            "ingress_server_url": ingress.url,
            "ingress_server_auth_token": "tok",
            "ingress_content_service_name": "lightspeed-test",
            "retry_base_seconds": 0.05,
            **collector,
        },
    }


def open_storage(udc: dict[str, Any]) -> FilesystemStorage:
    collection = parse_config({"user_data_collection": udc}, env={}).user_data_collection
    return FilesystemStorage(options={}, collection=collection)


def arrivals(ingress: Ingress) -> list[tuple[int, str, str, bytes]]:
    """(upload index, identity, member name, bytes) in the order the ingress accepted them."""
    import tarfile

    out = []
    for idx, entry in enumerate(ingress.emulator.uploads):
        identity = entry["user_agent"].rsplit("cluster/", 1)[1]
        with tarfile.open(ingress.emulator.store / entry["file"], "r:gz") as tar:
            for member in tar:
                fh = tar.extractfile(member)
                assert fh is not None
                out.append((idx, identity, member.name, fh.read()))
    return out


async def test_collectors_killed_at_random_points_lose_nothing(tmp_path: Path, ingress: Ingress) -> None:
    rnd = random.Random(int.from_bytes(os.urandom(4)))
    lease = 2  # renewed every lease/3 s while a collector lives
    udc = udc_for(tmp_path, ingress, lease_seconds=lease)
    spool = tmp_path / "spool"  # where the collectors write their archives
    spool.mkdir()
    stored: dict[str, bytes] = {}
    zygote = await Zygote.start(tmp_path / "workers.log")
    kills = 0
    dead: list[int] = []
    try:
        async with open_storage(udc) as storage:
            stored.update(await store_records(storage, 40, 40))
            for i in range(60):
                stored.update(await store_records(storage, 2, 2))
                pid = await zygote.spawn(
                    {"udc": udc, "identity": f"crash-{i}", "batch": 4, "mode": "busy", "spool": str(spool)}
                )
                await asyncio.sleep(rnd.uniform(0.0, 0.25))
                os.kill(pid, signal.SIGKILL)
                status = await zygote.wait(pid)
                assert os.WIFSIGNALED(status), (tmp_path / "workers.log").read_text()
                kills += 1
                dead.append(pid)
    finally:
        await zygote.stop()
    assert kills >= 50

    await asyncio.sleep(lease + 0.2)  # the killed collectors' leases run out
    # Whatever archives the kills left (some land mid-archive), and one for certain.
    (spool / f"lightspeed-upload-{dead[-1]}-killed.tar.gz").write_bytes(b"\x1f\x8b")
    async with open_storage(udc) as storage, aiohttp.ClientSession() as session:
        collection = storage.collection
        dc = collection.data_collector
        final = Collector(
            storage=storage,
            collection=collection,
            uploader=IngressClient(session=session, config=dc.__class__(**{**_fields(dc), "identity_id": "final"})),
            tmp_dir=str(spool),
        )
        report = await final.run_once()
    assert report.ok and report.remaining == 0, report.summary()
    assert list(spool.iterdir()) == []  # the killed collectors' archives were removed

    seen: dict[str, tuple[int, str]] = {}
    uploads: dict[str, list[int]] = {}
    for idx, identity, _, _ in arrivals(ingress):
        if idx not in uploads.setdefault(identity, []):
            uploads[identity].append(idx)
    for idx, identity, name, data in arrivals(ingress):
        assert data == stored[name], name  # byte for byte
        if name in seen:
            first_idx, first_identity = seen[name]
            # Sent twice only when the first sender got its 202 and was killed before that
            # batch's ack completed. A collector acks a batch while it packs and uploads the
            # next (at most two batches in flight, collector/cycle.py), so that is one of the
            # killed sender's last two uploads, never an earlier one.
            assert first_identity.startswith("crash-") and first_idx in uploads[first_identity][-2:], (
                f"{name} first sent by {first_identity} in upload {first_idx}"
                f" (its uploads: {uploads[first_identity]}),"
                f" again by {identity} in upload {idx}"
            )
        else:
            seen[name] = (idx, identity)
    assert set(seen) == set(stored)
    assert tree_files(Path(udc["feedback_storage"])) == []
    assert tree_files(Path(udc["transcripts_storage"])) == []
    # (A collector killed between deleting a conversation's files and removing its folder
    # leaves that empty folder behind; it holds nothing, and no later ack knows of it.)


def _fields(obj: Any) -> dict[str, Any]:
    import attrs

    return attrs.asdict(obj, recurse=False)


@pytest.mark.parametrize("collectors", [3])
async def test_several_collectors_on_one_store_while_the_api_writes(
    tmp_path: Path, ingress: Ingress, collectors: int
) -> None:
    udc = udc_for(tmp_path, ingress, collection_interval=1, shutdown_timeout_seconds=10)
    config = parse_config({"user_data_collection": udc}, env={})
    zygote = await Zygote.start(tmp_path / "workers.log")
    pids = [
        await zygote.spawn({"udc": udc, "identity": f"worker-{i}", "batch": 7, "mode": "loop"})
        for i in range(collectors)
    ]
    transcripts: dict[str, bytes] = {}
    feedback_posted = 0
    client: TestClient = TestClient(TestServer(create_app(config), host="127.0.0.1"))  # type: ignore[type-arg]
    await client.start_server()
    try:
        storage = storage_from(client.app)
        for round_ in range(30):
            for _ in range(5):
                cid = str(uuid.uuid4())
                await storage.set_conversation_owner(cid, owner=hash_user_id("alice"))
                body = {"conversation_id": cid, "user_question": f"q{round_}", "llm_response": "a", "sentiment": 1}
                resp = await client.post("/v1/feedback?user_id=alice", json=body)
                assert resp.status == 200
                feedback_posted += 1
            transcripts.update(await store_records(storage, 0, 5))  # type: ignore[arg-type]
            await asyncio.sleep(0.03)
        total = feedback_posted + len(transcripts)
        for _ in range(1500):
            if sum(1 for _ in arrivals(ingress)) >= total:
                break
            await asyncio.sleep(0.02)
    finally:
        await client.close()
        for pid in pids:
            os.kill(pid, signal.SIGTERM)
        statuses = [await zygote.wait(pid) for pid in pids]
        await zygote.stop()
    assert statuses == [0] * collectors, (tmp_path / "workers.log").read_text()

    names = [name for _, _, name, _ in arrivals(ingress)]
    assert len(names) == len(set(names)) == total  # every record, none twice
    got = {name: data for _, _, name, data in arrivals(ingress)}
    assert all(got[n] == d for n, d in transcripts.items())
    assert sum(1 for n in names if n.startswith("feedback/")) == feedback_posted
