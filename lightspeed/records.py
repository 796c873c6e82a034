"""What is stored: feedback records and transcripts, and their JSON form.

The JSON of each record is exactly the seed's (field names, nesting, types). Each record
carries a unique ``record_id`` (a UUID4, also its file name) that is *not* part of the JSON,
so the stored shape stays the seed's and a record uploaded twice is recognisable by name.
"""

from __future__ import annotations

import enum
import functools
import hashlib
import json
import os
import re
import time
from datetime import UTC, datetime
from typing import Any, ClassVar, Final

import attrs

__all__ = [
    "FEEDBACK_NAME_RE",
    "TRANSCRIPT_NAME_RE",
    "ConversationTurn",
    "canonical_conversation_id",
    "FeedbackRecord",
    "RecordKind",
    "Transcript",
    "TranscriptMetadata",
    "hash_user_id",
    "is_valid_conversation_id",
    "is_valid_record_id",
    "new_record_id",
    "utc_timestamp",
]

_UUID_RE: Final = re.compile(r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}")
#: Llama Stack's conversation ids: ``conv_`` and 48 hex digits.
_CONV_RE: Final = re.compile(r"conv_[0-9a-f]{48}")
_SHA256_RE: Final = re.compile(r"[0-9a-f]{64}")
#: Stored record names (also their archive member names), each component validated.
FEEDBACK_NAME_RE: Final = re.compile(rf"feedback/{_UUID_RE.pattern}\.json")
TRANSCRIPT_NAME_RE: Final = re.compile(
    rf"transcripts/{_SHA256_RE.pattern}/(?:{_UUID_RE.pattern}|{_CONV_RE.pattern})/{_UUID_RE.pattern}\.json"
)


class RecordKind(enum.StrEnum):
    """The two kinds of stored record; the value is the archive folder name's stem."""

    FEEDBACK = "feedback"
    TRANSCRIPT = "transcripts"


class _RandomIds:
    """UUID4s from random bytes fetched 4 KiB at a time (decision ``ids-01``: ``uuid.uuid4()``
    calls ``os.urandom`` for each id, and each call hands the GIL to the store's threads)."""

    def __init__(self) -> None:
        self._pool = bytearray()
        os.register_at_fork(after_in_child=self._pool.clear)  # a child never repeats its parent's ids

    def next(self) -> str:
        if len(self._pool) < 16:
            self._pool[:] = os.urandom(4096)
        raw = self._pool[-16:]
        del self._pool[-16:]
        raw[6] = raw[6] & 0x0F | 0x40  # version 4
        raw[8] = raw[8] & 0x3F | 0x80  # the RFC 4122 variant
        h = raw.hex()  # what str(uuid.UUID(bytes=raw, version=4)) gives, at a third of its cost
        return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"


_random_ids = _RandomIds()


def new_record_id() -> str:
    """A fresh UUID4 (canonical lower-case form): record ids, new conversations' ids."""
    return _random_ids.next()


def is_valid_record_id(value: str) -> bool:
    """Whether ``value`` is a record id we would have made (a canonical UUID)."""
    return bool(_UUID_RE.fullmatch(value))


def is_valid_conversation_id(value: str) -> bool:
    """Whether ``value`` is an accepted conversation id: a UUID, or Llama Stack's ``conv_<48 hex>``.

    Only ids that pass this check ever become path components.
    """
    return bool(_UUID_RE.fullmatch(value) or _CONV_RE.fullmatch(value))


def canonical_conversation_id(value: str) -> str | None:
    """The conversation id in the form we store it (UUIDs lower-cased), or ``None`` when invalid.

    Clients may echo a UUID in upper case; it names the same conversation.
    """
    if _UUID_RE.fullmatch(value):
        return value.lower()
    return value if _CONV_RE.fullmatch(value) else None


def is_valid_user_hash(value: str) -> bool:
    """Whether ``value`` is a SHA-256 hex digest, the form user ids are stored in."""
    return bool(_SHA256_RE.fullmatch(value))


@functools.lru_cache(maxsize=4096)
def hash_user_id(user_id: str) -> str:
    """The SHA-256 hex digest of a user id, as stored in paths and records.

    Remembered for the last few thousand callers: a query hashes its caller's id up to three
    times (owner, access check, transcript), and the same callers come back.
    """
    return hashlib.sha256(user_id.encode("utf-8")).hexdigest()


#: The current second's ``YYYY-MM-DDTHH:MM:SS`` (seconds since the epoch, its text).
_second: tuple[int, str] = (-1, "")


