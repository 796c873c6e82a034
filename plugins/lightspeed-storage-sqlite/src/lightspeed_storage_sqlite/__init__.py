"""SQLite storage backend for lightspeed: everything in one database file.

Records, conversation owners, history turns and flags live in one SQLite file in WAL mode,
so readers never wait for the writer and several worker processes on one host can share
it. Every change that must be atomic (claims, acks, flag swaps) is one ``BEGIN IMMEDIATE``
transaction, which SQLite serialises across processes; leases are Unix timestamps of the
host's clock. Not for several hosts: use the ``postgres`` backend for that (SQLite's
locking is unreliable on network file systems).

Options (``user_data_collection.storage.options``):

``path`` (required)
    the database file; its directory is created when missing.
``synchronous``
    ``normal`` (default: every commit is atomic, the last ones may be lost on power failure)
    or ``full`` (fsync at every commit).
``busy_timeout_seconds``
    how long a statement waits for another process's write lock (default 30).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, Literal

import aiosqlite
import attrs

from lightspeed.config import UserDataCollectionConfig
from lightspeed.records import ConversationTurn, FeedbackRecord, RecordKind, Transcript, utc_timestamp
from lightspeed.storage import (
    Claim,
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
    fill_claim,
    stored_record,
)

__all__ = ["SqliteOptions", "SqliteStorage"]

__version__ = "0.1.0"
#: Names per ``IN (...)`` list, well below SQLite's limit on bound parameters.
_CHUNK: Final = 500

#: Schema migrations, applied in order; ``PRAGMA user_version`` is the number applied. Each
#: is a script of statements without ``;`` inside them, or a tuple of single statements.
_MIGRATIONS: Final[tuple[str | tuple[str, ...], ...]] = (
    """
    CREATE TABLE records (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        name TEXT NOT NULL UNIQUE,
        kind TEXT NOT NULL,
        record_id TEXT NOT NULL,
        size INTEGER NOT NULL,
        data BLOB NOT NULL,
        state TEXT NOT NULL DEFAULT 'pending',
        claim_id TEXT,
        expires_at REAL NOT NULL DEFAULT 0,
        reason TEXT
    );
    CREATE INDEX records_pending ON records (state, kind, id);
    CREATE TABLE conversations (conversation_id TEXT PRIMARY KEY, owner TEXT NOT NULL);
    CREATE TABLE turns (
        id INTEGER PRIMARY KEY AUTOINCREMENT,
        conversation_id TEXT NOT NULL,
        turn TEXT NOT NULL
    );
    CREATE INDEX turns_by_conversation ON turns (conversation_id, id);
    CREATE TABLE flags (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE claim_members (claim_id TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (claim_id, name));
    CREATE INDEX claim_members_by_name ON claim_members (name);
    """,
    # 2: whose each record is (for deletions), conversation metadata, and the stream registry.
    (
        "ALTER TABLE records ADD COLUMN user_hash TEXT",
        "ALTER TABLE records ADD COLUMN conversation_id TEXT",
        "UPDATE records SET user_hash = json_extract(CAST(data AS TEXT), '$.metadata.user_id'),"
        " conversation_id = json_extract(CAST(data AS TEXT), '$.metadata.conversation_id')"
        " WHERE kind = 'transcripts'",
        "UPDATE records SET user_hash = json_extract(CAST(data AS TEXT), '$.user_id'),"
        " conversation_id = json_extract(CAST(data AS TEXT), '$.conversation_id') WHERE kind = 'feedback'",
        "CREATE INDEX records_by_conversation ON records (conversation_id)",
        "CREATE INDEX records_by_user ON records (user_hash)",
        "ALTER TABLE conversations ADD COLUMN created_at TEXT",
        "ALTER TABLE conversations ADD COLUMN topic_summary TEXT",
        "ALTER TABLE conversations ADD COLUMN last_message_at TEXT",
        "ALTER TABLE conversations ADD COLUMN message_count INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE conversations ADD COLUMN last_used_model TEXT",
        "ALTER TABLE conversations ADD COLUMN last_used_provider TEXT",
        "UPDATE conversations SET"
        " message_count = (SELECT count(*) FROM turns t WHERE t.conversation_id = conversations.conversation_id),"
        " created_at = (SELECT json_extract(turn, '$.timestamp') FROM turns t"
        "   WHERE t.conversation_id = conversations.conversation_id ORDER BY id LIMIT 1)",
        "UPDATE conversations SET (last_message_at, last_used_model, last_used_provider) ="
        " (SELECT json_extract(turn, '$.timestamp'), json_extract(turn, '$.model'), json_extract(turn, '$.provider')"
        "  FROM turns t WHERE t.conversation_id = conversations.conversation_id ORDER BY id DESC LIMIT 1)",
        "CREATE INDEX conversations_by_owner ON conversations (owner)",
        # The metadata follows the turns within the INSERT's own statement: no extra round trip.
        "CREATE TRIGGER turns_update_conversation AFTER INSERT ON turns BEGIN"
        " UPDATE conversations SET message_count = message_count + 1,"
        " last_message_at = json_extract(NEW.turn, '$.timestamp'),"
        " last_used_model = json_extract(NEW.turn, '$.model'),"
        " last_used_provider = json_extract(NEW.turn, '$.provider')"
        " WHERE conversation_id = NEW.conversation_id; END",
        "CREATE TABLE streams (request_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL,"
        " done INTEGER NOT NULL DEFAULT 0, interrupted INTEGER NOT NULL DEFAULT 0)",
    ),
    # Registrations forget expired streams: an index keeps that from scanning the registry.
    "CREATE INDEX streams_by_expiry ON streams (expires_at)",
)

_CONVERSATION_COLUMNS: Final = (
    "conversation_id, owner, created_at, last_message_at, message_count,"
    " last_used_model, last_used_provider, topic_summary"
)


def _info(row: Sequence[Any]) -> ConversationInfo:
    cid, owner, created_at, last_message_at, count, model, provider, summary = row
    return ConversationInfo(
        conversation_id=cid,
        owner=owner,
        created_at=created_at,
        last_message_at=last_message_at,
        message_count=count,
        last_used_model=model,
        last_used_provider=provider,
        topic_summary=summary,
    )


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


@attrs.frozen(kw_only=True)
class SqliteOptions:
    """``user_data_collection.storage.options`` of the sqlite backend."""

    #: The database file (for example /var/lib/lightspeed/store.db); required.
    path: str = ""
    synchronous: Literal["normal", "full"] = "normal"
    busy_timeout_seconds: float = 30


log = logging.getLogger("lightspeed_storage_sqlite")


class SqliteStorage(StorageBackend):
    """One SQLite database file (WAL mode) shared by the worker processes of one host."""

    supports_multiple_processes = True
    Options = SqliteOptions

    def __init__(self, *, options: Mapping[str, Any], collection: UserDataCollectionConfig) -> None:
        super().__init__(options=options, collection=collection)
        self.options: SqliteOptions
        self.path = Path(self.options.path).absolute()
        self.synchronous: str = self.options.synchronous
        self.busy_timeout = self.options.busy_timeout_seconds
        self._conn: aiosqlite.Connection | None = None
        # Opened (until aclose): the connection is made on first use when open could not make it.
        self._open = False
        # One connection runs one statement at a time, and a transaction spans several awaits:
        # the lock keeps another coroutine's statements out of it.
        self._lock = asyncio.Lock()

    @classmethod
    def validate_options(cls, options: SqliteOptions, collection: UserDataCollectionConfig) -> list[str]:
        problems = []
        if not options.path:
            problems.append("path: required, the SQLite database file (for example /var/lib/lightspeed/store.db)")
        if not options.busy_timeout_seconds > 0:
            problems.append(f"busy_timeout_seconds: must be a positive number, got {options.busy_timeout_seconds!r}")
        return problems

    def __repr__(self) -> str:
        return f"<SqliteStorage path={str(self.path)!r}>"

    # ------------------------------------------------------------------ plumbing

    @contextlib.asynccontextmanager
    async def _session(self, *, write: bool = False) -> AsyncIterator[aiosqlite.Connection]:
        """The connection, alone; inside ``BEGIN IMMEDIATE`` ... ``COMMIT`` when ``write``.

        SQLite errors become ``StorageUnavailable``; any exception rolls the transaction back.
        """
        async with self._lock:
            if not self._open:
                raise StorageUnavailable(f"the SQLite store {self.path} is not open")
            if self._conn is None:  # it could not be opened yet: try again now
                self._conn = await self._connect()
            conn = self._conn
            try:
                if not write:
                    yield conn
                    return
                await conn.execute("BEGIN IMMEDIATE")
                try:
                    yield conn
                except BaseException:
                    await conn.rollback()
                    raise
                await conn.commit()
            except sqlite3.Error as exc:
                raise StorageUnavailable(f"SQLite store {self.path} failed: {exc}") from exc

    async def open(self) -> None:
        """Open the database; when it cannot be opened (its directory cannot be created, the
        file is not a database), say so in one error line and open anyway: each operation tries
        again, so a bad volume does not stop the service and it heals without a restart."""
        async with self._lock:
            if self._open:
                return
            self._open = True
            try:
                self._conn = await self._connect()
            except StorageUnavailable as exc:
                log.error("%s; every operation of the store fails until this is fixed (tried again on each use)", exc)

    async def _connect(self) -> aiosqlite.Connection:
        try:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageUnavailable(f"cannot create the directory of {self.path}: {exc}") from exc
        try:
            conn = await aiosqlite.connect(self.path, isolation_level=None, timeout=self.busy_timeout)
        except sqlite3.Error as exc:
            raise StorageUnavailable(f"cannot open the SQLite store {self.path}: {exc}") from exc
        try:
            await conn.execute("PRAGMA journal_mode=WAL")
            await conn.execute(f"PRAGMA synchronous={self.synchronous.upper()}")
            await conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            await self._migrate(conn)
        except sqlite3.Error as exc:
            await conn.close()
            raise StorageUnavailable(f"cannot prepare the SQLite store {self.path}: {exc}") from exc
        except BaseException:
            await conn.close()
            raise
        return conn

    @staticmethod
    async def _migrate(conn: aiosqlite.Connection) -> None:
        """Apply the migrations this file has not had, in one transaction (idempotent)."""
        await conn.execute("BEGIN IMMEDIATE")
        try:
            (version,) = await (await conn.execute("PRAGMA user_version")).fetchone() or (0,)
            if version > len(_MIGRATIONS):
                raise StorageUnavailable(
                    f"the database schema is version {version}, newer than this plugin knows"
                    f" ({len(_MIGRATIONS)}); upgrade lightspeed-storage-sqlite"
                )
            for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
                statements = filter(str.strip, script.split(";")) if isinstance(script, str) else script
                for statement in statements:
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version={number}")
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()

    async def aclose(self) -> None:
        async with self._lock:  # writes already waiting for the lock go first
            self._open = False
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    await conn.close()

    async def ping(self) -> None:
        async with self._session(write=True) as conn:
            await conn.execute("SELECT 1 FROM flags LIMIT 1")

    # ------------------------------------------------------------------ records

    async def _put(self, ref: StoredRecord, data: bytes, *, user: str, conversation_id: str) -> StoredRecord:
        async with self._session() as conn:
            await conn.execute(
                "INSERT OR IGNORE INTO records (name, kind, record_id, size, data, user_hash, conversation_id)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (ref.name, ref.kind.value, ref.record_id, ref.size, data, user, conversation_id),
            )
        return ref

    async def put_feedback(self, record: FeedbackRecord) -> StoredRecord:
        data = record.to_json()
        return await self._put(
            stored_record(record, data), data, user=record.user_id, conversation_id=record.conversation_id
        )

    async def put_transcript(self, record: Transcript) -> StoredRecord:
        data = record.to_json()
        return await self._put(
            stored_record(record, data), data, user=record.user_id, conversation_id=record.conversation_id
        )

    # ------------------------------------------------------------------ conversations

    async def set_conversation_owner(self, conversation_id: str, *, owner: str) -> str:
        check_conversation_id(conversation_id)
        check_user_hash(owner)
        async with self._session() as conn:
            await conn.execute(
                "INSERT OR IGNORE INTO conversations (conversation_id, owner, created_at) VALUES (?, ?, ?)",
                (conversation_id, owner, utc_timestamp()),
            )
            row = await (
                await conn.execute("SELECT owner FROM conversations WHERE conversation_id = ?", (conversation_id,))
            ).fetchone()
        assert row is not None
        return str(row[0])

    async def get_conversation_owner(self, conversation_id: str) -> str | None:
        async with self._session() as conn:
            row = await (
                await conn.execute("SELECT owner FROM conversations WHERE conversation_id = ?", (conversation_id,))
            ).fetchone()
        return None if row is None else str(row[0])

    async def append_turn(self, conversation_id: str, *, turn: ConversationTurn) -> None:
        check_conversation_id(conversation_id)
        text = json.dumps(turn.to_dict(), ensure_ascii=False)
        async with self._session() as conn:
            await conn.execute("INSERT INTO turns (conversation_id, turn) VALUES (?, ?)", (conversation_id, text))

    async def get_turns(self, conversation_id: str, *, limit: int) -> list[ConversationTurn]:
        if limit <= 0:
            return []
        async with self._session() as conn:
            rows = await conn.execute_fetchall(
                "SELECT turn FROM (SELECT id, turn FROM turns WHERE conversation_id = ? ORDER BY id DESC LIMIT ?)"
                " ORDER BY id",
                (conversation_id, limit),
            )
        return [ConversationTurn.from_dict(json.loads(row[0])) for row in rows]

    async def list_conversations(
        self, owner: str | None, *, limit: int | None = None, offset: int = 0
    ) -> ConversationPage:
        if (limit is not None and limit < 1) or offset < 0:
            raise ValueError(f"limit must be at least 1 and offset at least 0, got {limit!r} and {offset!r}")
        where, args = ("WHERE owner = ?", (owner,)) if owner is not None else ("", ())
        async with self._session() as conn:
            rows = await conn.execute_fetchall(
                f"SELECT {_CONVERSATION_COLUMNS} FROM conversations {where}"
                " ORDER BY coalesce(last_message_at, created_at) DESC, conversation_id LIMIT ? OFFSET ?",
                (*args, -1 if limit is None else limit, offset),
            )
            counted = await (await conn.execute(f"SELECT count(*) FROM conversations {where}", args)).fetchone()
        total = counted[0] if counted else 0
        return ConversationPage(conversations=tuple(_info(row) for row in rows), total=int(total))

    async def get_conversation(self, conversation_id: str) -> ConversationInfo | None:
        async with self._session() as conn:
            row = await (
                await conn.execute(
                    f"SELECT {_CONVERSATION_COLUMNS} FROM conversations WHERE conversation_id = ?", (conversation_id,)
                )
            ).fetchone()
        return None if row is None else _info(row)

    async def set_topic_summary(self, conversation_id: str, *, topic_summary: str | None) -> bool:
        async with self._session() as conn:
            cursor = await conn.execute(
                "UPDATE conversations SET topic_summary = ? WHERE conversation_id = ?", (topic_summary, conversation_id)
            )
        return cursor.rowcount > 0

    @staticmethod
    async def _forget(conn: aiosqlite.Connection, conversation_ids: Sequence[str]) -> Deletion:
        conversations = turns = 0
        for part in _chunks(conversation_ids):
            marks = _marks(len(part))
            turns += (await conn.execute(f"DELETE FROM turns WHERE conversation_id IN ({marks})", part)).rowcount
            conversations += (
                await conn.execute(f"DELETE FROM conversations WHERE conversation_id IN ({marks})", part)
            ).rowcount
        return Deletion(conversations=conversations, turns=turns)

    @staticmethod
    async def _delete_records(conn: aiosqlite.Connection, where: str, args: Sequence[Any]) -> Deletion:
        """Delete the records ``where`` selects; those a claim holds are reported in flight."""
        rows = await conn.execute_fetchall(
            "SELECT name, kind, state = 'pending' AND EXISTS (SELECT 1 FROM claim_members m WHERE m.name = r.name)"
            f" FROM records r WHERE {where} ORDER BY id",
            tuple(args),
        )
        names = [row[0] for row in rows]
        for part in _chunks(names):
            await conn.execute(f"DELETE FROM records WHERE name IN ({_marks(len(part))})", tuple(part))
            await conn.execute(f"DELETE FROM claim_members WHERE name IN ({_marks(len(part))})", tuple(part))
        return Deletion(
            transcripts=sum(1 for row in rows if row[1] == RecordKind.TRANSCRIPT.value),
            feedback=sum(1 for row in rows if row[1] == RecordKind.FEEDBACK.value),
            in_flight=tuple(row[0] for row in rows if row[2]),
        )

    async def delete_conversation(self, conversation_id: str, *, records: bool = True) -> Deletion:
        async with self._session(write=True) as conn:
            deletion = await self._forget(conn, [conversation_id])
            if records:
                deletion += await self._delete_records(conn, "conversation_id = ?", [conversation_id])
        return deletion

    async def purge_user(self, owner: str) -> Deletion:
        async with self._session(write=True) as conn:
            rows = await conn.execute_fetchall("SELECT conversation_id FROM conversations WHERE owner = ?", (owner,))
            owned = [row[0] for row in rows]
            deletion = await self._forget(conn, owned)
            deletion += await self._delete_records(conn, "user_hash = ?", [owner])
            for part in _chunks(owned):
                deletion += await self._delete_records(conn, f"conversation_id IN ({_marks(len(part))})", part)
        return deletion

    # ------------------------------------------------------------------ streams

    async def register_stream(self, request_id: str, *, owner: str, ttl_seconds: float) -> bool:
        now = time.time()
        async with self._session(write=True) as conn:
            await conn.execute("DELETE FROM streams WHERE expires_at <= ?", (now,))
            cursor = await conn.execute(
                "INSERT OR IGNORE INTO streams (request_id, owner, expires_at) VALUES (?, ?, ?)",
                (request_id, owner, now + ttl_seconds),
            )
        return cursor.rowcount > 0

    async def interrupt_stream(self, request_id: str, *, owner: str) -> StreamInterrupt:
        async with self._session(write=True) as conn:
            row = await (
                await conn.execute(
                    "SELECT owner, done OR interrupted FROM streams WHERE request_id = ? AND expires_at > ?",
                    (request_id, time.time()),
                )
            ).fetchone()
            if row is None:
                return StreamInterrupt.NOT_FOUND
            if row[0] != owner:
                return StreamInterrupt.FORBIDDEN
            if row[1]:
                return StreamInterrupt.ALREADY_DONE
            await conn.execute("UPDATE streams SET interrupted = 1 WHERE request_id = ?", (request_id,))
        return StreamInterrupt.INTERRUPTED

    async def interrupted_streams(self, request_ids: Collection[str]) -> set[str]:
        found: set[str] = set()
        async with self._session() as conn:
            for part in _chunks(list(request_ids)):
                rows = await conn.execute_fetchall(
                    f"SELECT request_id FROM streams WHERE interrupted = 1 AND request_id IN ({_marks(len(part))})",
                    tuple(part),
                )
                found.update(row[0] for row in rows)
        return found

    async def finish_stream(self, request_id: str, *, keep_seconds: float) -> None:
        async with self._session() as conn:
            await conn.execute(
                "UPDATE streams SET done = 1, expires_at = ? WHERE request_id = ?",
                (time.time() + keep_seconds, request_id),
            )

    # ------------------------------------------------------------------ flags

    async def get_flag(self, name: str) -> bool | None:
        async with self._session() as conn:
            row = await (await conn.execute("SELECT value FROM flags WHERE name = ?", (name,))).fetchone()
        return None if row is None else bool(row[0])

    async def set_flag(self, name: str, *, value: bool) -> bool | None:
        check_flag_name(name)
        async with self._session(write=True) as conn:
            row = await (await conn.execute("SELECT value FROM flags WHERE name = ?", (name,))).fetchone()
            await conn.execute("INSERT OR REPLACE INTO flags (name, value) VALUES (?, ?)", (name, int(value)))
        return None if row is None else bool(row[0])

    # ------------------------------------------------------------------ collection

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
        kind_values = [RecordKind(k).value for k in kinds]
        claim_id = str(uuid.uuid4())
        async with self._session(write=True) as conn:
            now = time.time()
            expires_at = now + lease_seconds
            rows = await conn.execute_fetchall(
                "SELECT id, name, kind, record_id, size FROM records"
                f" WHERE state = 'pending' AND kind IN ({_marks(len(kind_values))})"
                " AND (claim_id IS NULL OR expires_at <= ?) ORDER BY id LIMIT ?",
                (*kind_values, now, max_records),
            )
            chosen = fill_claim(
                (
                    StoredRecord(kind=RecordKind(kind), record_id=record_id, name=name, size=size)
                    for _, name, kind, record_id, size in rows
                ),
                max_records=max_records,
                max_bytes=max_bytes,
            )
            for part in _chunks([r.name for r in chosen]):
                await conn.execute(
                    f"UPDATE records SET claim_id = ?, expires_at = ? WHERE name IN ({_marks(len(part))})",
                    (claim_id, expires_at, *part),
                )
            await conn.executemany(
                "INSERT INTO claim_members (claim_id, name) VALUES (?, ?)", [(claim_id, r.name) for r in chosen]
            )
        return Claim(claim_id=claim_id, owner=owner, expires_at=expires_at, records=tuple(chosen))

    async def read_record(self, record: StoredRecord) -> bytes:
        async with self._session() as conn:
            row = await (await conn.execute("SELECT data FROM records WHERE name = ?", (record.name,))).fetchone()
        if row is None:
            raise RecordNotFound(f"record {record.name} does not exist (any more)")
        return bytes(row[0])

    async def read_many(self, records: Sequence[StoredRecord]) -> list[bytes | None]:
        """The bytes of each record in order (``None`` for a deleted one), in one query per 500."""
        found: dict[str, bytes] = {}
        async with self._session() as conn:
            for part in _chunks([r.name for r in records]):
                rows = await conn.execute_fetchall(
                    f"SELECT name, data FROM records WHERE name IN ({_marks(len(part))})", tuple(part)
                )
                found.update((name, bytes(data)) for name, data in rows)
        return [found.get(r.name) for r in records]

    @staticmethod
    async def _members(conn: aiosqlite.Connection, claim: Claim, records: Sequence[StoredRecord] | None) -> list[str]:
        """The names among ``records`` (all of the claim's when ``None``) still in the claim, in order."""
        rows = await conn.execute_fetchall("SELECT name FROM claim_members WHERE claim_id = ?", (claim.claim_id,))
        members = {row[0] for row in rows}
        return [r.name for r in (claim.records if records is None else records) if r.name in members]

    @staticmethod
    async def _lost(conn: aiosqlite.Connection, claim: Claim, names: Sequence[str], now: float) -> list[str]:
        """The names that another unexpired claim holds."""
        lost: list[str] = []
        for part in _chunks(names):
            rows = await conn.execute_fetchall(
                f"SELECT name FROM records WHERE name IN ({_marks(len(part))}) AND state = 'pending'"
                " AND claim_id IS NOT NULL AND claim_id <> ? AND expires_at > ?",
                (*part, claim.claim_id, now),
            )
            lost.extend(row[0] for row in rows)
        return lost

    @staticmethod
    async def _leave(conn: aiosqlite.Connection, claim_id: str | None, names: Sequence[str]) -> None:
        """Take ``names`` out of the claim (out of every claim when ``claim_id`` is ``None``)."""
        for part in _chunks(names):
            if claim_id is None:
                await conn.execute(f"DELETE FROM claim_members WHERE name IN ({_marks(len(part))})", tuple(part))
            else:
                await conn.execute(
                    f"DELETE FROM claim_members WHERE claim_id = ? AND name IN ({_marks(len(part))})",
                    (claim_id, *part),
                )

    async def renew(self, claim: Claim, *, lease_seconds: float) -> Claim:
        async with self._session(write=True) as conn:
            now = time.time()
            names = await self._members(conn, claim, None)
            lost = await self._lost(conn, claim, names, now)
            if lost:
                raise ClaimLost(
                    f"claim {claim.claim_id}: {len(lost)} record(s) were taken over after the lease expired"
                    f" (first: {lost[0]})"
                )
            expires_at = now + lease_seconds
            mine: set[str] = set()
            for part in _chunks(names):
                rows = await conn.execute_fetchall(
                    f"UPDATE records SET claim_id = ?, expires_at = ? WHERE state = 'pending'"
                    f" AND name IN ({_marks(len(part))}) RETURNING name",
                    (claim.claim_id, expires_at, *part),
                )
                mine.update(row[0] for row in rows)
        return Claim(
            claim_id=claim.claim_id,
            owner=claim.owner,
            expires_at=expires_at,
            records=tuple(r for r in claim.records if r.name in mine),
        )

    async def _settle(
        self, claim: Claim, records: Sequence[StoredRecord] | None, *, delete: bool, state: str, reason: str | None
    ) -> None:
        async with self._session(write=True) as conn:
            names = await self._members(conn, claim, records)
            lost = await self._lost(conn, claim, names, time.time())
            if lost:
                raise ClaimLost(
                    f"claim {claim.claim_id}: {len(lost)} record(s) were taken over by another collector"
                    f" after the lease expired (first: {lost[0]}); nothing was changed"
                )
            for part in _chunks(names):
                where = f"name IN ({_marks(len(part))})"
                if delete:
                    await conn.execute(f"DELETE FROM records WHERE {where}", tuple(part))
                else:
                    await conn.execute(
                        f"UPDATE records SET state = ?, reason = ?, claim_id = NULL WHERE {where}",
                        (state, reason, *part),
                    )
            await self._leave(conn, None, names)

    async def ack(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None, delete: bool) -> None:
        await self._settle(claim, records, delete=delete, state="exported", reason=None)

    async def release(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None) -> None:
        async with self._session(write=True) as conn:
            names = await self._members(conn, claim, records)
            for part in _chunks(names):
                await conn.execute(
                    f"UPDATE records SET claim_id = NULL WHERE claim_id = ? AND name IN ({_marks(len(part))})",
                    (claim.claim_id, *part),
                )
            await self._leave(conn, claim.claim_id, names)

    async def set_aside(self, claim: Claim, *, records: Sequence[StoredRecord], reason: str) -> None:
        await self._settle(claim, records, delete=False, state="aside", reason=reason)

    async def pending_stats(self) -> PendingStats:
        counts = {k: 0 for k in RecordKind}
        sizes = {k: 0 for k in RecordKind}
        async with self._session() as conn:
            rows = await conn.execute_fetchall(
                "SELECT kind, count(*), coalesce(sum(size), 0) FROM records WHERE state = 'pending' GROUP BY kind"
            )
        for kind, n, size in rows:
            counts[RecordKind(kind)] = n
            sizes[RecordKind(kind)] = size
        return PendingStats(records=counts, bytes=sizes)
