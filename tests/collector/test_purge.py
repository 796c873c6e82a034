"""``lightspeed purge`` as a real process, while a collector ships the same store to the real
local ingress: nothing the purge deleted reaches the ingress after the purge returned, except
the records it named as already on their way."""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml
from lightspeed_storage_sqlite import SqliteStorage

from lightspeed.collector import Collector, IngressClient
from lightspeed.ingress import Fault
from lightspeed.records import ConversationTurn, hash_user_id
from lightspeed.storage import create_backend
from tests.collector.collector_support import Ingress, MakeCollectorConfig, feedback, received, transcript

ALICE, BOB = hash_user_id("alice"), hash_user_id("bob")


async def run_purge(config_file: Path, *args: str) -> tuple[int, str, str]:
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "lightspeed", "purge", "-c", str(config_file), *args,
        stdout=subprocess.PIPE, stderr=subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def store_section(tmp_path: Path, backend: str = "sqlite") -> dict[str, Any]:
    if backend == "filesystem":
        return {
            "feedback_storage": str(tmp_path / "data" / "feedback"),
            "transcripts_storage": str(tmp_path / "data" / "transcripts"),
            "storage": {"backend": "filesystem", "options": {"state_path": str(tmp_path / "state")}},
        }
    return {"storage": {"backend": "sqlite", "options": {"path": str(tmp_path / "store.sqlite3")}}}


def write_config(tmp_path: Path, backend: str = "sqlite") -> Path:
    path = tmp_path / "purge.yaml"
    section = {"feedback_enabled": True, "transcripts_enabled": True, **store_section(tmp_path, backend)}
    path.write_text(yaml.safe_dump({"user_data_collection": section}))
    return path


@pytest.mark.parametrize("backend", ["filesystem", "sqlite"])
async def test_a_purge_while_a_collector_runs_ships_nothing_deleted_after_it_returned(
    tmp_path: Path, ingress: Ingress, collector_config: MakeCollectorConfig, backend: str
) -> None:
    config = collector_config(store_section(tmp_path, backend))
    udc = config.user_data_collection
    storage = create_backend(udc)
    await storage.open()
    alice_names: set[str] = set()
    bob_names: set[str] = set()
    alice_conversations = [f"00000000-0000-4000-8000-00000000000{i}" for i in range(5)]
    for cid in alice_conversations:
        await storage.set_conversation_owner(cid, owner=ALICE)
        await storage.append_turn(cid, turn=ConversationTurn(query="q", response="r"))
    for i in range(120):  # interleaved, so every batch mixes both users
        stored = await storage.put(transcript(i, user=ALICE, conversation=alice_conversations[i % 5]))
        alice_names.add(stored.name)
        stored = await storage.put(transcript(i, user=BOB))
        bob_names.add(stored.name)
        if i % 4 == 0:
            fb = feedback(i)
            stored = await storage.put(
                type(fb)(user_id=ALICE, conversation_id=alice_conversations[i % 5], user_question="q", llm_response="r")
            )
            alice_names.add(stored.name)

    ingress.emulator.add_fault(Fault(delay=0.02, repeat=True))  # slow uploads: the purge lands mid-cycle
    stop = asyncio.Event()
    async with aiohttp.ClientSession() as session:
        collector = Collector(
            storage=storage,
            collection=udc,
            uploader=IngressClient(session=session, config=udc.data_collector),
            batch_records=6,
            first_batch_records=6,
        )

        async def collect() -> None:
            while not stop.is_set():
                await collector.run_once()
                await asyncio.sleep(0.01)

        task = asyncio.ensure_future(collect())
        try:
            for _ in range(3000):  # a few batches have shipped: the purge lands mid-cycle
                if len(ingress.emulator.uploads) >= 3:
                    break
                await asyncio.sleep(0.01)
            code, out, err = await run_purge(write_config(tmp_path, backend), "--user-id", "alice", "--json")
            uploads_before_return = len(ingress.emulator.uploads)
            assert code == 0, err
            report = json.loads(out)
            for _ in range(1000):
                if sum((await storage.pending_stats()).records.values()) == 0:
                    break
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            with contextlib.suppress(asyncio.CancelledError):
                await task

    in_flight = set(report["in_flight"])
    assert in_flight <= alice_names
    assert report["conversations"] == 5 and report["turns"] == 5
    purged = report["transcripts"] + report["feedback"]
    assert purged > len(in_flight)  # it removed records no collector had claimed yet

    after = received(ingress.emulator.store, ingress.emulator.uploads[uploads_before_return:])
    leaked = (set(after) & alice_names) - in_flight
    assert leaked == set(), "deleted records reached the ingress after the purge returned"
    everything = received(ingress.emulator.store, ingress.emulator.uploads)
    assert bob_names <= set(everything), "the other user's records were all shipped"
    before = received(ingress.emulator.store, ingress.emulator.uploads[:uploads_before_return])
    assert len(set(before) & alice_names) + purged >= len(alice_names)  # each was shipped or purged
    assert (await storage.list_conversations(ALICE)).total == 0
    await storage.aclose()


async def test_purge_reports_and_refuses_bad_arguments(tmp_path: Path) -> None:
    config_file = write_config(tmp_path)
    options = store_section(tmp_path)["storage"]["options"]
    from lightspeed.testing import collection_config

    storage = SqliteStorage(options=options, collection=collection_config(tmp_path, backend="sqlite"))
    async with storage:
        cid = "11111111-2222-4333-8444-555555555555"
        await storage.set_conversation_owner(cid, owner=BOB)
        await storage.append_turn(cid, turn=ConversationTurn(query="q", response="r"))
        await storage.put(transcript(1, user=BOB, conversation=cid))
    code, out, _ = await run_purge(config_file, "--conversation-id", cid.upper())
    assert code == 0
    assert out.splitlines() == [
        f"purged conversation {cid}: 1 conversation(s), 1 history turn(s), 1 transcript(s), 0 feedback record(s)",
        "none of them had been claimed by a collector: none will reach the ingress",
    ]
    code, out, _ = await run_purge(config_file, "--user-hash", BOB, "--json")
    assert code == 0 and json.loads(out)["transcripts"] == 0
    for bad in (["--conversation-id", "nope"], ["--user-hash", "ABC"], ["--user-id", ""]):
        code, _, err = await run_purge(config_file, *bad)
        assert code == 2 and "lightspeed purge: error:" in err
    code, _, err = await run_purge(config_file)
    assert code == 2 and "one of the arguments" in err


async def test_purge_with_a_state_directory_under_a_file_says_so_and_purges_nothing(tmp_path: Path) -> None:
    section = store_section(tmp_path, "filesystem")
    (tmp_path / "state").write_bytes(b"")  # a regular file where the state directory belongs
    config_file = tmp_path / "purge.yaml"
    config_file.write_text(yaml.safe_dump({"user_data_collection": {"transcripts_enabled": True, **section}}))
    code, out, err = await run_purge(config_file, "--user-id", "alice")
    assert (code, out) == (1, "")
    cause = f"state_path {tmp_path / 'state'} cannot be written: Not a directory (ENOTDIR)"
    assert f"lightspeed purge: error: nothing was purged: {cause}" in err, err
    assert "Traceback" not in err
