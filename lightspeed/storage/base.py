"""The storage interface: what every backend promises (the values its methods take and return are
in :mod:`lightspeed.storage.values`, re-exported here; the options and the constructor are
:class:`~lightspeed.storage.options.Configurable`'s and the stream methods
:class:`~lightspeed.storage.streams.StreamRegistry`'s, both bases of :class:`StorageBackend`).

A backend stores two kinds of record (feedback and transcripts), remembers who owns each
conversation, keeps a few shared boolean flags, and hands pending records to collectors
through atomic, leased claims. This module is the contract third parties implement; the
conformance kit in :mod:`lightspeed.testing` checks every promise made here.

Conventions for every method:

* Every method is a coroutine and never blocks the event loop (run blocking I/O in a
  thread, or use an async driver).
* A backend raises only the exceptions of :mod:`lightspeed.storage.errors`. Failures of
  the store itself (disk full, permission denied, database down) are
  :class:`~lightspeed.storage.errors.StorageUnavailable`, with the underlying exception
  chained and a message an operator can act on.
* Arguments after the first are keyword-only, so new optional ones can be added later.
* Record ids, conversation ids and user hashes are validated by the callers
  (:mod:`lightspeed.records`); a backend checks them again with the helpers of
  :mod:`lightspeed.storage.common` (``ValueError`` for ones not of the documented form),
  never turning them into names, paths or keys unchecked.
* Record names, claim arguments and the filling of a claim up to its limits are the
  core's (:mod:`lightspeed.storage.common`); a backend uses those helpers rather than its
  own, so every backend behaves alike.
"""

from __future__ import annotations

import abc
import asyncio
from collections.abc import Collection, Coroutine, Sequence
from types import TracebackType
from typing import Any, ClassVar, Self

from lightspeed.records import ConversationTurn, FeedbackRecord, RecordKind, Transcript
from lightspeed.storage.errors import InteractionNotStored, RecordNotFound, StorageUnsupported
from lightspeed.storage.options import Configurable
from lightspeed.storage.streams import StreamRegistry
from lightspeed.storage.values import (
    FEEDBACK_ENABLED_FLAG,
    Claim,
    ConversationInfo,
    ConversationPage,
    Deletion,
    NoOptions,
    PendingStats,
    StoredRecord,
    StreamInterrupt,
)

__all__ = [
    "Claim",
    "ConversationInfo",
    "ConversationPage",
    "Deletion",
    "FEEDBACK_ENABLED_FLAG",
    "NoOptions",
    "PendingStats",
    "StorageBackend",
    "StoredRecord",
    "StreamInterrupt",
]


