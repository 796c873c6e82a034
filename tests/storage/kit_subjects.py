"""Backends with one deliberate bug each, run through the conformance kit by
``test_kit_catches_bugs.py`` in a pytest subprocess (this file is not collected on its own).

Each is the skeleton's in-memory backend with one promise broken. Two instances in this
process share a store, which is all the kit's cross-instance tests need, so the kit
classes here turn ``supports_multiple_processes`` on.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from lightspeed.records import FeedbackRecord, RecordKind
from lightspeed.storage import Claim, StorageBackend, StorageUnavailable, StoredRecord
from lightspeed.testing import StorageConformanceTests, collection_config

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples" / "storage_plugin_skeleton" / "src"))

from lightspeed_storage_memory import MemoryStorage


class NonAtomicClaim(MemoryStorage):
    """Reads the claimable records, yields to the loop, then marks them: two claims can take one record."""

    async def claim(
        self, *, owner: str, kinds: Collection[RecordKind], max_records: int, max_bytes: int, lease_seconds: float
    ) -> Claim:
        now = time.time()
        chosen = self._pick(kinds, max_records, max_bytes, now)
        await asyncio.sleep(0)
        return self._hold(chosen, owner=owner, lease_seconds=lease_seconds, now=now)


class AckDoesNotDelete(MemoryStorage):
    """ack(delete=True) only gives the records back."""

    async def ack(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None, delete: bool) -> None:
        if delete:
            await self.release(claim, records=records)
        else:
            await super().ack(claim, records=records, delete=False)


class ExportedComeBack(MemoryStorage):
    """ack(delete=False) forgets to mark the records exported."""

    async def ack(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None, delete: bool) -> None:
        if delete:
            await super().ack(claim, records=records, delete=True)
        else:
            await self.release(claim, records=records)


class EternalLease(MemoryStorage):
    """Leases never expire: a dead collector's records are never collected."""

    async def claim(
        self, *, owner: str, kinds: Collection[RecordKind], max_records: int, max_bytes: int, lease_seconds: float
    ) -> Claim:
        return await super().claim(
            owner=owner, kinds=kinds, max_records=max_records, max_bytes=max_bytes, lease_seconds=10**9
        )


class AckIgnoresTakeover(MemoryStorage):
    """ack never raises ClaimLost, even for records another claim has taken over."""

    def _check_not_lost(self, claim: Claim, entries: Sequence[object], now: float) -> None:
        return None


class LossyRecords(MemoryStorage):
    """Stores the JSON re-encoded (ASCII escapes, no indentation): the bytes change."""

    async def read_record(self, record: StoredRecord) -> bytes:
        data = await super().read_record(record)
        return json.dumps(json.loads(data)).encode()


class LastOwnerWins(MemoryStorage):
    """set_conversation_owner overwrites: a conversation can change hands."""

    async def set_conversation_owner(self, conversation_id: str, *, owner: str) -> str:
        self._live().owners[conversation_id] = owner
        return owner


class RacyFlag(MemoryStorage):
    """set_flag reads, yields to the loop, then writes: concurrent swaps lose an update."""

    async def set_flag(self, name: str, *, value: bool) -> bool | None:
        previous = self._live().flags.get(name)
        await asyncio.sleep(0)
        self._live().flags[name] = value
        return previous


class NewestFirst(MemoryStorage):
    """Claims the newest records first."""

    def _pick(self, kinds: Collection[RecordKind], max_records: int, max_bytes: int, now: float) -> list:  # type: ignore[type-arg]
        store = self._live()
        store.records = dict(reversed(store.records.items()))
        try:
            return super()._pick(kinds, max_records, max_bytes, now)
        finally:
            store.records = dict(reversed(store.records.items()))


def _resolve(fut: asyncio.Future[None]) -> None:
    if not fut.done():
        fut.set_result(None)


class FailsPendingWritesOnClose(MemoryStorage):
    """Writes wait a turn of the loop (as behind a writer queue); aclose fails every write still
    waiting with StorageUnavailable instead of finishing it."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self._waiting: set[asyncio.Future[None]] = set()

    async def put_feedback(self, record: FeedbackRecord) -> StoredRecord:
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiting.add(fut)
        asyncio.get_running_loop().call_soon(_resolve, fut)
        try:
            await fut
        finally:
            self._waiting.discard(fut)
        return await super().put_feedback(record)

    async def aclose(self) -> None:
        for fut in self._waiting:
            if not fut.done():
                fut.set_exception(StorageUnavailable("closed with writes pending"))
        await super().aclose()


class WrongNotFoundError(MemoryStorage):
    """Raises KeyError instead of RecordNotFound."""

    async def read_record(self, record: StoredRecord) -> bytes:
        store = self._live()
        return store.records[record.name].data


def _kit_for(cls: type[MemoryStorage]) -> type[StorageConformanceTests]:
    class Kit(StorageConformanceTests):
        supports_multiple_processes = True
        min_lease_seconds = 0.05

        async def make_backend(self, tmp_path: Path) -> StorageBackend:
            return cls(options={"store": str(tmp_path)}, collection=collection_config(tmp_path, backend="memory"))

    Kit.__name__ = Kit.__qualname__ = f"Test{cls.__name__}"
    return Kit


class TestSingleProcessMemory(StorageConformanceTests):
    """The correct skeleton with its own flags: the cross-instance tests skip, naming the flag."""

    min_lease_seconds = 0.05

    async def make_backend(self, tmp_path: Path) -> StorageBackend:
        return MemoryStorage(options={"store": str(tmp_path)}, collection=collection_config(tmp_path, backend="memory"))


TestMemoryStorage = _kit_for(MemoryStorage)
TestNonAtomicClaim = _kit_for(NonAtomicClaim)
TestAckDoesNotDelete = _kit_for(AckDoesNotDelete)
TestExportedComeBack = _kit_for(ExportedComeBack)
TestEternalLease = _kit_for(EternalLease)
TestAckIgnoresTakeover = _kit_for(AckIgnoresTakeover)
TestLossyRecords = _kit_for(LossyRecords)
TestLastOwnerWins = _kit_for(LastOwnerWins)
TestRacyFlag = _kit_for(RacyFlag)
TestNewestFirst = _kit_for(NewestFirst)
TestWrongNotFoundError = _kit_for(WrongNotFoundError)
TestFailsPendingWritesOnClose = _kit_for(FailsPendingWritesOnClose)
