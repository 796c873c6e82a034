"""An in-memory storage backend for lightspeed: the skeleton of a storage plugin.

Everything lives in this process's memory: records are lost when the process exits, and
several processes cannot share a store (``supports_multiple_processes = False``). Backend
instances in one process that name the same ``store`` share it, which is what a test or
a single-process development server needs.

Options (``user_data_collection.storage.options``) are declared once, as the attrs class
:class:`MemoryOptions`; the core structures and checks them (unknown keys, types, defaults):

``store``
    the name of the in-process store to use (default ``"default"``).

What every backend does alike (record names, id checks, claim arguments, filling a claim
up to its limits) comes from :mod:`lightspeed.storage`; a plugin calls those helpers.

Each method below is one promise of :class:`lightspeed.storage.StorageBackend`; the
conformance kit (:mod:`lightspeed.testing`) checks them all. Because every method runs
on the event loop without awaiting in the middle, each one is atomic by construction; a
backend that talks to a real store gets the same guarantee from transactions or locks.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Collection, Mapping, Sequence
from typing import Any

import attrs

from lightspeed.config import UserDataCollectionConfig
from lightspeed.records import ConversationTurn, FeedbackRecord, RecordKind, Transcript, utc_timestamp
from lightspeed.storage import (
    Claim,
    ClaimFill,
    ClaimLost,
    ConversationInfo,
    ConversationPage,
    Deletion,
    PendingStats,
    RecordNotFound,
    StorageBackend,
    StorageUnavailable,
    StoredRecord,
    StreamInterrupt,
    check_claim_args,
    check_conversation_id,
    check_flag_name,
    check_user_hash,
    stored_record,
)

__all__ = ["MemoryOptions", "MemoryStorage"]

__version__ = "0.1.0"
PENDING, EXPORTED, ASIDE = "pending", "exported", "aside"


@attrs.define
class _Entry:
    """One stored record and its collection state."""

    ref: StoredRecord
    data: bytes
    state: str = PENDING
    claim_id: str | None = None
    expires_at: float = 0.0
    reason: str | None = None

    def held_by_other(self, claim_id: str, now: float) -> bool:
        return self.claim_id is not None and self.claim_id != claim_id and self.expires_at > now


@attrs.define
class _Stream:
    """One registered stream: its owner, whether it ended or was interrupted, and when it is forgotten."""

    owner: str
    expires_at: float
    done: bool = False
    interrupted: bool = False


@attrs.define
class _Store:
    records: dict[str, _Entry] = attrs.Factory(dict)  # insertion order is age order
    owners: dict[str, str] = attrs.Factory(dict)
    #: conversation id -> (created_at, topic_summary)
    meta: dict[str, tuple[str, str | None]] = attrs.Factory(dict)
    streams: dict[str, _Stream] = attrs.Factory(dict)
    #: When expired streams were last forgotten (at most once a second, not once per stream).
    streams_swept: float = 0.0
    turns: dict[str, list[ConversationTurn]] = attrs.Factory(dict)
    flags: dict[str, bool] = attrs.Factory(dict)
    #: claim id -> names of the records still in that claim (released or settled ones leave it).
    members: dict[str, set[str]] = attrs.Factory(dict)


#: Every store of this process, by name.
_STORES: dict[str, _Store] = {}


@attrs.frozen(kw_only=True)
class MemoryOptions:
    """The options: each key, its type and its default, stated once."""

    #: The name of the in-process store to use.
    store: str = "default"


class MemoryStorage(StorageBackend):
    """Records, owners, turns and flags in this process's memory."""

    supports_multiple_processes = False
    Options = MemoryOptions

    def __init__(self, *, options: Mapping[str, Any], collection: UserDataCollectionConfig) -> None:
        super().__init__(options=options, collection=collection)  # structures and checks options
        self.options: MemoryOptions
        self.store_name = self.options.store
        self._store: _Store | None = None

    @classmethod
    def validate_options(cls, options: MemoryOptions, collection: UserDataCollectionConfig) -> list[str]:
        # Only what the types cannot say: the core has checked unknown keys and types already.
        return [] if options.store else ["store: must not be empty"]

    # ------------------------------------------------------------------ lifecycle

    def _live(self) -> _Store:
        if self._store is None:
            raise StorageUnavailable(f"the memory store {self.store_name!r} is not open (call open() first)")
        return self._store

    async def open(self) -> None:
        self._store = _STORES.setdefault(self.store_name, _Store())

    async def aclose(self) -> None:
        self._store = None

    async def ping(self) -> None:
        self._live()

    # ------------------------------------------------------------------ records

    def _put(self, ref: StoredRecord, data: bytes) -> StoredRecord:
        store = self._live()
        existing = store.records.get(ref.name)
        if existing is not None:  # the record id makes the write idempotent
            return existing.ref
        store.records[ref.name] = _Entry(ref=ref, data=data)
        return ref

    async def put_feedback(self, record: FeedbackRecord) -> StoredRecord:
        data = record.to_json()
        return self._put(stored_record(record, data), data)  # stored_record checks the ids

    async def put_transcript(self, record: Transcript) -> StoredRecord:
        data = record.to_json()
        return self._put(stored_record(record, data), data)

    # ------------------------------------------------------------------ conversations

    async def set_conversation_owner(self, conversation_id: str, *, owner: str) -> str:
        check_conversation_id(conversation_id)
        check_user_hash(owner)
        store = self._live()
        if conversation_id not in store.owners:
            store.meta[conversation_id] = (utc_timestamp(), None)
        return store.owners.setdefault(conversation_id, owner)

    async def get_conversation_owner(self, conversation_id: str) -> str | None:
        return self._live().owners.get(conversation_id)

    async def append_turn(self, conversation_id: str, *, turn: ConversationTurn) -> None:
        check_conversation_id(conversation_id)
        self._live().turns.setdefault(conversation_id, []).append(turn)

    async def get_turns(self, conversation_id: str, *, limit: int) -> list[ConversationTurn]:
        turns = self._live().turns.get(conversation_id, [])
        return list(turns[-limit:]) if limit > 0 else []

    def _info(self, conversation_id: str) -> ConversationInfo | None:
        store = self._live()
        owner = store.owners.get(conversation_id)
        if owner is None:
            return None
        created_at, topic_summary = store.meta.get(conversation_id, (None, None))
        turns = store.turns.get(conversation_id, [])
        last = turns[-1] if turns else None
        return ConversationInfo(
            conversation_id=conversation_id,
            owner=owner,
            created_at=created_at,
            last_message_at=last.timestamp if last else None,
            message_count=len(turns),
            last_used_model=last.model if last else None,
            last_used_provider=last.provider if last else None,
            topic_summary=topic_summary,
        )

    async def list_conversations(
        self, owner: str | None, *, limit: int | None = None, offset: int = 0
    ) -> ConversationPage:
        if (limit is not None and limit < 1) or offset < 0:
            raise ValueError(f"limit must be at least 1 and offset at least 0, got {limit!r} and {offset!r}")
        infos = [
            info
            for cid, who in self._live().owners.items()
            if (owner is None or who == owner) and (info := self._info(cid)) is not None
        ]
        infos.sort(key=lambda i: i.conversation_id)
        infos.sort(key=lambda i: i.last_message_at or i.created_at or "", reverse=True)
        end = None if limit is None else offset + limit
        return ConversationPage(conversations=tuple(infos[offset:end]), total=len(infos))

    async def get_conversation(self, conversation_id: str) -> ConversationInfo | None:
        return self._info(conversation_id)

    async def set_topic_summary(self, conversation_id: str, *, topic_summary: str | None) -> bool:
        store = self._live()
        if conversation_id not in store.owners:
            return False
        created_at, _ = store.meta.get(conversation_id, (utc_timestamp(), None))
        store.meta[conversation_id] = (created_at, topic_summary)
        return True

    def _forget(self, conversation_id: str) -> Deletion:
        store = self._live()
        known = store.owners.pop(conversation_id, None) is not None
        store.meta.pop(conversation_id, None)
        turns = store.turns.pop(conversation_id, [])
        return Deletion(conversations=int(known), turns=len(turns))

    def _delete_records(self, doomed: Sequence[_Entry]) -> Deletion:
        """Delete ``doomed``; those in an unexpired or unsettled claim are reported in flight."""
        store = self._live()
        claimed = set().union(*store.members.values()) if store.members else set()
        counts = {RecordKind.TRANSCRIPT: 0, RecordKind.FEEDBACK: 0}
        in_flight: list[str] = []
        for entry in doomed:
            del store.records[entry.ref.name]
            counts[entry.ref.kind] += 1
            if entry.state == PENDING and entry.ref.name in claimed:
                in_flight.append(entry.ref.name)
        for claim_id in list(store.members):
            self._leave(claim_id, {e.ref.name for e in doomed})
        return Deletion(
            transcripts=counts[RecordKind.TRANSCRIPT], feedback=counts[RecordKind.FEEDBACK], in_flight=tuple(in_flight)
        )

    def _record_fields(self, entry: _Entry) -> tuple[str, str]:
        """The (user hash, conversation id) a record belongs to."""
        if entry.ref.kind is RecordKind.TRANSCRIPT:
            _, user, conversation_id, _ = entry.ref.name.split("/")
            return user, conversation_id
        data = json.loads(entry.data)
        return str(data["user_id"]), str(data["conversation_id"])

    async def delete_conversation(self, conversation_id: str, *, records: bool = True) -> Deletion:
        deletion = self._forget(conversation_id)
        if records:
            doomed = [e for e in self._live().records.values() if self._record_fields(e)[1] == conversation_id]
            deletion += self._delete_records(doomed)
        return deletion

    async def purge_user(self, owner: str) -> Deletion:
        store = self._live()
        deletion = Deletion()
        for conversation_id in [cid for cid, who in store.owners.items() if who == owner]:
            deletion += self._forget(conversation_id)
        doomed = [e for e in store.records.values() if self._record_fields(e)[0] == owner]
        return deletion + self._delete_records(doomed)

    # ------------------------------------------------------------------ streams

    async def register_stream(self, request_id: str, *, owner: str, ttl_seconds: float) -> bool:
        store = self._live()
        streams = store.streams
        now = time.time()
        if now - store.streams_swept >= 1.0:
            store.streams_swept = now
            for rid in [rid for rid, s in streams.items() if s.expires_at <= now]:
                del streams[rid]
        held = streams.get(request_id)
        if held is not None and held.expires_at > now:
            return False
        streams[request_id] = _Stream(owner=owner, expires_at=now + ttl_seconds)
        return True

    async def interrupt_stream(self, request_id: str, *, owner: str) -> StreamInterrupt:
        stream = self._live().streams.get(request_id)
        if stream is None or stream.expires_at <= time.time():
            return StreamInterrupt.NOT_FOUND
        if stream.owner != owner:
            return StreamInterrupt.FORBIDDEN
        if stream.done or stream.interrupted:
            return StreamInterrupt.ALREADY_DONE
        stream.interrupted = True
        return StreamInterrupt.INTERRUPTED

    async def interrupted_streams(self, request_ids: Collection[str]) -> set[str]:
        streams = self._live().streams
        return {rid for rid in request_ids if (s := streams.get(rid)) is not None and s.interrupted}

    async def finish_stream(self, request_id: str, *, keep_seconds: float) -> None:
        stream = self._live().streams.get(request_id)
        if stream is not None:
            stream.done, stream.expires_at = True, time.time() + keep_seconds

    # ------------------------------------------------------------------ flags

    async def get_flag(self, name: str) -> bool | None:
        return self._live().flags.get(name)

    async def set_flag(self, name: str, *, value: bool) -> bool | None:
        check_flag_name(name)
        flags = self._live().flags
        previous = flags.get(name)
        flags[name] = value
        return previous

    # ------------------------------------------------------------------ collection

    def _pick(self, kinds: Collection[RecordKind], max_records: int, max_bytes: int, now: float) -> list[_Entry]:
        """The oldest claimable records within the limits (no side effects)."""
        fill = ClaimFill(max_records, max_bytes)  # the core's rule for what fits in one claim
        chosen: list[_Entry] = []
        for entry in self._live().records.values():
            if entry.state != PENDING or entry.ref.kind not in kinds or entry.held_by_other("", now):
                continue
            if not fill.offer(entry.ref):
                break
            chosen.append(entry)
            if fill.full:
                break
        return chosen

    def _hold(self, entries: Sequence[_Entry], *, owner: str, lease_seconds: float, now: float) -> Claim:
        claim_id = str(uuid.uuid4())
        expires_at = now + lease_seconds
        for entry in entries:
            entry.claim_id, entry.expires_at = claim_id, expires_at
        if entries:
            self._live().members[claim_id] = {e.ref.name for e in entries}
        return Claim(claim_id=claim_id, owner=owner, expires_at=expires_at, records=tuple(e.ref for e in entries))

    async def claim(
        self,
        *,
        owner: str,
        kinds: Collection[RecordKind],
        max_records: int,
        max_bytes: int,
        lease_seconds: float,
    ) -> Claim:
        check_claim_args(max_records=max_records, max_bytes=max_bytes, lease_seconds=lease_seconds)
        now = time.time()
        chosen = self._pick(kinds, max_records, max_bytes, now)
        return self._hold(chosen, owner=owner, lease_seconds=lease_seconds, now=now)

    async def read_record(self, record: StoredRecord) -> bytes:
        entry = self._live().records.get(record.name)
        if entry is None:
            raise RecordNotFound(f"record {record.name} does not exist (any more)")
        return entry.data

    def _in_claim(self, claim: Claim, records: Sequence[StoredRecord] | None) -> list[_Entry]:
        """The existing records among ``records`` (all of the claim's when ``None``) still in the claim."""
        store = self._live()
        members = store.members.get(claim.claim_id, set())
        chosen = claim.records if records is None else records
        return [store.records[r.name] for r in chosen if r.name in members and r.name in store.records]

    def _check_not_lost(self, claim: Claim, entries: Sequence[_Entry], now: float) -> None:
        lost = [e.ref.name for e in entries if e.held_by_other(claim.claim_id, now)]
        if lost:
            raise ClaimLost(
                f"claim {claim.claim_id}: {len(lost)} record(s) were taken over by another claim"
                f" after the lease expired (first: {lost[0]})"
            )

    def _leave(self, claim_id: str, names: Collection[str]) -> None:
        members = self._live().members
        left = members.get(claim_id, set()) - set(names)
        if left:
            members[claim_id] = left
        else:
            members.pop(claim_id, None)

    async def renew(self, claim: Claim, *, lease_seconds: float) -> Claim:
        now = time.time()
        entries = [e for e in self._in_claim(claim, None) if e.state == PENDING]
        self._check_not_lost(claim, entries, now)
        expires_at = now + lease_seconds
        for entry in entries:
            entry.claim_id, entry.expires_at = claim.claim_id, expires_at
        return attrs.evolve(claim, expires_at=expires_at, records=tuple(e.ref for e in entries))

    def _settle(self, claim: Claim, records: Sequence[StoredRecord] | None, *, state: str, reason: str | None) -> None:
        now = time.time()
        entries = self._in_claim(claim, records)
        self._check_not_lost(claim, entries, now)  # all or nothing
        store = self._live()
        for entry in entries:
            if state == "deleted":
                del store.records[entry.ref.name]
            else:
                entry.state, entry.claim_id, entry.reason = state, None, reason
        self._leave(claim.claim_id, [e.ref.name for e in entries])

    async def ack(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None, delete: bool) -> None:
        self._settle(claim, records, state="deleted" if delete else EXPORTED, reason=None)

    async def release(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None) -> None:
        entries = self._in_claim(claim, records)
        for entry in entries:
            if entry.claim_id == claim.claim_id:  # records now held by another claim are skipped
                entry.claim_id = None
        self._leave(claim.claim_id, [e.ref.name for e in entries])

    async def set_aside(self, claim: Claim, *, records: Sequence[StoredRecord], reason: str) -> None:
        self._settle(claim, records, state=ASIDE, reason=reason)

    async def pending_stats(self) -> PendingStats:
        counts = {k: 0 for k in RecordKind}
        sizes = {k: 0 for k in RecordKind}
        for entry in self._live().records.values():
            if entry.state == PENDING:
                counts[entry.ref.kind] += 1
                sizes[entry.ref.kind] += entry.ref.size
        return PendingStats(records=counts, bytes=sizes)