def utc_timestamp(now: datetime | None = None) -> str:
    """ISO 8601 in UTC with a ``Z`` suffix, as in the seed (``2024-01-01T12:00:00.123456Z``).

    The current time's text is built from the clock's microseconds and the second's text,
    formatted once a second: the same text as ``datetime.isoformat``, at a third of its cost.
    """
    global _second
    if now is not None:
        return now.astimezone(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")
    micros = time.time_ns() // 1000
    seconds, fraction = divmod(micros, 1_000_000)
    if seconds != _second[0]:
        _second = (seconds, time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)))
    return f"{_second[1]}.{fraction:06d}Z"


def _dumps(obj: Any) -> bytes:
    # Compact: the C encoder (indent forces the pure-Python one, ~15% of a feedback request).
    return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@attrs.frozen(kw_only=True)
class FeedbackRecord:
    """One piece of user feedback (the seed's feedback JSON).

    ``user_id`` is the SHA-256 hex digest of the caller's user id, the same form the
    transcripts use, so feedback can be joined to transcripts without storing the raw id.
    """

    record_id: str = attrs.field(factory=new_record_id)
    user_id: str
    timestamp: str = attrs.field(factory=utc_timestamp)
    conversation_id: str
    user_question: str
    llm_response: str
    sentiment: int | None = None
    user_feedback: str | None = None
    categories: tuple[str, ...] | None = None

    kind: ClassVar[RecordKind] = RecordKind.FEEDBACK

    def to_dict(self) -> dict[str, Any]:
        return {
            "user_id": self.user_id,
            "timestamp": self.timestamp,
            "conversation_id": self.conversation_id,
            "user_question": self.user_question,
            "llm_response": self.llm_response,
            "sentiment": self.sentiment,
            "user_feedback": self.user_feedback,
            "categories": list(self.categories) if self.categories is not None else None,
        }

    def to_json(self) -> bytes:
        return _dumps(self.to_dict())


@attrs.frozen(kw_only=True)
class TranscriptMetadata:
    """The ``metadata`` object of a transcript."""

    provider: str | None
    model: str | None
    query_provider: str | None
    query_model: str | None
    user_id: str
    conversation_id: str
    timestamp: str = attrs.field(factory=utc_timestamp)

    def to_dict(self) -> dict[str, Any]:
        return {
            "provider": self.provider,
            "model": self.model,
            "query_provider": self.query_provider,
            "query_model": self.query_model,
            "user_id": self.user_id,
            "conversation_id": self.conversation_id,
            "timestamp": self.timestamp,
        }


@attrs.frozen(kw_only=True)
class Transcript:
    """One interaction: the (redacted) query, the answer and its context (the seed's transcript JSON)."""

    record_id: str = attrs.field(factory=new_record_id)
    metadata: TranscriptMetadata
    redacted_query: str
    query_is_valid: bool = True
    llm_response: str
    rag_chunks: tuple[Any, ...] = ()
    truncated: bool = False
    attachments: tuple[dict[str, Any], ...] = ()
    tool_calls: tuple[Any, ...] = ()
    tool_results: tuple[Any, ...] = ()

    kind: ClassVar[RecordKind] = RecordKind.TRANSCRIPT

    @property
    def user_id(self) -> str:
        return self.metadata.user_id

    @property
    def conversation_id(self) -> str:
        return self.metadata.conversation_id

    def to_dict(self) -> dict[str, Any]:
        return {
            "metadata": self.metadata.to_dict(),
            "redacted_query": self.redacted_query,
            "query_is_valid": self.query_is_valid,
            "llm_response": self.llm_response,
            "rag_chunks": list(self.rag_chunks),
            "truncated": self.truncated,
            "attachments": [dict(a) for a in self.attachments],
            "tool_calls": list(self.tool_calls),
            "tool_results": list(self.tool_results),
        }

    def to_json(self) -> bytes:
        return _dumps(self.to_dict())


@attrs.frozen(kw_only=True)
class ConversationTurn:
    """One question and answer of a conversation, kept as history for later queries.

    History lives apart from transcripts (which are deleted once uploaded). ``query`` is
    the redacted query, never the raw one.
    """

    query: str
    response: str
    #: When the answer was complete (ISO 8601, UTC).
    timestamp: str = attrs.field(factory=utc_timestamp)
    provider: str | None = None
    model: str | None = None
    truncated: bool = False
    #: When the query arrived; ``None`` for turns stored before this field existed.
    started_at: str | None = None

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "query": self.query,
            "response": self.response,
            "timestamp": self.timestamp,
            "provider": self.provider,
            "model": self.model,
            "truncated": self.truncated,
        }
        if self.started_at is not None:
            out["started_at"] = self.started_at
        return out

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> ConversationTurn:
        return cls(
            query=str(data["query"]),
            response=str(data["response"]),
            timestamp=str(data["timestamp"]),
            provider=data.get("provider"),
            model=data.get("model"),
            truncated=bool(data.get("truncated", False)),
            started_at=data.get("started_at"),
        )
