"""The query path's state: conversation owners, history turns and shared flags.

Module functions are the SQL, run in a lane's thread on its connection; :class:`QueryStateOps`
is the backend's side (a mixin of ``FilesystemStorage``): the owner cache, the one writer job
a query's records take (``store_interaction``, decision store-01), and the query path's reads,
done on the event loop's own connection (decision query-05).
"""

from __future__ import annotations

import json
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Callable
from pathlib import Path
from typing import Final, TypeVar

from lightspeed.records import ConversationTurn, FeedbackRecord, Transcript, utc_timestamp
from lightspeed.storage.base import StoredRecord
from lightspeed.storage.common import check_conversation_id, check_flag_name, check_user_hash
from lightspeed.storage.errors import InteractionNotStored, StorageUnavailable
from lightspeed.storage.filesystem.lanes import Lane
from lightspeed.storage.filesystem.statedb import LoopReader, ReaderContext, WriterContext, busy

__all__ = ["QueryStateOps"]

T = TypeVar("T")

#: Owners remembered per process, each for a short while: an owner never changes, but another
#: worker process may delete the conversation, and this one must not use it for longer than
#: that. Also bounds the memory the cache takes by the rate of new conversations.
_OWNER_CACHE_MAX: Final = 10_000
_OWNER_CACHE_SECONDS: Final = 2.0


def _insert_owner(conn: sqlite3.Connection, conversation_id: str, owner: str) -> str:
    """Insert-if-absent; the owner now recorded."""
    conn.execute(
        "INSERT OR IGNORE INTO owners (conversation_id, owner, created_at) VALUES (?, ?, ?)",
        (conversation_id, owner, utc_timestamp()),
    )
    (recorded,) = conn.execute("SELECT owner FROM owners WHERE conversation_id = ?", (conversation_id,)).fetchone()
    return str(recorded)


def insert_owner(ctx: WriterContext, conversation_id: str, owner: str) -> str:
    with ctx.transaction() as conn:
        return _insert_owner(conn, conversation_id, owner)


def get_owner(conn: sqlite3.Connection, conversation_id: str) -> str | None:
    row = conn.execute("SELECT owner FROM owners WHERE conversation_id = ?", (conversation_id,)).fetchone()
    return None if row is None else str(row[0])


def append_turn(ctx: WriterContext, conversation_id: str, text: str) -> None:
    with ctx.transaction() as conn:
        conn.execute("INSERT INTO turns (conversation_id, turn) VALUES (?, ?)", (conversation_id, text))


def store_turn(ctx: WriterContext, conversation_id: str, owner: str | None, text: str) -> str | None:
    """A query's rows: the owner of a new conversation (insert-if-absent) and its turn, in one
    savepoint; a follow-up's turn alone, one statement without one. Returns the owner recorded
    (``None`` when ``owner`` was not given)."""
    if owner is None:  # a follow-up: one statement
        ctx.single().execute("INSERT INTO turns (conversation_id, turn) VALUES (?, ?)", (conversation_id, text))
        return None
    with ctx.transaction() as conn:
        recorded = _insert_owner(conn, conversation_id, owner)
        conn.execute("INSERT INTO turns (conversation_id, turn) VALUES (?, ?)", (conversation_id, text))
    return recorded


def get_turns(conn: sqlite3.Connection, conversation_id: str, limit: int) -> list[ConversationTurn]:
    rows = conn.execute(
        "SELECT turn FROM (SELECT id, turn FROM turns WHERE conversation_id = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
        (conversation_id, limit),
    ).fetchall()
    return [ConversationTurn.from_dict(json.loads(row[0])) for row in rows]


def get_flag(conn: sqlite3.Connection, name: str) -> bool | None:
    row = conn.execute("SELECT value FROM flags WHERE name = ?", (name,)).fetchone()
    return None if row is None else bool(row[0])


def set_flag(ctx: WriterContext, name: str, value: bool) -> bool | None:
    with ctx.transaction() as conn:
        previous = get_flag(conn, name)
        conn.execute("INSERT OR REPLACE INTO flags (name, value) VALUES (?, ?)", (name, int(value)))
    return previous


