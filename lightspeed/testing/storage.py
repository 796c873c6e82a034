"""The storage conformance kit: every promise of :mod:`lightspeed.storage.base` as a test.

A backend's tests subclass :class:`StorageConformanceTests` (or only the feature mixins
they want) in a class whose name starts with ``Test``, and override one method::

    class TestMyStorage(StorageConformanceTests):
        min_lease_seconds = 0.2

        async def make_backend(self, tmp_path: Path) -> StorageBackend:
            return MyStorage(options={...}, collection=collection_config(tmp_path))

``make_backend`` returns an *unopened* backend on the store that ``tmp_path`` names: two
calls with the same ``tmp_path`` must give two instances sharing one store (the
cross-instance claim tests rely on it), different ``tmp_path`` values separate stores.
Override ``make_second_backend`` when the second instance needs other arguments. The kit
opens and closes the backends itself (its fixtures are ``backend`` and
``second_backend``), so a plugin never writes an async fixture, and every test is marked
``asyncio`` explicitly, so the kit runs whatever ``asyncio_mode`` the plugin uses.

Capability flags (class attributes) turn tests off; a skipped test names its flag:

``supports_multiple_processes``
    several instances may share one store (default: the backend class's own flag).
``persistent``
    records and flags survive closing the backend and opening a new one on the store.
``min_lease_seconds``
    the shortest lease the backend honours; the lease tests sleep about 1.5 times it.

No class here starts with ``Test``, so pytest never collects the kit on its own.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from pathlib import Path
from typing import Any, ClassVar

import pytest
import pytest_asyncio

from lightspeed.config import StorageConfig, UserDataCollectionConfig
from lightspeed.records import (
    ConversationTurn,
    FeedbackRecord,
    RecordKind,
    Transcript,
    TranscriptMetadata,
    hash_user_id,
    new_record_id,
)
from lightspeed.storage import (
    Claim,
    ClaimLost,
    Deletion,
    RecordNotFound,
    StorageBackend,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
    StoredRecord,
    StreamInterrupt,
)

__all__ = [
    "AckReleaseTests",
    "ClaimTests",
    "ConversationAdminTests",
    "ConversationTests",
    "ErrorContractTests",
    "FlagTests",
    "HistoryTests",
    "LeaseExpiryTests",
    "LifecycleTests",
    "StorageConformanceTests",
    "StreamRegistryTests",
    "WriteTests",
    "collection_config",
    "make_feedback",
    "make_transcript",
]

ALL_KINDS: tuple[RecordKind, ...] = tuple(RecordKind)
USER = hash_user_id("conformance-kit-user")
OTHER_USER = hash_user_id("conformance-kit-other-user")
#: Text that catches lossy encodings: non-ASCII, astral-plane, a line separator, quotes, a NUL.
AWKWARD_TEXT = 'Qu\'est-ce que «OpenShift» ? 日本語 🚀 \u2028 "quoted" \\ back\\slash \x00 end'
BIG = 10**12


def collection_config(
    tmp_path: Path, *, backend: str = "filesystem", options: dict[str, Any] | None = None
) -> UserDataCollectionConfig:
    """A ``user_data_collection`` section with both kinds enabled and roots under ``tmp_path``."""
    return UserDataCollectionConfig(
        feedback_enabled=True,
        feedback_storage=str(tmp_path / "feedback"),
        transcripts_enabled=True,
        transcripts_storage=str(tmp_path / "transcripts"),
        storage=StorageConfig(backend=backend, options=dict(options or {})),
    )


def make_feedback(**overrides: Any) -> FeedbackRecord:
    """A valid feedback record with a fresh id; ``overrides`` replace any field."""
    fields: dict[str, Any] = {
        "user_id": USER,
        "conversation_id": new_record_id(),
        "user_question": "How do I scale a deployment?",
        "llm_response": "Use `oc scale deployment/web --replicas=3`.",
        "sentiment": 1,
        "user_feedback": "Helpful",
        "categories": ("helpful",),
    }
    fields.update(overrides)
    return FeedbackRecord(**fields)


def make_transcript(*, user: str = USER, conversation_id: str | None = None, **overrides: Any) -> Transcript:
    """A valid transcript with a fresh id; ``overrides`` replace any top-level field."""
    cid = conversation_id or new_record_id()
    fields: dict[str, Any] = {
        "metadata": TranscriptMetadata(
            provider="openai", model="gpt-4o", query_provider=None, query_model=None, user_id=user, conversation_id=cid
        ),
        "redacted_query": "What is a pod?",
        "llm_response": "The smallest deployable unit.",
        "rag_chunks": ({"content": "chunk", "source": "docs"},),
        "attachments": ({"attachment_type": "log", "content_type": "text/plain", "content": "line 1"},),
    }
    fields.update(overrides)
    return Transcript(**fields)


def _names(records: Sequence[StoredRecord]) -> list[str]:
    return [r.name for r in records]


class _Kit:
    """What every mixin shares: the override points, the flags and the fixtures."""

    pytestmark = pytest.mark.asyncio

    #: Several instances (in several processes) may share one store. ``None``: the backend class's flag.
    supports_multiple_processes: ClassVar[bool | None] = None
    #: Records and flags survive closing the backend and opening another on the same store.
    persistent: ClassVar[bool] = True
    #: The shortest lease, in seconds, that the backend honours.
    min_lease_seconds: ClassVar[float] = 1.0

    async def make_backend(self, tmp_path: Path) -> StorageBackend:
        """Return an unopened backend on the store named by ``tmp_path``. Override this."""
        raise NotImplementedError(f"{type(self).__name__} must override make_backend(self, tmp_path)")

    async def make_second_backend(self, tmp_path: Path) -> StorageBackend:
        """Return a second unopened backend on the same store; by default ``make_backend`` again."""
        return await self.make_backend(tmp_path)

    async def make_unreachable_backend(self, tmp_path: Path) -> StorageBackend | None:
        """Optionally return an unopened backend whose store cannot be reached (a database
        nobody listens for, a directory where a file stands); ``None`` skips that test."""
        return None

    async def make_reachable(self, tmp_path: Path) -> bool:
        """Optionally make the store of :meth:`make_unreachable_backend` reachable again (remove
        the file, start the server) and return ``True``; ``False`` (the default) skips the test
        that the same instance then works without a restart."""
        return False

    def require(self, flag: str) -> None:
        """Skip the running test unless the capability flag ``flag`` is true, naming it."""
        if not getattr(self, flag):
            pytest.skip(f"{type(self).__name__}.{flag} is false")

    def _multi_process_flag(self, backend: StorageBackend) -> None:
        if self.supports_multiple_processes is None:
            if not type(backend).supports_multiple_processes:
                pytest.skip(f"{type(backend).__name__}.supports_multiple_processes is false")
            return
        self.require("supports_multiple_processes")

    @pytest_asyncio.fixture(loop_scope="function")
    async def backend(self, tmp_path: Path) -> AsyncIterator[StorageBackend]:
        """The backend of ``make_backend``, opened, closed after the test."""
        instance = await self.make_backend(tmp_path)
        await instance.open()
        try:
            yield instance
        finally:
            await instance.aclose()

    @pytest_asyncio.fixture(loop_scope="function")
    async def second_backend(self, backend: StorageBackend, tmp_path: Path) -> AsyncIterator[StorageBackend]:
        """A second instance on the same store as ``backend``; skips unless ``supports_multiple_processes``."""
        self._multi_process_flag(backend)
        instance = await self.make_second_backend(tmp_path)
        await instance.open()
        try:
            yield instance
        finally:
            await instance.aclose()

    async def reopened(self, backend: StorageBackend, tmp_path: Path) -> StorageBackend:
        """Close ``backend`` and open a new instance on its store (for the persistence tests)."""
        self.require("persistent")
        await backend.aclose()
        fresh = await self.make_backend(tmp_path)
        await fresh.open()
        return fresh

    async def claim_all(
        self, backend: StorageBackend, *, kinds: Sequence[RecordKind] = ALL_KINDS, lease: float = 60, **kw: Any
    ) -> Claim:
        kw.setdefault("max_records", 10_000)
        kw.setdefault("max_bytes", BIG)
        return await backend.claim(owner="kit", kinds=kinds, lease_seconds=lease, **kw)

    async def expire(self) -> None:
        """Sleep until a lease of ``min_lease_seconds`` taken before the call has expired."""
        await asyncio.sleep(self.min_lease_seconds * 1.5 + 0.05)


class WriteTests(_Kit):
    """Records are stored whole and read back byte for byte."""

    async def test_feedback_round_trips_exactly(self, backend: StorageBackend) -> None:
        record = make_feedback(user_question=AWKWARD_TEXT, user_feedback=AWKWARD_TEXT, categories=None)
        stored = await backend.put_feedback(record)
        data = record.to_json()
        assert stored == StoredRecord(
            kind=RecordKind.FEEDBACK,
            record_id=record.record_id,
            name=f"feedback/{record.record_id}.json",
            size=len(data),
        )
        assert await backend.read_record(stored) == data
        claim = await self.claim_all(backend)
        assert claim.records == (stored,)
        assert await backend.read_record(claim.records[0]) == data

    async def test_transcript_round_trips_exactly(self, backend: StorageBackend) -> None:
        record = make_transcript(redacted_query=AWKWARD_TEXT, llm_response=AWKWARD_TEXT, truncated=True)
        stored = await backend.put_transcript(record)
        data = record.to_json()
        name = f"transcripts/{record.user_id}/{record.conversation_id}/{record.record_id}.json"
        assert stored == StoredRecord(kind=RecordKind.TRANSCRIPT, record_id=record.record_id, name=name, size=len(data))
        claim = await self.claim_all(backend)
        assert claim.records == (stored,)
        assert await backend.read_record(claim.records[0]) == data

    async def test_read_many_reads_a_batch_in_order(self, backend: StorageBackend) -> None:
        records: list[FeedbackRecord | Transcript] = [
            make_feedback(user_feedback=AWKWARD_TEXT),
            make_transcript(),
            make_feedback(),
        ]
        stored = [await backend.put(r) for r in records]
        claim = await self.claim_all(backend)
        await backend.ack(claim, records=[r for r in claim.records if r.name == stored[0].name], delete=True)
        rid = new_record_id()
        ghost = StoredRecord(kind=RecordKind.FEEDBACK, record_id=rid, name=f"feedback/{rid}.json", size=1)
        got = await backend.read_many([stored[2], ghost, stored[0], stored[1]])
        assert got == [records[2].to_json(), None, None, records[1].to_json()]
        assert await backend.read_many([]) == []

    async def test_put_stores_either_kind(self, backend: StorageBackend) -> None:
        feedback, transcript = make_feedback(), make_transcript()
        assert (await backend.put(feedback)).kind is RecordKind.FEEDBACK
        assert (await backend.put(transcript)).kind is RecordKind.TRANSCRIPT
        claim = await self.claim_all(backend)
        assert sorted(r.record_id for r in claim.records) == sorted([feedback.record_id, transcript.record_id])

    async def test_putting_the_same_record_twice_stores_it_once(self, backend: StorageBackend) -> None:
        record = make_feedback()
        first = await backend.put_feedback(record)
        second = await backend.put_feedback(record)
        assert first == second
        stats = await backend.pending_stats()
        assert stats.records.get(RecordKind.FEEDBACK, 0) == 1
        assert _names((await self.claim_all(backend)).records) == [first.name]

    async def test_pending_stats_count_records_and_bytes_per_kind(self, backend: StorageBackend) -> None:
        empty = await backend.pending_stats()
        assert all(empty.records.get(k, 0) == 0 and empty.bytes.get(k, 0) == 0 for k in RecordKind)
        feedback = [await backend.put_feedback(make_feedback()) for _ in range(3)]
        transcript = await backend.put_transcript(make_transcript())
        stats = await backend.pending_stats()
        assert stats.records.get(RecordKind.FEEDBACK) == 3
        assert stats.bytes.get(RecordKind.FEEDBACK) == sum(r.size for r in feedback)
        assert stats.records.get(RecordKind.TRANSCRIPT) == 1
        assert stats.bytes.get(RecordKind.TRANSCRIPT) == transcript.size
        # Claimed records are still pending.
        await self.claim_all(backend)
        assert (await backend.pending_stats()).records.get(RecordKind.FEEDBACK) == 3

    async def test_concurrent_puts_are_all_stored_whole(self, backend: StorageBackend) -> None:
        records: list[FeedbackRecord | Transcript] = [
            make_feedback(user_feedback=f"{i} " + "x" * (i * 37)) for i in range(40)
        ]
        records += [make_transcript(llm_response="y" * (i * 53)) for i in range(10)]
        await asyncio.gather(*(backend.put(r) for r in records))
        claim = await self.claim_all(backend)
        assert len(claim.records) == len(records)
        by_id = {r.record_id: r for r in records}
        for stored in claim.records:
            assert await backend.read_record(stored) == by_id[stored.record_id].to_json()


class ConversationTests(_Kit):
    """Conversation ownership: insert-if-absent, never changed, shared by every instance."""

    async def test_unknown_conversation_has_no_owner(self, backend: StorageBackend) -> None:
        assert await backend.get_conversation_owner(new_record_id()) is None

    async def test_first_owner_wins_for_good(self, backend: StorageBackend) -> None:
        cid = new_record_id()
        assert await backend.set_conversation_owner(cid, owner=USER) == USER
        assert await backend.set_conversation_owner(cid, owner=OTHER_USER) == USER
        assert await backend.set_conversation_owner(cid, owner=USER) == USER  # safe to retry
        assert await backend.get_conversation_owner(cid) == USER
        assert await backend.get_conversation_owner(new_record_id()) is None

    async def test_llama_stack_conversation_ids_are_accepted(self, backend: StorageBackend) -> None:
        cid = "conv_" + "0123456789abcdef" * 3
        assert await backend.set_conversation_owner(cid, owner=USER) == USER
        assert await backend.get_conversation_owner(cid) == USER

    async def test_concurrent_owners_on_one_instance_agree(self, backend: StorageBackend) -> None:
        cid = new_record_id()
        owners = [hash_user_id(f"user-{i}") for i in range(10)]
        results = await asyncio.gather(*(backend.set_conversation_owner(cid, owner=o) for o in owners))
        assert len(set(results)) == 1, f"several owners were recorded for one conversation: {set(results)}"
        assert results[0] in owners
        assert await backend.get_conversation_owner(cid) == results[0]

    async def test_concurrent_owners_on_two_instances_agree(
        self, backend: StorageBackend, second_backend: StorageBackend
    ) -> None:
        for _ in range(5):
            cid = new_record_id()
            results = await asyncio.gather(
                *(
                    b.set_conversation_owner(cid, owner=hash_user_id(f"user-{i}"))
                    for i, b in enumerate([backend, second_backend] * 4)
                )
            )
            assert len(set(results)) == 1, f"two instances recorded different owners: {set(results)}"
            assert await second_backend.get_conversation_owner(cid) == results[0]
            assert await backend.get_conversation_owner(cid) == results[0]


class HistoryTests(_Kit):
    """Conversation history: appended turns, read back oldest first, kept apart from records."""

    async def test_unknown_conversation_has_no_turns(self, backend: StorageBackend) -> None:
        assert await backend.get_turns(new_record_id(), limit=10) == []

    async def test_turns_come_back_oldest_first_limited_to_the_last(self, backend: StorageBackend) -> None:
        cid = new_record_id()
        turns = [
            ConversationTurn(query=f"q{i} {AWKWARD_TEXT}", response=f"r{i}", model="m", provider="p") for i in range(5)
        ]
        for turn in turns:
            await backend.append_turn(cid, turn=turn)
        assert await backend.get_turns(cid, limit=10) == turns
        assert await backend.get_turns(cid, limit=2) == turns[-2:]
        assert await backend.get_turns(new_record_id(), limit=10) == []

    async def test_every_turn_field_round_trips(self, backend: StorageBackend) -> None:
        cid = new_record_id()
        turn = ConversationTurn(query="", response=AWKWARD_TEXT, provider=None, model=None, truncated=True)
        await backend.append_turn(cid, turn=turn)
        assert await backend.get_turns(cid, limit=1) == [turn]

    async def test_concurrent_appends_are_all_kept(self, backend: StorageBackend) -> None:
        cid = new_record_id()
        turns = [ConversationTurn(query=f"q{i}", response="r" * i) for i in range(30)]
        await asyncio.gather(*(backend.append_turn(cid, turn=t) for t in turns))
        got = await backend.get_turns(cid, limit=100)
        assert sorted(got, key=lambda t: t.query) == sorted(turns, key=lambda t: t.query)

    async def test_appends_from_two_instances_are_all_kept(
        self, backend: StorageBackend, second_backend: StorageBackend
    ) -> None:
        cid = new_record_id()
        turns = [ConversationTurn(query=f"q{i}", response="r") for i in range(20)]
        await asyncio.gather(
            *(b.append_turn(cid, turn=t) for b, t in zip([backend, second_backend] * 10, turns, strict=True))
        )
        got = await second_backend.get_turns(cid, limit=100)
        assert sorted(t.query for t in got) == sorted(t.query for t in turns)

    async def test_history_is_not_collected_and_outlives_transcripts(self, backend: StorageBackend) -> None:
        cid = new_record_id()
        turn = ConversationTurn(query="q", response="r")
        await backend.append_turn(cid, turn=turn)
        assert (await self.claim_all(backend)).records == ()
        await backend.put_transcript(make_transcript(conversation_id=cid))
        claim = await self.claim_all(backend)
        assert len(claim.records) == 1
        await backend.ack(claim, delete=True)
        assert await backend.get_turns(cid, limit=5) == [turn]


class InteractionTests(_Kit):
    """``store_interaction``: what one answered query stores (owner, turn, transcript), in one call."""

    async def test_an_interaction_stores_the_owner_the_turn_and_the_transcript(self, backend: StorageBackend) -> None:
        cid = new_record_id()
        turn = ConversationTurn(query=f"q {AWKWARD_TEXT}", response="r", model="m", provider="p")
        transcript = make_transcript(conversation_id=cid)
        await backend.store_interaction(cid, turn=turn, transcript=transcript, owner=USER)
        assert await backend.get_conversation_owner(cid) == USER
        assert await backend.get_turns(cid, limit=5) == [turn]
        claim = await self.claim_all(backend)
        assert [r.record_id for r in claim.records] == [transcript.record_id]
        assert await backend.read_record(claim.records[0]) == transcript.to_json()

    async def test_an_interaction_keeps_the_recorded_owner(self, backend: StorageBackend) -> None:
        cid = new_record_id()
        await backend.set_conversation_owner(cid, owner=OTHER_USER)
        turns = [ConversationTurn(query=f"q{i}", response="r") for i in range(2)]
        await backend.store_interaction(cid, turn=turns[0], owner=USER)
        await backend.store_interaction(cid, turn=turns[1])  # a follow-up: no owner, no transcript
        assert await backend.get_conversation_owner(cid) == OTHER_USER
        assert await backend.get_turns(cid, limit=5) == turns
        assert (await self.claim_all(backend)).records == ()

    async def test_concurrent_interactions_are_all_stored(self, backend: StorageBackend) -> None:
        cids = [new_record_id() for _ in range(5)]
        transcripts = [make_transcript(conversation_id=cids[i % 5]) for i in range(20)]
        await asyncio.gather(
            *(
                backend.store_interaction(
                    t.conversation_id, turn=ConversationTurn(query=t.record_id, response="r"), transcript=t, owner=USER
                )
                for t in transcripts
            )
        )
        for cid in cids:
            assert await backend.get_conversation_owner(cid) == USER
            got = await backend.get_turns(cid, limit=10)
            assert sorted(t.query for t in got) == sorted(t.record_id for t in transcripts if t.conversation_id == cid)
        claim = await self.claim_all(backend)
        assert sorted(r.record_id for r in claim.records) == sorted(t.record_id for t in transcripts)


class FlagTests(_Kit):
    """Shared boolean flags: atomic swaps, visible to every instance, durable."""

    async def test_a_flag_never_set_is_none(self, backend: StorageBackend) -> None:
        assert await backend.get_flag("feedback_enabled") is None

    async def test_set_flag_returns_the_previous_value(self, backend: StorageBackend) -> None:
        assert await backend.set_flag("feedback_enabled", value=False) is None
        assert await backend.get_flag("feedback_enabled") is False
        assert await backend.set_flag("feedback_enabled", value=False) is False  # same value again: a no-op
        assert await backend.set_flag("feedback_enabled", value=True) is False
        assert await backend.get_flag("feedback_enabled") is True
        assert await backend.get_flag("some_other_flag") is None

    async def test_a_flag_set_by_one_instance_is_seen_by_another(
        self, backend: StorageBackend, second_backend: StorageBackend
    ) -> None:
        await backend.set_flag("feedback_enabled", value=False)
        assert await second_backend.get_flag("feedback_enabled") is False
        assert await second_backend.set_flag("feedback_enabled", value=True) is False
        assert await backend.get_flag("feedback_enabled") is True

    async def test_concurrent_swaps_lose_no_update(
        self, backend: StorageBackend, second_backend: StorageBackend
    ) -> None:
        for _ in range(5):
            await backend.set_flag("kit_race", value=False)
            prev_a, prev_b = await asyncio.gather(
                backend.set_flag("kit_race", value=True), second_backend.set_flag("kit_race", value=True)
            )
            # Exactly one swap saw the old value; the other saw the first one's.
            assert {prev_a, prev_b} == {False, True}, f"lost update: both swaps saw {prev_a, prev_b}"

    async def test_flags_survive_a_restart(self, backend: StorageBackend, tmp_path: Path) -> None:
        await backend.set_flag("feedback_enabled", value=False)
        fresh = await self.reopened(backend, tmp_path)
        try:
            assert await fresh.get_flag("feedback_enabled") is False
        finally:
            await fresh.aclose()


class ClaimTests(_Kit):
    """Claims: pending records, oldest first, within the limits, never in two live claims."""

    async def test_an_empty_store_gives_an_empty_claim(self, backend: StorageBackend) -> None:
        claim = await backend.claim(owner="me", kinds=ALL_KINDS, max_records=10, max_bytes=BIG, lease_seconds=30)
        assert claim.records == ()
        assert claim.owner == "me"
        assert claim.size == 0

    async def test_a_claim_holds_the_pending_records_with_a_lease(self, backend: StorageBackend) -> None:
        stored = [await backend.put_feedback(make_feedback()) for _ in range(3)]
        before = time.time()
        claim = await backend.claim(owner="me", kinds=ALL_KINDS, max_records=10, max_bytes=BIG, lease_seconds=30)
        after = time.time()
        assert sorted(_names(claim.records)) == sorted(_names(stored))
        assert claim.owner == "me"
        assert before + 30 - 2 <= claim.expires_at <= after + 30 + 2, "expires_at is not now + lease_seconds"
        other = await backend.claim(owner="me", kinds=ALL_KINDS, max_records=10, max_bytes=BIG, lease_seconds=30)
        assert other.claim_id != claim.claim_id
        assert other.records == (), "records of an unexpired claim were claimed again"

    async def test_oldest_records_are_claimed_first(self, backend: StorageBackend) -> None:
        # No pause between the writes: the order is the backend's (a sequence, or a timestamp
        # with a tie-break), never the luck of a clock that ticked in between.
        stored = [await backend.put_feedback(make_feedback()) for _ in range(8)]
        first = await self.claim_all(backend, max_records=3)
        assert _names(first.records) == _names(stored[:3]), "claims are not in the order the records were stored"
        second = await self.claim_all(backend, max_records=10)
        assert _names(second.records) == _names(stored[3:]), "claims are not in the order the records were stored"

    async def test_claim_order_holds_across_kinds(self, backend: StorageBackend) -> None:
        stored = []
        for i in range(6):
            record = make_feedback() if i % 2 else make_transcript()
            stored.append(await backend.put(record))
        claim = await self.claim_all(backend, max_records=10)
        assert _names(claim.records) == _names(stored), "records of both kinds are not claimed oldest first"

    async def test_max_records_and_max_bytes_bound_a_claim(self, backend: StorageBackend) -> None:
        stored = [await backend.put_feedback(make_feedback()) for _ in range(5)]
        claim = await self.claim_all(backend, max_records=3)
        assert len(claim.records) == 3
        await backend.release(claim)
        size = max(r.size for r in stored)
        assert all(r.size == size for r in stored)
        claim = await self.claim_all(backend, max_bytes=2 * size + size // 2)
        assert len(claim.records) == 2
        assert claim.size == 2 * size

    async def test_a_record_larger_than_max_bytes_comes_alone(self, backend: StorageBackend) -> None:
        big = await backend.put_feedback(make_feedback(user_feedback="x" * 5000))
        small = await backend.put_feedback(make_feedback())
        claim = await self.claim_all(backend, max_bytes=small.size + 10)
        assert _names(claim.records) == [big.name]
        rest = await self.claim_all(backend, max_bytes=small.size + 10)
        assert _names(rest.records) == [small.name]

    async def test_kinds_select_what_is_claimed(self, backend: StorageBackend) -> None:
        feedback = await backend.put_feedback(make_feedback())
        transcript = await backend.put_transcript(make_transcript())
        only_transcripts = await self.claim_all(backend, kinds=(RecordKind.TRANSCRIPT,))
        assert _names(only_transcripts.records) == [transcript.name]
        only_feedback = await self.claim_all(backend, kinds=(RecordKind.FEEDBACK,))
        assert _names(only_feedback.records) == [feedback.name]

    async def test_concurrent_claims_on_one_instance_never_overlap(self, backend: StorageBackend) -> None:
        stored = await asyncio.gather(*(backend.put_feedback(make_feedback()) for _ in range(30)))
        claims = await asyncio.gather(*(self.claim_all(backend, max_records=4) for _ in range(12)))
        self._assert_disjoint(claims)
        rest = await self.claim_all(backend)
        assert sorted(_names([r for c in [*claims, rest] for r in c.records])) == sorted(_names(stored))

    async def test_concurrent_claims_on_two_instances_never_overlap(
        self, backend: StorageBackend, second_backend: StorageBackend
    ) -> None:
        stored = await asyncio.gather(*(backend.put_feedback(make_feedback()) for _ in range(30)))
        instances = [backend, second_backend] * 6
        claims = await asyncio.gather(*(self.claim_all(b, max_records=4) for b in instances))
        self._assert_disjoint(claims)
        rest = await self.claim_all(second_backend)
        assert sorted(_names([r for c in [*claims, rest] for r in c.records])) == sorted(_names(stored))

    @staticmethod
    def _assert_disjoint(claims: Sequence[Claim]) -> None:
        seen: dict[str, str] = {}
        for claim in claims:
            for record in claim.records:
                assert record.name not in seen, (
                    f"{record.name} is in two live claims ({seen[record.name]} and {claim.claim_id}):"
                    " claims are not atomic"
                )
                seen[record.name] = claim.claim_id
        assert len({c.claim_id for c in claims}) == len(claims), "two claims got the same claim_id"


class LeaseExpiryTests(_Kit):
    """Leases: renewed on request, taken over after expiry, and then the old claim has lost them."""

    async def test_an_expired_lease_is_taken_over(self, backend: StorageBackend) -> None:
        stored = await backend.put_feedback(make_feedback())
        started = time.time()
        old = await self.claim_all(backend, lease=self.min_lease_seconds)
        assert _names(old.records) == [stored.name]
        early = await self.claim_all(backend)
        if time.time() - started < self.min_lease_seconds:  # else the machine was too slow to tell
            assert early.records == (), "a record was claimed while its lease ran"
        else:
            await backend.release(early)
        await self.expire()
        new = await self.claim_all(backend)
        assert _names(new.records) == [stored.name], "the record was not claimable after its lease expired"

        with pytest.raises(ClaimLost):
            await backend.renew(old, lease_seconds=60)
        with pytest.raises(ClaimLost):
            await backend.ack(old, delete=True)
        with pytest.raises(ClaimLost):
            await backend.set_aside(old, records=old.records, reason="too large")
        await backend.release(old)  # records held by another claim are skipped silently
        # None of that touched the record or the new claim.
        assert await backend.read_record(stored) == await backend.read_record(new.records[0])
        assert (await self.claim_all(backend)).records == (), "the old claim's release freed the new claim's record"
        await backend.ack(new, delete=True)
        assert (await backend.pending_stats()).records.get(RecordKind.FEEDBACK, 0) == 0

    async def test_an_expired_claim_nobody_took_can_still_ack(self, backend: StorageBackend) -> None:
        stored = await backend.put_feedback(make_feedback())
        claim = await self.claim_all(backend, lease=self.min_lease_seconds)
        await self.expire()
        await backend.ack(claim, delete=True)
        with pytest.raises(RecordNotFound):
            await backend.read_record(stored)

    async def test_renew_extends_the_lease(self, backend: StorageBackend) -> None:
        await backend.put_feedback(make_feedback())
        claim = await self.claim_all(backend, lease=self.min_lease_seconds)
        renewed = await backend.renew(claim, lease_seconds=60)
        assert renewed.claim_id == claim.claim_id
        assert renewed.records == claim.records
        assert renewed.expires_at >= claim.expires_at + 30
        await self.expire()
        assert (await self.claim_all(backend)).records == (), "a renewed lease was taken over"
        await backend.ack(renewed, delete=True)


class AckReleaseTests(_Kit):
    """Ack deletes or marks exported, release gives back, set-aside keeps apart; nothing delivered comes back."""

    async def test_ack_with_delete_removes_the_records(self, backend: StorageBackend) -> None:
        feedback = await backend.put_feedback(make_feedback())
        transcript = await backend.put_transcript(make_transcript())
        claim = await self.claim_all(backend)
        await backend.ack(claim, delete=True)
        for stored in (feedback, transcript):
            with pytest.raises(RecordNotFound):
                await backend.read_record(stored)
        stats = await backend.pending_stats()
        assert all(stats.records.get(k, 0) == 0 for k in RecordKind)
        assert (await self.claim_all(backend)).records == (), "a deleted record was claimed again"

    async def test_ack_without_delete_keeps_records_but_never_claims_them_again(self, backend: StorageBackend) -> None:
        record = make_feedback()
        stored = await backend.put_feedback(record)
        claim = await self.claim_all(backend)
        await backend.ack(claim, delete=False)
        assert await backend.read_record(stored) == record.to_json()
        assert (await self.claim_all(backend)).records == (), "an exported record was claimed again"
        assert (await backend.pending_stats()).records.get(RecordKind.FEEDBACK, 0) == 0

    async def test_exported_records_stay_exported_after_the_lease(self, backend: StorageBackend) -> None:
        await backend.put_feedback(make_feedback())
        claim = await self.claim_all(backend, lease=self.min_lease_seconds)
        await backend.ack(claim, delete=False)
        await self.expire()
        assert (await self.claim_all(backend)).records == (), "an exported record was claimed after the lease"

    async def test_ack_of_some_records_keeps_the_rest_claimed(self, backend: StorageBackend) -> None:
        stored = [await backend.put_feedback(make_feedback()) for _ in range(3)]
        claim = await self.claim_all(backend)
        acked = [r for r in claim.records if r.name == stored[0].name]
        await backend.ack(claim, records=acked, delete=True)
        assert (await self.claim_all(backend)).records == (), "the records left in the claim were claimed again"
        renewed = await backend.renew(claim, lease_seconds=60)
        assert sorted(_names(renewed.records)) == sorted(_names(stored[1:]))
        await backend.release(claim)
        again = await self.claim_all(backend)
        assert sorted(_names(again.records)) == sorted(_names(stored[1:]))

    async def test_released_records_are_not_acked_with_the_rest(self, backend: StorageBackend) -> None:
        stored = [await backend.put_feedback(make_feedback()) for _ in range(3)]
        claim = await self.claim_all(backend)
        given_back = [r for r in claim.records if r.name == stored[0].name]
        await backend.release(claim, records=given_back)
        await backend.ack(claim, delete=True)  # "all of them": the records still in the claim
        assert await backend.read_record(stored[0]), "a record released before the ack was deleted by it"
        again = await self.claim_all(backend)
        assert _names(again.records) == [stored[0].name]
        for gone in stored[1:]:
            with pytest.raises(RecordNotFound):
                await backend.read_record(gone)

    async def test_a_released_record_claimed_by_another_does_not_fail_the_ack(self, backend: StorageBackend) -> None:
        stored = [await backend.put_feedback(make_feedback()) for _ in range(2)]
        first = await self.claim_all(backend)
        await backend.release(first, records=[r for r in first.records if r.name == stored[0].name])
        second = await self.claim_all(backend)
        assert _names(second.records) == [stored[0].name]
        await backend.ack(first, delete=True)  # stored[0] left the first claim: not lost, not acked
        with pytest.raises(RecordNotFound):
            await backend.read_record(stored[1])
        assert await backend.read_record(stored[0])
        await backend.ack(second, delete=False)

    async def test_renewing_a_claim_without_records_is_harmless(self, backend: StorageBackend) -> None:
        empty = await self.claim_all(backend)
        assert empty.records == ()
        renewed = await backend.renew(empty, lease_seconds=30)
        assert renewed.records == ()
        await backend.release(empty)
        await backend.ack(empty, delete=True)

    async def test_ack_is_safe_to_retry(self, backend: StorageBackend) -> None:
        stored = await backend.put_feedback(make_feedback())
        claim = await self.claim_all(backend)
        await backend.ack(claim, delete=True)
        await backend.ack(claim, delete=True)
        with pytest.raises(RecordNotFound):
            await backend.read_record(stored)

    async def test_release_gives_records_back_untouched(self, backend: StorageBackend) -> None:
        record = make_transcript()
        stored = await backend.put_transcript(record)
        claim = await self.claim_all(backend)
        await backend.release(claim)
        await backend.release(claim)  # idempotent
        again = await self.claim_all(backend)
        assert again.records == (stored,)
        assert await backend.read_record(again.records[0]) == record.to_json()
        assert (await backend.pending_stats()).records.get(RecordKind.TRANSCRIPT) == 1

    async def test_release_of_some_records_keeps_the_rest_claimed(self, backend: StorageBackend) -> None:
        stored = [await backend.put_feedback(make_feedback()) for _ in range(3)]
        claim = await self.claim_all(backend)
        given_back = [r for r in claim.records if r.name == stored[1].name]
        await backend.release(claim, records=given_back)
        again = await self.claim_all(backend)
        assert _names(again.records) == [stored[1].name]

    async def test_set_aside_records_leave_the_pending_set_for_good(self, backend: StorageBackend) -> None:
        big = await backend.put_feedback(make_feedback(user_feedback="x" * 3000))
        small = await backend.put_feedback(make_feedback())
        claim = await self.claim_all(backend)
        await backend.set_aside(
            claim, records=[r for r in claim.records if r.name == big.name], reason="too large to upload"
        )
        stats = await backend.pending_stats()
        assert stats.records.get(RecordKind.FEEDBACK) == 1
        assert stats.bytes.get(RecordKind.FEEDBACK) == small.size
        await backend.release(claim)
        assert _names((await self.claim_all(backend)).records) == [small.name], "a set-aside record was claimed"


class ErrorContractTests(_Kit):
    """Failures raise the documented exception types of :mod:`lightspeed.storage.errors`."""

    async def test_reading_an_unknown_record_raises_record_not_found(self, backend: StorageBackend) -> None:
        rid = new_record_id()
        ghost = StoredRecord(kind=RecordKind.FEEDBACK, record_id=rid, name=f"feedback/{rid}.json", size=10)
        with pytest.raises(RecordNotFound):
            await backend.read_record(ghost)
        tid = new_record_id()
        name = f"transcripts/{USER}/{new_record_id()}/{tid}.json"
        with pytest.raises(RecordNotFound):
            await backend.read_record(StoredRecord(kind=RecordKind.TRANSCRIPT, record_id=tid, name=name, size=10))

    async def test_unknown_options_are_rejected_with_their_name(self, backend: StorageBackend) -> None:
        with pytest.raises(StorageConfigError) as info:
            type(backend)(options={**backend.raw_options, "no_such_option": 1}, collection=backend.collection)
        assert "no_such_option" in str(info.value)
        assert any("no_such_option" in p for p in info.value.problems)

    async def test_an_unreachable_store_raises_storage_unavailable(self, tmp_path: Path) -> None:
        """``open`` raises ``StorageUnavailable``, or opens anyway (a directory that may be
        created later) and then ``ping`` and writes raise it; a message either way."""
        unreachable = await self.make_unreachable_backend(tmp_path)
        if unreachable is None:
            pytest.skip(f"{type(self).__name__}.make_unreachable_backend returns None")
        try:
            try:
                await unreachable.open()
            except StorageUnavailable as exc:
                assert str(exc), "StorageUnavailable without a message for the operator"
                with pytest.raises(StorageError):
                    await unreachable.put_feedback(make_feedback())
                return
            with pytest.raises(StorageUnavailable) as info:
                await unreachable.ping()
            assert str(info.value), "StorageUnavailable without a message for the operator"
            with pytest.raises(StorageUnavailable):
                await unreachable.put_feedback(make_feedback())
        finally:
            await unreachable.aclose()

    async def test_an_unreachable_store_works_once_reachable_without_a_restart(self, tmp_path: Path) -> None:
        """When the store comes back, the same instance works: opened again after ``open``
        failed, or as it is after opening anyway."""
        unreachable = await self.make_unreachable_backend(tmp_path)
        if unreachable is None:
            pytest.skip(f"{type(self).__name__}.make_unreachable_backend returns None")
        try:
            opened = True
            try:
                await unreachable.open()
            except StorageUnavailable:
                opened = False
            if not await self.make_reachable(tmp_path):
                pytest.skip(f"{type(self).__name__}.make_reachable returns False")
            if not opened:
                await unreachable.open()
            await unreachable.ping()
            record = make_feedback()
            stored = await unreachable.put_feedback(record)
            assert await unreachable.read_record(stored) == record.to_json()
        finally:
            await unreachable.aclose()

    async def test_use_before_open_raises_a_storage_error(self, tmp_path: Path) -> None:
        unopened = await self.make_backend(tmp_path)
        try:
            with pytest.raises(StorageError):
                await unopened.put_feedback(make_feedback())
            with pytest.raises(StorageError):
                await unopened.ping()
        finally:
            await unopened.aclose()

    async def test_use_after_close_raises_a_storage_error(self, tmp_path: Path) -> None:
        closed = await self.make_backend(tmp_path)
        await closed.open()
        await closed.aclose()
        with pytest.raises(StorageError):
            await closed.put_feedback(make_feedback())
        with pytest.raises(StorageError):
            await closed.claim(owner="x", kinds=ALL_KINDS, max_records=1, max_bytes=BIG, lease_seconds=10)


def _turn(ts: str, *, model: str = "gpt-4o", provider: str = "openai", query: str = "q") -> ConversationTurn:
    return ConversationTurn(query=query, response="r", timestamp=ts, model=model, provider=provider)


class ConversationAdminTests(_Kit):
    """Listing, metadata, topic summaries, deletion and purges (the user's right to delete)."""

    async def _conversation(self, backend: StorageBackend, *, owner: str = USER, turns: Sequence[str] = ()) -> str:
        cid = new_record_id()
        await backend.set_conversation_owner(cid, owner=owner)
        for ts in turns:
            await backend.append_turn(cid, turn=_turn(ts))
        return cid

    async def test_an_owner_without_conversations_lists_nothing(self, backend: StorageBackend) -> None:
        page = await backend.list_conversations(USER)
        assert (page.conversations, page.total) == ((), 0)

    async def test_list_has_own_conversations_newest_first_with_metadata(self, backend: StorageBackend) -> None:
        old = await self._conversation(backend, turns=["2024-01-01T10:00:00.000000Z"])
        new = await self._conversation(backend, turns=["2024-01-01T09:00:00.000000Z", "2024-01-03T10:00:00.000000Z"])
        mid = await self._conversation(backend, turns=["2024-01-02T10:00:00.000000Z"])
        await self._conversation(backend, owner=OTHER_USER, turns=["2024-01-05T10:00:00.000000Z"])
        await backend.append_turn(new, turn=_turn("2024-01-04T10:00:00.000000Z", model="granite", provider="watsonx"))
        page = await backend.list_conversations(USER)
        assert [c.conversation_id for c in page.conversations] == [new, mid, old]
        assert page.total == 3
        info = page.conversations[0]
        assert info.owner == USER
        assert info.message_count == 3
        assert info.last_message_at == "2024-01-04T10:00:00.000000Z"
        assert (info.last_used_model, info.last_used_provider) == ("granite", "watsonx")
        assert info.created_at is not None and info.topic_summary is None

    async def test_a_conversation_without_turns_is_listed_by_creation(self, backend: StorageBackend) -> None:
        cid = await self._conversation(backend)
        (info,) = (await backend.list_conversations(USER)).conversations
        assert (info.conversation_id, info.message_count, info.last_message_at) == (cid, 0, None)
        assert info.last_used_model is None and info.created_at is not None

    async def test_paging_splits_the_list_without_gaps_or_repeats(self, backend: StorageBackend) -> None:
        ids = [await self._conversation(backend, turns=[f"2024-01-{d:02d}T00:00:00.000000Z"]) for d in range(1, 8)]
        expected = list(reversed(ids))
        seen: list[str] = []
        for offset in range(0, 8, 3):
            page = await backend.list_conversations(USER, limit=3, offset=offset)
            assert page.total == 7
            seen.extend(c.conversation_id for c in page.conversations)
        assert seen == expected
        beyond = await backend.list_conversations(USER, limit=3, offset=50)
        assert (beyond.conversations, beyond.total) == ((), 7)
        tail = await backend.list_conversations(USER, offset=5)
        assert [c.conversation_id for c in tail.conversations] == expected[5:]

    async def test_bad_paging_arguments_are_value_errors(self, backend: StorageBackend) -> None:
        with pytest.raises(ValueError):
            await backend.list_conversations(USER, limit=0)
        with pytest.raises(ValueError):
            await backend.list_conversations(USER, offset=-1)

    async def test_listing_every_owner(self, backend: StorageBackend) -> None:
        mine = await self._conversation(backend, turns=["2024-01-01T00:00:00.000000Z"])
        theirs = await self._conversation(backend, owner=OTHER_USER, turns=["2024-01-02T00:00:00.000000Z"])
        page = await backend.list_conversations(None)
        assert [(c.conversation_id, c.owner) for c in page.conversations] == [(theirs, OTHER_USER), (mine, USER)]

    async def test_get_conversation_gives_owner_and_metadata(self, backend: StorageBackend) -> None:
        assert await backend.get_conversation(new_record_id()) is None
        cid = await self._conversation(backend, turns=["2024-02-01T00:00:00.000000Z"])
        info = await backend.get_conversation(cid)
        assert info is not None
        assert (info.conversation_id, info.owner, info.message_count) == (cid, USER, 1)
        assert info.last_message_at == "2024-02-01T00:00:00.000000Z"

    async def test_topic_summary_is_set_cleared_and_listed(self, backend: StorageBackend) -> None:
        assert await backend.set_topic_summary(new_record_id(), topic_summary="x") is False
        cid = await self._conversation(backend)
        assert await backend.set_topic_summary(cid, topic_summary=AWKWARD_TEXT) is True
        info = await backend.get_conversation(cid)
        assert info is not None and info.topic_summary == AWKWARD_TEXT
        (listed,) = (await backend.list_conversations(USER)).conversations
        assert listed.topic_summary == AWKWARD_TEXT
        assert await backend.set_topic_summary(cid, topic_summary=None) is True
        info = await backend.get_conversation(cid)
        assert info is not None and info.topic_summary is None

    async def test_delete_forgets_the_conversation_and_its_records(self, backend: StorageBackend) -> None:
        cid = await self._conversation(backend, turns=["2024-01-01T00:00:00.000000Z"] * 2)
        keep = await self._conversation(backend, turns=["2024-01-01T00:00:00.000000Z"])
        doomed = [await backend.put_transcript(make_transcript(conversation_id=cid)) for _ in range(2)]
        doomed.append(await backend.put_feedback(make_feedback(conversation_id=cid)))
        kept = [
            await backend.put_transcript(make_transcript(conversation_id=keep)),
            await backend.put_feedback(make_feedback(conversation_id=keep)),
        ]
        deletion = await backend.delete_conversation(cid)
        assert (deletion.conversations, deletion.turns, deletion.transcripts, deletion.feedback) == (1, 2, 2, 1)
        assert deletion.in_flight == ()
        assert await backend.get_conversation_owner(cid) is None
        assert await backend.get_conversation(cid) is None
        assert await backend.get_turns(cid, limit=10) == []
        assert [c.conversation_id for c in (await backend.list_conversations(USER)).conversations] == [keep]
        assert await backend.read_many(doomed) == [None, None, None]
        claim = await self.claim_all(backend)
        assert sorted(_names(claim.records)) == sorted(_names(kept))
        stats = await backend.pending_stats()
        assert stats.records[RecordKind.TRANSCRIPT] == 1 and stats.records[RecordKind.FEEDBACK] == 1

    async def test_delete_without_records_keeps_them_pending(self, backend: StorageBackend) -> None:
        cid = await self._conversation(backend, turns=["2024-01-01T00:00:00.000000Z"])
        stored = await backend.put_transcript(make_transcript(conversation_id=cid))
        deletion = await backend.delete_conversation(cid, records=False)
        assert (deletion.conversations, deletion.turns, deletion.transcripts, deletion.feedback) == (1, 1, 0, 0)
        assert await backend.get_conversation_owner(cid) is None
        assert _names((await self.claim_all(backend)).records) == [stored.name]

    async def test_delete_of_an_unknown_conversation_still_removes_its_records(self, backend: StorageBackend) -> None:
        cid = new_record_id()
        await backend.put_transcript(make_transcript(conversation_id=cid))
        deletion = await backend.delete_conversation(cid)
        assert (deletion.conversations, deletion.turns, deletion.transcripts) == (0, 0, 1)
        assert (await self.claim_all(backend)).records == ()
        again = await backend.delete_conversation(cid)
        assert again == Deletion()

    async def test_exported_and_set_aside_copies_are_deleted_too(self, backend: StorageBackend) -> None:
        cid = await self._conversation(backend)
        exported = await backend.put_transcript(make_transcript(conversation_id=cid))
        aside = await backend.put_feedback(make_feedback(conversation_id=cid))
        claim = await self.claim_all(backend)
        await backend.ack(claim, records=[exported], delete=False)
        await backend.set_aside(claim, records=[aside], reason="too large")
        deletion = await backend.delete_conversation(cid)
        assert (deletion.transcripts, deletion.feedback, deletion.in_flight) == (1, 1, ())
        assert await backend.read_many([exported, aside]) == [None, None]

    async def test_records_claimed_when_deleted_are_named_in_flight_and_never_come_back(
        self, backend: StorageBackend
    ) -> None:
        cid = await self._conversation(backend)
        claimed = await backend.put_transcript(make_transcript(conversation_id=cid))
        claim = await self.claim_all(backend)
        assert claim.records == (claimed,)
        unclaimed = await backend.put_feedback(make_feedback(conversation_id=cid))
        deletion = await backend.delete_conversation(cid)
        assert deletion.in_flight == (claimed.name,)
        assert (deletion.transcripts, deletion.feedback) == (1, 1)
        assert await backend.read_many([claimed, unclaimed]) == [None, None]
        await backend.release(claim)  # the collector gives up: nothing is resurrected
        assert (await self.claim_all(backend)).records == ()
        await backend.ack(claim, delete=False)  # or it acks what it had: nothing breaks
        assert (await self.claim_all(backend)).records == ()

    async def test_a_claim_racing_a_delete_never_holds_an_unreported_record(self, backend: StorageBackend) -> None:
        for _ in range(10):
            cid = await self._conversation(backend)
            for _ in range(5):
                await backend.put_transcript(make_transcript(conversation_id=cid))
            claim, deletion = await asyncio.gather(self.claim_all(backend), backend.delete_conversation(cid))
            unreported = [r for r in claim.records if r.name not in deletion.in_flight]
            # A claim may still name them (from an older look at the store), but never read them.
            assert await backend.read_many(unreported) == [None] * len(unreported)
            assert deletion.transcripts == 5
            await backend.release(claim)
        assert (await self.claim_all(backend)).records == ()

    async def test_a_deleted_conversation_can_start_afresh(self, backend: StorageBackend) -> None:
        cid = await self._conversation(backend, turns=["2024-01-01T00:00:00.000000Z"])
        await backend.set_topic_summary(cid, topic_summary="old")
        await backend.delete_conversation(cid)
        assert await backend.set_conversation_owner(cid, owner=OTHER_USER) == OTHER_USER
        info = await backend.get_conversation(cid)
        assert info is not None
        assert (info.owner, info.message_count, info.topic_summary) == (OTHER_USER, 0, None)

    async def test_purge_user_removes_everything_of_that_user_only(self, backend: StorageBackend) -> None:
        first = await self._conversation(backend, turns=["2024-01-01T00:00:00.000000Z"])
        second = await self._conversation(backend)
        theirs = await self._conversation(backend, owner=OTHER_USER, turns=["2024-01-01T00:00:00.000000Z"])
        await backend.put_transcript(make_transcript(conversation_id=first))
        await backend.put_transcript(make_transcript(conversation_id=new_record_id()))  # a conversation never owned
        await backend.put_feedback(make_feedback(conversation_id=second))
        await backend.put_feedback(make_feedback(conversation_id=theirs))  # the user's feedback on another's
        kept = [
            await backend.put_transcript(make_transcript(user=OTHER_USER, conversation_id=theirs)),
            await backend.put_feedback(make_feedback(user_id=OTHER_USER, conversation_id=theirs)),
        ]
        deletion = await backend.purge_user(USER)
        assert (deletion.conversations, deletion.turns, deletion.transcripts, deletion.feedback) == (2, 1, 2, 2)
        assert (await backend.list_conversations(USER)).total == 0
        assert await backend.get_conversation_owner(theirs) == OTHER_USER
        assert len(await backend.get_turns(theirs, limit=5)) == 1
        assert sorted(_names((await self.claim_all(backend)).records)) == sorted(_names(kept))
        assert await backend.purge_user(USER) == Deletion()

    async def test_a_delete_on_one_instance_holds_for_another(
        self, backend: StorageBackend, second_backend: StorageBackend
    ) -> None:
        cid = await self._conversation(backend)
        stored = await backend.put_transcript(make_transcript(conversation_id=cid))
        claim = await self.claim_all(second_backend)
        assert claim.records == (stored,)
        deletion = await backend.delete_conversation(cid)
        assert deletion.in_flight == (stored.name,)
        assert await second_backend.get_conversation_owner(cid) is None
        await second_backend.release(claim)
        assert (await self.claim_all(second_backend)).records == ()


class StreamRegistryTests(_Kit):
    """Running streams and their interrupt markers, seen by every process sharing the store."""

    async def test_an_unknown_stream_is_not_found(self, backend: StorageBackend) -> None:
        assert await backend.interrupt_stream(new_record_id(), owner=USER) is StreamInterrupt.NOT_FOUND
        assert await backend.interrupted_streams([new_record_id()]) == set()

    async def test_only_the_owner_interrupts_and_only_once(self, backend: StorageBackend) -> None:
        rid, other = new_record_id(), new_record_id()
        await backend.register_stream(rid, owner=USER, ttl_seconds=60)
        await backend.register_stream(other, owner=USER, ttl_seconds=60)
        assert await backend.interrupt_stream(rid, owner=OTHER_USER) is StreamInterrupt.FORBIDDEN
        assert await backend.interrupted_streams([rid, other]) == set()
        assert await backend.interrupt_stream(rid, owner=USER) is StreamInterrupt.INTERRUPTED
        assert await backend.interrupted_streams([rid, other, new_record_id()]) == {rid}
        assert await backend.interrupt_stream(rid, owner=USER) is StreamInterrupt.ALREADY_DONE

    async def test_a_finished_stream_is_done_then_forgotten(self, backend: StorageBackend) -> None:
        rid = new_record_id()
        await backend.register_stream(rid, owner=USER, ttl_seconds=60)
        await backend.finish_stream(rid, keep_seconds=0.3)
        assert await backend.interrupt_stream(rid, owner=USER) is StreamInterrupt.ALREADY_DONE
        assert await backend.interrupt_stream(rid, owner=OTHER_USER) is StreamInterrupt.FORBIDDEN
        await asyncio.sleep(0.4)
        assert await backend.interrupt_stream(rid, owner=USER) is StreamInterrupt.NOT_FOUND
        await backend.finish_stream(new_record_id(), keep_seconds=1)  # unknown: ignored

    async def test_a_stream_past_its_ttl_is_forgotten(self, backend: StorageBackend) -> None:
        rid = new_record_id()
        assert await backend.register_stream(rid, owner=USER, ttl_seconds=0.2) is True
        await asyncio.sleep(0.3)
        assert await backend.interrupt_stream(rid, owner=USER) is StreamInterrupt.NOT_FOUND
        assert await backend.register_stream(rid, owner=OTHER_USER, ttl_seconds=60) is True  # free again
        assert await backend.interrupt_stream(rid, owner=USER) is StreamInterrupt.FORBIDDEN

    async def test_a_live_stream_is_never_taken_over(self, backend: StorageBackend) -> None:
        rid = new_record_id()
        assert await backend.register_stream(rid, owner=USER, ttl_seconds=60) is True
        assert await backend.register_stream(rid, owner=OTHER_USER, ttl_seconds=60) is False
        assert await backend.interrupt_stream(rid, owner=OTHER_USER) is StreamInterrupt.FORBIDDEN
        await backend.finish_stream(rid, keep_seconds=60)
        assert await backend.register_stream(rid, owner=OTHER_USER, ttl_seconds=60) is False
        assert await backend.interrupt_stream(rid, owner=USER) is StreamInterrupt.ALREADY_DONE

    async def test_concurrent_interrupts_interrupt_once(self, backend: StorageBackend) -> None:
        rid = new_record_id()
        await backend.register_stream(rid, owner=USER, ttl_seconds=60)
        outcomes = await asyncio.gather(*(backend.interrupt_stream(rid, owner=USER) for _ in range(8)))
        assert sorted(outcomes) == sorted([StreamInterrupt.INTERRUPTED] + [StreamInterrupt.ALREADY_DONE] * 7)

    async def test_a_stream_of_one_instance_is_interrupted_from_another(
        self, backend: StorageBackend, second_backend: StorageBackend
    ) -> None:
        rid = new_record_id()
        await backend.register_stream(rid, owner=USER, ttl_seconds=60)
        assert await second_backend.interrupt_stream(rid, owner=OTHER_USER) is StreamInterrupt.FORBIDDEN
        assert await second_backend.interrupt_stream(rid, owner=USER) is StreamInterrupt.INTERRUPTED
        assert await backend.interrupted_streams([rid]) == {rid}
        await backend.finish_stream(rid, keep_seconds=60)
        assert await second_backend.interrupt_stream(rid, owner=USER) is StreamInterrupt.ALREADY_DONE


class LifecycleTests(_Kit):
    """open, ping, aclose; what was written survives a restart."""

    async def test_ping_answers_when_open(self, backend: StorageBackend) -> None:
        await asyncio.wait_for(backend.ping(), 2)

    async def test_aclose_is_idempotent_and_async_with_works(self, tmp_path: Path) -> None:
        instance = await self.make_backend(tmp_path)
        async with instance as opened:
            assert opened is instance
            await opened.ping()
        await instance.aclose()

    async def test_records_survive_a_restart(self, backend: StorageBackend, tmp_path: Path) -> None:
        record = make_transcript()
        stored = await backend.put_transcript(record)
        cid = new_record_id()
        await backend.set_conversation_owner(cid, owner=USER)
        await backend.append_turn(cid, turn=ConversationTurn(query="q", response="r"))
        fresh = await self.reopened(backend, tmp_path)
        try:
            claim = await self.claim_all(fresh)
            assert claim.records == (stored,)
            assert await fresh.read_record(stored) == record.to_json()
            assert await fresh.get_conversation_owner(cid) == USER
            assert len(await fresh.get_turns(cid, limit=5)) == 1
        finally:
            await fresh.aclose()

    async def test_writes_accepted_before_aclose_complete(self, tmp_path: Path) -> None:
        instance = await self.make_backend(tmp_path)
        await instance.open()
        records = [make_feedback() for _ in range(25)]
        tasks = [asyncio.ensure_future(instance.put_feedback(r)) for r in records]
        await asyncio.sleep(0)  # every put has started (was accepted) before aclose is called
        await instance.aclose()
        results = await asyncio.gather(*tasks, return_exceptions=True)
        failed = [r for r in results if not isinstance(r, StoredRecord)]
        assert not failed, f"{len(failed)} write(s) accepted before aclose did not complete: {failed[0]!r}"
        written = {r.name for r in results if isinstance(r, StoredRecord)}
        if not self.persistent:
            return
        fresh = await self.make_backend(tmp_path)
        await fresh.open()
        try:
            claim = await self.claim_all(fresh)
            assert written <= set(_names(claim.records)), "a write that returned was lost by aclose"
        finally:
            await fresh.aclose()


class StorageConformanceTests(
    WriteTests,
    ConversationTests,
    HistoryTests,
    InteractionTests,
    ConversationAdminTests,
    StreamRegistryTests,
    FlagTests,
    ClaimTests,
    LeaseExpiryTests,
    AckReleaseTests,
    ErrorContractTests,
    LifecycleTests,
):
    """Every test of the kit. Subclass it in a class named ``Test...`` and override ``make_backend``."""