class StorageBackend(Configurable, StreamRegistry, abc.ABC):
    """Abstract base of every storage backend.

    Backends are classes registered under the entry-point group ``lightspeed.storage``.
    The service constructs one instance per process with the configuration's
    ``user_data_collection.storage.options`` and the whole ``user_data_collection``
    section, awaits :meth:`open`, uses it from one event loop, and awaits :meth:`aclose`
    at shutdown. Several processes (and, where the backend says so, several hosts) may
    use the same store at once; everything below holds across them.
    """

    #: The entry-point name this class is registered under; set by the registry.
    name: ClassVar[str] = ""
    #: Whether several processes may share one store (the kit skips multi-process tests otherwise).
    supports_multiple_processes: ClassVar[bool] = True

    # ------------------------------------------------------------------ lifecycle

    @abc.abstractmethod
    async def open(self) -> None:
        """Connect, create what is missing (directories, schema), start helpers.

        Raises ``StorageUnavailable`` when the store cannot be reached; the instance can
        then be opened again later. A backend may instead open while part of its store cannot
        be used yet (the filesystem backend does, for a directory that cannot be created or
        written, so that one bad volume does not stop the service): then :meth:`ping` and the
        operations that need that part raise ``StorageUnavailable`` until it can be used, and
        the same instance recovers by itself. Calling any other method before ``open`` is an
        error.
        """

    @abc.abstractmethod
    async def aclose(self) -> None:
        """Finish pending writes, release connections and threads. Idempotent.

        Writes that were accepted before ``aclose`` was called complete first.
        """

    @abc.abstractmethod
    async def ping(self) -> None:
        """Check that the store answers and is writable; return quickly.

        Raises ``StorageUnavailable`` with a cause an operator can act on. The readiness
        probe calls this; it must not take longer than a second or two.
        """

    # ------------------------------------------------------------------ records

    @abc.abstractmethod
    async def put_feedback(self, record: FeedbackRecord) -> StoredRecord:
        """Store one feedback record durably and atomically.

        Atomic: a reader (a collector, or a tool globbing ``*.json`` on the filesystem)
        sees either the complete record or nothing, never part of it. The record is
        pending until a collector acks it. Raises ``StorageUnavailable`` when the store
        cannot take it (``StorageRootUnavailable``, naming the directory as configured, when
        the directory records are written into is at fault); then nothing is visible.
        Retrying with the same record is safe: the record id makes the write idempotent.
        """

    @abc.abstractmethod
    async def put_transcript(self, record: Transcript) -> StoredRecord:
        """Store one transcript; the same contract as :meth:`put_feedback`."""

    def accepts(self, kind: RecordKind) -> bool:
        """Whether this instance is configured to store records of ``kind`` (no I/O).

        The filesystem backend, for one, cannot store feedback without ``feedback_storage``.
        """
        return True

    async def put(self, record: FeedbackRecord | Transcript) -> StoredRecord:
        """Store either kind of record."""
        if isinstance(record, FeedbackRecord):
            return await self.put_feedback(record)
        return await self.put_transcript(record)

    # ------------------------------------------------------------------ conversations

    @abc.abstractmethod
    async def set_conversation_owner(self, conversation_id: str, *, owner: str) -> str:
        """Record ``owner`` (a SHA-256 user hash) as the conversation's owner, unless one is recorded.

        Atomic insert-if-absent: of several concurrent callers for one conversation, from
        any process, exactly one wins and all learn the same owner. Returns the owner now
        recorded, which is not ``owner`` when someone else got there first. Ownership
        never changes once recorded. Safe to retry.
        """

    @abc.abstractmethod
    async def get_conversation_owner(self, conversation_id: str) -> str | None:
        """The owner recorded for the conversation, or ``None`` when it is unknown."""

    @abc.abstractmethod
    async def append_turn(self, conversation_id: str, *, turn: ConversationTurn) -> None:
        """Append one turn to the conversation's history (kept apart from transcripts).

        Atomic per turn: a reader sees the whole turn or none of it; concurrent appends
        from several processes are all kept, in some order. Not idempotent: a retry after
        an error that happened after the write may store the turn twice.
        """

    @abc.abstractmethod
    async def get_turns(self, conversation_id: str, *, limit: int) -> list[ConversationTurn]:
        """The last ``limit`` turns of the conversation, oldest first (empty when unknown)."""

    async def store_interaction(
        self,
        conversation_id: str,
        *,
        turn: ConversationTurn,
        transcript: Transcript | None = None,
        owner: str | None = None,
    ) -> None:
        """Store what one answered query produced, and return once all of it is stored: with
        ``owner``, the owner of a new conversation (insert-if-absent, as
        :meth:`set_conversation_owner`); the history ``turn`` (as :meth:`append_turn`); and,
        when given, the ``transcript`` (as :meth:`put_transcript`).

        The query path makes this one call per answer, so that a backend can store all three
        in one round trip (the filesystem backend: one job of its writer's batch). Each part
        is attempted even when another fails, except the turn, which is not stored when the
        owner could not be. When any part failed, raises
        :class:`~lightspeed.storage.errors.InteractionNotStored`, whose ``history`` (owner or
        turn) and ``transcript`` say which.

        The default records the owner first, then stores the turn and the transcript side by side.
        """
        if owner is not None:
            try:
                await self.set_conversation_owner(conversation_id, owner=owner)
            except Exception as exc:
                raise InteractionNotStored(history=exc) from exc
        parts: list[Coroutine[Any, Any, Any]] = [self.append_turn(conversation_id, turn=turn)]
        if transcript is not None:
            parts.append(self.put_transcript(transcript))
        outcomes = await asyncio.gather(*parts, return_exceptions=True)
        errors = [o if isinstance(o, Exception) else None for o in outcomes] + [None]
        for outcome in outcomes:
            if isinstance(outcome, BaseException) and not isinstance(outcome, Exception):
                raise outcome  # cancelled
        if errors[0] is not None or errors[1] is not None:
            raise InteractionNotStored(history=errors[0], transcript=errors[1]) from errors[0] or errors[1]

    async def list_conversations(
        self, owner: str | None, *, limit: int | None = None, offset: int = 0
    ) -> ConversationPage:
        """The conversations ``owner`` owns (every owner's when ``None``), most recent first.

        Ordered by ``last_message_at`` (``created_at`` for a conversation without turns),
        newest first, then by conversation id, so pages are stable while nothing changes.
        ``limit`` (at least 1, ``None`` for no limit) and ``offset`` (at least 0) select a
        page; ``total`` counts the whole list. Raises ``ValueError`` for a bad ``limit`` or
        ``offset``. The default raises :class:`~lightspeed.storage.errors.StorageUnsupported`.
        """
        raise StorageUnsupported(f"storage backend {self.name!r} cannot list conversations")

    async def get_conversation(self, conversation_id: str) -> ConversationInfo | None:
        """The conversation's owner and metadata, or ``None`` when it is unknown.

        The default knows the owner only (from :meth:`get_conversation_owner`).
        """
        owner = await self.get_conversation_owner(conversation_id)
        return None if owner is None else ConversationInfo(conversation_id=conversation_id, owner=owner)

    async def set_topic_summary(self, conversation_id: str, *, topic_summary: str | None) -> bool:
        """Set (``None``: clear) the conversation's topic summary; ``False`` when it is unknown.

        Atomic; the last of concurrent calls wins. Safe to retry. The default raises
        :class:`~lightspeed.storage.errors.StorageUnsupported`.
        """
        raise StorageUnsupported(f"storage backend {self.name!r} cannot store topic summaries")

    async def delete_conversation(self, conversation_id: str, *, records: bool = True) -> Deletion:
        """Forget the conversation: its owner, metadata and history turns; with ``records``
        also every stored transcript of it and every feedback record on it.

        Atomic across processes: a concurrent claim either ran before (its records are
        listed in ``in_flight``) or after (it never sees them). A conversation recorded
        again later (a query still under way) starts afresh. Deleting an unknown
        conversation removes nothing but its records (``conversations == 0``). Safe to
        retry. The default raises :class:`~lightspeed.storage.errors.StorageUnsupported`.
        """
        raise StorageUnsupported(f"storage backend {self.name!r} cannot delete conversations")

    async def purge_user(self, owner: str) -> Deletion:
        """Delete every conversation ``owner`` (a SHA-256 user hash) owns, with its records,
        and every other stored record of that user (transcripts under the user's hash,
        feedback whose ``user_id`` is it): the user's right to be forgotten.

        The same atomicity and ``in_flight`` promise as :meth:`delete_conversation`; safe
        to retry. The default raises :class:`~lightspeed.storage.errors.StorageUnsupported`.
        """
        raise StorageUnsupported(f"storage backend {self.name!r} cannot purge a user")

    # ------------------------------------------------------------------ flags

    @abc.abstractmethod
    async def get_flag(self, name: str) -> bool | None:
        """The shared flag ``name``, or ``None`` when it was never set.

        Every process sharing the store sees a value set by any of them as soon as
        :meth:`set_flag` has returned, and the value survives restarts.
        """

    @abc.abstractmethod
    async def set_flag(self, name: str, *, value: bool) -> bool | None:
        """Set the shared flag ``name`` and return its previous value (``None``: never set).

        Atomic: of two concurrent calls, each sees the other's value or the one before
        both, never a lost update. Safe to retry (setting the same value twice is a no-op).
        """

    # ------------------------------------------------------------------ collection

    @abc.abstractmethod
    async def claim(
        self,
        *,
        owner: str,
        kinds: Collection[RecordKind],
        max_records: int,
        max_bytes: int,
        lease_seconds: float,
    ) -> Claim:
        """Lease pending records of the given kinds to ``owner``, oldest first.

        "Oldest first" is a total order: records stored one after the other (the second put
        awaited after the first returned) are claimed in that order, without waiting for a
        clock to tick (a sequence, or a timestamp with a tie-break). ``ValueError`` (from
        :func:`~lightspeed.storage.common.check_claim_args`) when a limit is not positive.

        Atomic across every process and host sharing the store: no record is ever in two
        unexpired claims. Records already exported (acked with ``delete=False``), set
        aside, or held by another unexpired claim are never returned. Returns at most
        ``max_records`` records whose sizes add up to at most ``max_bytes``, except that
        a single record larger than ``max_bytes`` is returned alone, so the caller can set
        it aside. The claim may hold no records. Records written after the claim began
        may or may not be included, and so may a record that another collector deleted
        since the backend last looked (reading it gives ``None``; the collector acks it as
        vanished). Safe to retry: an abandoned claim expires.
        """

    @abc.abstractmethod
    async def read_record(self, record: StoredRecord) -> bytes:
        """The exact bytes of a record's JSON, as stored.

        Raises :class:`~lightspeed.storage.errors.RecordNotFound` if it was deleted.
        """

    async def read_many(self, records: Sequence[StoredRecord]) -> list[bytes | None]:
        """The exact bytes of each record, in order; ``None`` for a record that was deleted.

        A convenience over :meth:`read_record` that backends may override to read a whole
        batch in one round trip (the collector reads through it).
        """
        out: list[bytes | None] = []
        for record in records:
            try:
                out.append(await self.read_record(record))
            except RecordNotFound:
                out.append(None)
        return out

    @abc.abstractmethod
    async def renew(self, claim: Claim, *, lease_seconds: float) -> Claim:
        """Extend the claim's lease to ``lease_seconds`` from now; returns the renewed claim.

        Raises :class:`~lightspeed.storage.errors.ClaimLost` if any of its records is now
        held by another claim (the lease expired and was taken over); nothing changes then.
        """

    @abc.abstractmethod
    async def ack(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None, delete: bool) -> None:
        """Mark records of the claim (all of them when ``records`` is ``None``) as delivered.

        ``delete=True`` removes them from the store (on the filesystem also the directories
        left empty under the transcripts root, never the roots themselves);
        ``delete=False`` keeps them but marks them exported, so no claim returns them again.
        The acked records leave the claim; the claim ends when none are left.
        All or nothing: raises ``ClaimLost`` without changing anything if any of the
        records is held by another claim. Safe to retry after a failure.
        """

    @abc.abstractmethod
    async def release(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None) -> None:
        """Give records of the claim (all when ``None``) back untouched, pending as before.

        Records now held by another claim are skipped silently. Idempotent.
        """

    @abc.abstractmethod
    async def set_aside(self, claim: Claim, *, records: Sequence[StoredRecord], reason: str) -> None:
        """Move records that can never be delivered (too large for any upload) out of the
        pending set, keeping them (never deleting) for an operator to inspect.

        They leave the claim and are never claimed again. ``reason`` is kept beside them.
        Raises ``ClaimLost`` like :meth:`ack`.
        """

    @abc.abstractmethod
    async def pending_stats(self) -> PendingStats:
        """Count pending records (claimed or not, not exported or set aside) and their bytes per kind."""

    # ------------------------------------------------------------------ conveniences

    async def __aenter__(self) -> Self:
        await self.open()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.aclose()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} backend={self.name or '?'}>"
