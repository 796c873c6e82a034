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
import sqlite3
import time
import uuid
from collections.abc import AsyncIterator, Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Final

import aiosqlite

from lightspeed.config import UserDataCollectionConfig
from lightspeed.records import (
    ConversationTurn,
    FeedbackRecord,
    RecordKind,
    Transcript,
    is_valid_conversation_id,
    is_valid_record_id,
    is_valid_user_hash,
)
from lightspeed.storage import (
    Claim,
    ClaimLost,
    PendingStats,
    RecordNotFound,
    StorageBackend,
    StorageUnavailable,
    StoredRecord,
)

__all__ = ["SqliteStorage"]

__version__ = "0.1.0"

_KNOWN_OPTIONS: Final = frozenset({"path", "synchronous", "busy_timeout_seconds"})
_SYNCHRONOUS: Final = ("normal", "full")
#: Names per ``IN (...)`` list, well below SQLite's limit on bound parameters.
_CHUNK: Final = 500

#: Schema migrations, applied in order; ``PRAGMA user_version`` is the number applied.
_MIGRATIONS: Final = (
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
)


def _chunks(items: Sequence[str]) -> Iterator[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


class SqliteStorage(StorageBackend):
    """One SQLite database file (WAL mode) shared by the worker processes of one host."""

    supports_multiple_processes = True

    def __init__(self, *, options: Mapping[str, Any], collection: UserDataCollectionConfig) -> None:
        super().__init__(options=options, collection=collection)
        self.path = Path(str(options["path"])).absolute()
        self.synchronous: str = options.get("synchronous", "normal")
        self.busy_timeout = float(options.get("busy_timeout_seconds", 30))
        self._conn: aiosqlite.Connection | None = None
        # One connection runs one statement at a time, and a transaction spans several awaits:
        # the lock keeps another coroutine's statements out of it.
        self._lock = asyncio.Lock()

    @classmethod
    def check_options(cls, options: Mapping[str, Any], collection: UserDataCollectionConfig) -> list[str]:
        known = ", ".join(sorted(_KNOWN_OPTIONS))
        problems = [f"{key}: unknown option (known: {known})" for key in sorted(set(options) - _KNOWN_OPTIONS)]
        path = options.get("path")
        if not isinstance(path, str) or not path:
            problems.append("path: required, the SQLite database file (for example /var/lib/lightspeed/store.db)")
        if options.get("synchronous", "normal") not in _SYNCHRONOUS:
            problems.append(f"synchronous: must be one of {', '.join(_SYNCHRONOUS)}, got {options['synchronous']!r}")
        timeout = options.get("busy_timeout_seconds", 30)
        if isinstance(timeout, bool) or not isinstance(timeout, int | float) or timeout <= 0:
            problems.append(f"busy_timeout_seconds: must be a positive number, got {timeout!r}")
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
            conn = self._conn
            if conn is None:
                raise StorageUnavailable(f"the SQLite store {self.path} is not open")
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
        if self._conn is not None:
            return
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
        self._conn = conn

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
                for statement in filter(str.strip, script.split(";")):
                    await conn.execute(statement)
                await conn.execute(f"PRAGMA user_version={number}")
        except BaseException:
            await conn.rollback()
            raise
        await conn.commit()

    async def aclose(self) -> None:
        async with self._lock:  # writes already waiting for the lock go first
            conn, self._conn = self._conn, None
            if conn is not None:
                with contextlib.suppress(sqlite3.Error):
                    await conn.close()

    async def ping(self) -> None:
        async with self._session(write=True) as conn:
            await conn.execute("SELECT 1 FROM flags LIMIT 1")

    # ------------------------------------------------------------------ records

    async def _put(self, ref: StoredRecord, data: bytes) -> StoredRecord:
        async with self._session() as conn:
            await conn.execute(
                "INSERT OR IGNORE INTO records (name, kind, record_id, size, data) VALUES (?, ?, ?, ?, ?)",
                (ref.name, ref.kind.value, ref.record_id, ref.size, data),
            )
        return ref

    async def put_feedback(self, record: FeedbackRecord) -> StoredRecord:
        if not is_valid_record_id(record.record_id):
            raise ValueError(f"invalid record id {record.record_id!r}")
        data = record.to_json()
        ref = StoredRecord(
            kind=RecordKind.FEEDBACK,
            record_id=record.record_id,
            name=f"feedback/{record.record_id}.json",
            size=len(data),
        )
        return await self._put(ref, data)

    async def put_transcript(self, record: Transcript) -> StoredRecord:
        user, conv, rid = record.user_id, record.conversation_id, record.record_id
        if not (is_valid_user_hash(user) and is_valid_conversation_id(conv) and is_valid_record_id(rid)):
            raise ValueError(f"invalid user hash, conversation id or record id in transcript {rid!r}")
        data = record.to_json()
        name = f"transcripts/{user}/{conv}/{rid}.json"
        return await self._put(StoredRecord(kind=RecordKind.TRANSCRIPT, record_id=rid, name=name, size=len(data)), data)

    # ------------------------------------------------------------------ conversations

    async def set_conversation_owner(self, conversation_id: str, *, owner: str) -> str:
        async with self._session() as conn:
            await conn.execute(
                "INSERT OR IGNORE INTO conversations (conversation_id, owner) VALUES (?, ?)", (conversation_id, owner)
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

    async def append_turn(self, conversation_id: str, turn: ConversationTurn) -> None:
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

    # ------------------------------------------------------------------ flags

    async def get_flag(self, name: str) -> bool | None:
        async with self._session() as conn:
            row = await (await conn.execute("SELECT value FROM flags WHERE name = ?", (name,))).fetchone()
        return None if row is None else bool(row[0])

    async def set_flag(self, name: str, value: bool) -> bool | None:
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
        if max_records < 1 or max_bytes < 1 or lease_seconds <= 0:
            raise ValueError("max_records, max_bytes and lease_seconds must be positive")
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
            chosen: list[StoredRecord] = []
            total = 0
            for _, name, kind, record_id, size in rows:
                if not chosen and size > max_bytes:
                    chosen.append(StoredRecord(kind=RecordKind(kind), record_id=record_id, name=name, size=size))
                    break  # alone, so the caller can set it aside
                if total + size > max_bytes:
                    break
                chosen.append(StoredRecord(kind=RecordKind(kind), record_id=record_id, name=name, size=size))
                total += size
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

    async def set_aside(self, claim: Claim, records: Sequence[StoredRecord], *, reason: str) -> None:
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
