"""What the storage contract's methods take and return: record references, claims, pending
counts, conversation metadata, deletions, the outcome of an interrupt, and the feedback flag's
name. Plain frozen attrs classes, no I/O; :mod:`lightspeed.storage.base` is the contract itself."""

from __future__ import annotations

import enum
from collections.abc import Mapping

import attrs

from lightspeed.records import RecordKind

__all__ = [
    "Claim",
    "ConversationInfo",
    "ConversationPage",
    "Deletion",
    "FEEDBACK_ENABLED_FLAG",
    "NoOptions",
    "PendingStats",
    "StoredRecord",
    "StreamInterrupt",
]

#: The flag behind ``/v1/feedback/status``.
FEEDBACK_ENABLED_FLAG = "feedback_enabled"


@attrs.frozen(kw_only=True)
class NoOptions:
    """The options of a backend that takes none."""


@attrs.frozen(kw_only=True)
class StoredRecord:
    """A reference to one stored record, as a collector sees it.

    ``name`` is the record's path in an upload archive, which also tells its kind:
    ``feedback/{record_id}.json`` or ``transcripts/{user_hash}/{conversation_id}/{record_id}.json``.
    ``size`` is the size in bytes of the record's JSON.
    """

    kind: RecordKind
    record_id: str
    name: str
    size: int


@attrs.frozen(kw_only=True)
class Claim:
    """A set of records leased to one collector until ``expires_at`` (Unix time, seconds).

    While the lease runs, no other claim can include these records. After it expires, the
    records can be claimed again by anyone; the old claim may still ack or release the
    records that nobody else has taken in the meantime.
    """

    claim_id: str
    owner: str
    expires_at: float
    records: tuple[StoredRecord, ...]

    @property
    def size(self) -> int:
        return sum(r.size for r in self.records)


@attrs.frozen(kw_only=True)
class PendingStats:
    """How much is waiting to be collected: records and bytes per kind (claimed or not)."""

    records: Mapping[RecordKind, int]
    bytes: Mapping[RecordKind, int]


@attrs.frozen(kw_only=True)
class ConversationInfo:
    """What the store knows about one conversation (no turn contents).

    Timestamps are ISO 8601 in UTC as :func:`lightspeed.records.utc_timestamp` writes them,
    so they sort as text. ``created_at`` is when the owner was recorded; the ``last_*``
    fields and ``message_count`` (the number of turns, one user message each) follow the
    turns appended so far; ``topic_summary`` is what :meth:`StorageBackend.set_topic_summary`
    set last (``None`` until then).
    """

    conversation_id: str
    owner: str
    created_at: str | None = None
    last_message_at: str | None = None
    message_count: int = 0
    last_used_model: str | None = None
    last_used_provider: str | None = None
    topic_summary: str | None = None


@attrs.frozen(kw_only=True)
class ConversationPage:
    """One page of a conversation list, and how many conversations the whole list has."""

    conversations: tuple[ConversationInfo, ...]
    total: int


@attrs.frozen(kw_only=True)
class Deletion:
    """What a deletion or a purge removed.

    ``conversations`` and ``turns`` count the conversations (owner, metadata) and history
    turns removed; ``transcripts`` and ``feedback`` the stored records removed, whatever
    their collection state. ``in_flight`` names (as :attr:`StoredRecord.name`) the removed
    records that a collector held in a claim when the deletion ran: such a collector may
    already have read them, so they may still reach the ingress once. Every other removed
    record is never read by a claim after the deletion returned (a claim may still name it,
    from an older look at the store; reading it gives ``None`` and the collector acks it as
    vanished).
    """

    conversations: int = 0
    turns: int = 0
    transcripts: int = 0
    feedback: int = 0
    in_flight: tuple[str, ...] = ()

    def __add__(self, other: Deletion) -> Deletion:
        return Deletion(
            conversations=self.conversations + other.conversations,
            turns=self.turns + other.turns,
            transcripts=self.transcripts + other.transcripts,
            feedback=self.feedback + other.feedback,
            in_flight=self.in_flight + other.in_flight,
        )


class StreamInterrupt(enum.StrEnum):
    """The outcome of :meth:`StorageBackend.interrupt_stream`."""

    #: The stream was running and is now marked for interruption.
    INTERRUPTED = "interrupted"
    #: No stream with that request id is known (or it ended too long ago).
    NOT_FOUND = "not_found"
    #: The stream belongs to another user; nothing changed.
    FORBIDDEN = "forbidden"
    #: The stream already ended (or was already interrupted); nothing changed.
    ALREADY_DONE = "already_done"