class QueryStateOps:
    """The backend's owners, history and flags (a mixin of ``FilesystemStorage``)."""

    fsync: bool
    transcripts_root: Path | None
    _owners: OrderedDict[str, tuple[str, float]]
    _loop_reader: LoopReader | None

    def _lanes(self) -> tuple[Lane[WriterContext], Lane[ReaderContext]]:
        raise NotImplementedError

    def _translate(self, exc: BaseException) -> BaseException:
        raise NotImplementedError

    def _record_writer(
        self, record: FeedbackRecord | Transcript, root: Path | None, setting: str, *, new_dir: bool = False
    ) -> tuple[StoredRecord, Callable[[WriterContext], None]]:
        raise NotImplementedError

    def _remember_owner(self, conversation_id: str, owner: str) -> str:
        now = time.monotonic()
        self._owners[conversation_id] = (owner, now + _OWNER_CACHE_SECONDS)
        self._owners.move_to_end(conversation_id)
        while self._owners and (len(self._owners) > _OWNER_CACHE_MAX or next(iter(self._owners.values()))[1] <= now):
            self._owners.popitem(last=False)  # the oldest entries expire first
        return owner

    def _known_owner(self, conversation_id: str) -> str | None:
        entry = self._owners.get(conversation_id)
        if entry is None or entry[1] <= time.monotonic():
            return None
        return entry[0]

    async def set_conversation_owner(self, conversation_id: str, *, owner: str) -> str:
        check_conversation_id(conversation_id)
        check_user_hash(owner)
        known = self._known_owner(conversation_id)
        if known is not None:
            return known
        writer, _ = self._lanes()
        return self._remember_owner(
            conversation_id, await writer.run(lambda ctx: insert_owner(ctx, conversation_id, owner))
        )

    async def get_conversation_owner(self, conversation_id: str) -> str | None:
        check_conversation_id(conversation_id)
        known = self._known_owner(conversation_id)
        if known is not None:
            return known
        owner = await self._query_read(lambda conn: get_owner(conn, conversation_id))
        return None if owner is None else self._remember_owner(conversation_id, owner)

    async def append_turn(self, conversation_id: str, *, turn: ConversationTurn) -> None:
        check_conversation_id(conversation_id)
        text = json.dumps(turn.to_dict(), ensure_ascii=False)
        writer, _ = self._lanes()
        await writer.run(lambda ctx: append_turn(ctx, conversation_id, text))

    async def store_interaction(
        self,
        conversation_id: str,
        *,
        turn: ConversationTurn,
        transcript: Transcript | None = None,
        owner: str | None = None,
    ) -> None:
        # One job of the writer lane: the transcript's file in the batch's early pass, then the
        # owner and the turn in one savepoint of the batch's transaction (decision store-01).
        check_conversation_id(conversation_id)
        if owner is not None:
            check_user_hash(owner)
            if self._known_owner(conversation_id) is not None:
                owner = None  # recorded already (a retry)
        text = json.dumps(turn.to_dict(), ensure_ascii=False)
        write: Callable[[WriterContext], None] | None = None
        transcript_error: BaseException | None = None
        if transcript is not None:
            try:
                # A new conversation's folder is new too: made first, not after a failed attempt.
                _, write = self._record_writer(
                    transcript, self.transcripts_root, "transcripts_storage", new_dir=owner is not None
                )
            except (StorageUnavailable, ValueError) as exc:
                transcript_error = exc
        writer, _ = self._lanes()

        def first(ctx: WriterContext) -> BaseException | None:
            if write is None:
                return transcript_error
            try:
                write(ctx)
            except Exception as exc:  # noqa: BLE001 - reported with the turn's outcome
                return self._translate(exc)
            return None

        def then(ctx: WriterContext, file_error: BaseException | None) -> tuple[str | None, BaseException | None]:
            return store_turn(ctx, conversation_id, owner, text), file_error

        try:
            recorded, transcript_error = await writer.run_phased(first, then)
        except StorageUnavailable as exc:  # the owner or the turn (or the batch's commit)
            raise InteractionNotStored(history=exc) from exc
        if recorded is not None:
            self._remember_owner(conversation_id, recorded)
        if transcript_error is not None:
            raise InteractionNotStored(transcript=transcript_error) from transcript_error

    async def get_turns(self, conversation_id: str, *, limit: int) -> list[ConversationTurn]:
        check_conversation_id(conversation_id)
        if limit <= 0:
            return []
        return await self._query_read(lambda conn: get_turns(conn, conversation_id, limit))

    async def _query_read(self, read: Callable[[sqlite3.Connection], T]) -> T:
        """A read of the query path (an owner, a history), on the event loop's own connection:
        a few index lookups, cheaper than a thread's wake-up and the way back, and never waiting
        for the writer (WAL). A read that cannot be done at once there (the database busy, no
        connection yet, the file replaced) runs on a pool thread, which also makes the loop a
        new connection when it has none (decision query-05)."""
        _, pool = self._lanes()
        loop_reader = self._loop_reader
        if loop_reader is None:
            raise StorageUnavailable("the filesystem store is not open")
        conn: sqlite3.Connection | None = None
        try:
            conn = loop_reader.current()  # a stat of the database file: may fail too
            if conn is not None:
                return read(conn)
        except sqlite3.Error as exc:
            if not busy(exc):
                raise self._translate(exc) from exc
        except OSError as exc:
            raise self._translate(exc) from exc

        def fallback(ctx: ReaderContext) -> tuple[T, tuple[sqlite3.Connection, tuple[int, int]] | None]:
            value = read(ctx.conn)
            return value, (loop_reader.connect() if conn is None else None)

        value, made = await pool.run(fallback)
        if self._loop_reader is loop_reader:
            loop_reader.adopt(made)
        elif made is not None:  # the store closed meanwhile
            made[0].close()
        return value

    # ------------------------------------------------------------------ flags

    async def get_flag(self, name: str) -> bool | None:
        # On the writer lane, answered before its batch is written: POST /v1/feedback checks this
        # flag on every request, and this shares the hand-off with the record's write.
        check_flag_name(name)
        writer, _ = self._lanes()
        return await writer.run(lambda ctx: get_flag(ctx.conn, name), durable=False, early=True)

    async def set_flag(self, name: str, *, value: bool) -> bool | None:
        check_flag_name(name)
        writer, _ = self._lanes()
        return await writer.run(lambda ctx: set_flag(ctx, name, value))
