"""What every backend shares: record names, id checks, claim arguments and claim filling.

Backends call these rather than writing their own, so that every backend names records
the same way, rejects the same bad ids with the same message, and fills a claim up to
``max_records``/``max_bytes`` by the same rule (the conformance kit checks the outcome).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Final

import attrs

from lightspeed.records import (
    FEEDBACK_NAME_RE,
    TRANSCRIPT_NAME_RE,
    FeedbackRecord,
    RecordKind,
    Transcript,
    is_valid_conversation_id,
    is_valid_record_id,
    is_valid_user_hash,
)
from lightspeed.storage.values import StoredRecord

__all__ = [
    "ClaimFill",
    "RecordName",
    "check_claim_args",
    "check_conversation_id",
    "check_flag_name",
    "check_user_hash",
    "fill_claim",
    "parse_record_name",
    "stored_record",
]

_FLAG_NAME_CHARS: Final = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")


def check_conversation_id(conversation_id: str) -> str:
    """``conversation_id`` unchanged, or ``ValueError`` when it is not one we accept."""
    if not isinstance(conversation_id, str) or not is_valid_conversation_id(conversation_id):
        raise ValueError(f"invalid conversation id {conversation_id!r}")
    return conversation_id


def check_user_hash(user_hash: str) -> str:
    """``user_hash`` unchanged, or ``ValueError`` when it is not a SHA-256 hex digest."""
    if not isinstance(user_hash, str) or not is_valid_user_hash(user_hash):
        raise ValueError(f"invalid user hash {user_hash!r}")
    return user_hash


def check_flag_name(name: str) -> str:
    """``name`` unchanged, or ``ValueError`` unless it is lower-case letters, digits, ``_`` and ``-``."""
    if not isinstance(name, str) or not name or not set(name) <= _FLAG_NAME_CHARS or len(name) > 64:
        raise ValueError(f"invalid flag name {name!r}: use 1 to 64 of a-z, 0-9, _ and -")
    return name


def stored_record(record: FeedbackRecord | Transcript, data: bytes) -> StoredRecord:
    """The reference to ``record`` stored as ``data``: its kind, name and size.

    Raises ``ValueError`` when the record's ids are not of the documented form, so no
    backend ever turns an unchecked id into a name, a path or a key.
    """
    rid = record.record_id
    if not is_valid_record_id(rid):
        raise ValueError(f"invalid record id {rid!r}")
    if isinstance(record, FeedbackRecord):
        return StoredRecord(kind=RecordKind.FEEDBACK, record_id=rid, name=f"feedback/{rid}.json", size=len(data))
    user = check_user_hash(record.user_id)
    conv = check_conversation_id(record.conversation_id)
    name = f"transcripts/{user}/{conv}/{rid}.json"
    return StoredRecord(kind=RecordKind.TRANSCRIPT, record_id=rid, name=name, size=len(data))


@attrs.frozen
class RecordName:
    """The parts of a record name: ``feedback/{record_id}.json`` or
    ``transcripts/{user_hash}/{conversation_id}/{record_id}.json``."""

    kind: RecordKind
    record_id: str
    #: ``{user_hash}/{conversation_id}`` for a transcript, ``""`` for feedback.
    folder: str


def parse_record_name(name: str) -> RecordName:
    """Split and validate a record name (it may come from a caller); ``ValueError`` when it is
    not the name of a record (every component is checked, so it never reaches outside a root)."""
    if FEEDBACK_NAME_RE.fullmatch(name):
        return RecordName(RecordKind.FEEDBACK, name[-41:-5], "")
    if TRANSCRIPT_NAME_RE.fullmatch(name):
        return RecordName(RecordKind.TRANSCRIPT, name[-41:-5], name[len("transcripts/") : -42])
    raise ValueError(f"not a record name: {name!r}")


def check_claim_args(*, max_records: int, max_bytes: int, lease_seconds: float) -> None:
    """``ValueError`` unless the claim's limits and lease are positive."""
    if max_records < 1 or max_bytes < 1 or not lease_seconds > 0:
        raise ValueError(
            "max_records, max_bytes and lease_seconds must be positive,"
            f" got {max_records}, {max_bytes} and {lease_seconds}"
        )


@attrs.define
class ClaimFill:
    """The records of a claim being filled, oldest first, up to its limits.

    Offer candidates in order with :meth:`offer` until it returns ``False`` or :attr:`full`
    is true. A record larger than ``max_bytes`` is taken only as the first, and then alone
    (so the caller can set it aside).
    """

    max_records: int
    max_bytes: int
    records: list[StoredRecord] = attrs.field(factory=list)
    size: int = 0
    full: bool = False

    def offer(self, record: StoredRecord) -> bool:
        """Take ``record`` if it fits; ``False`` (not taken, the claim is complete) if not."""
        if self.full:
            return False
        if self.records and self.size + record.size > self.max_bytes:
            self.full = True
            return False
        self.records.append(record)
        self.size += record.size
        self.full = len(self.records) >= self.max_records or self.size >= self.max_bytes
        return True


def fill_claim(candidates: Iterable[StoredRecord], *, max_records: int, max_bytes: int) -> list[StoredRecord]:
    """The first of ``candidates`` (oldest first) that fit in one claim, by :class:`ClaimFill`'s rule."""
    fill = ClaimFill(max_records, max_bytes)
    for record in candidates:
        if not fill.offer(record) or fill.full:
            break
    return fill.records
