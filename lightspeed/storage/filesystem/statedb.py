"""The state database: owners, history, flags, claims and exported names in one SQLite file.

``{state_path}/state.sqlite3`` (with SQLite's ``-wal`` and ``-shm`` beside it), in WAL mode:
readers never wait for the writer, every process sharing the directory sees a commit at
once, and a transaction either commits or leaves nothing. The writer lane's thread owns the
only connection that writes (:class:`WriterContext`); the pool's threads read through
connections of their own (:class:`ReaderContext`), and so does the event loop for the query
path's reads (:class:`LoopReader`). See ``docs/decisions/`` for why SQLite
rather than files.
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import attrs

from lightspeed.storage.errors import StorageUnavailable
from lightspeed.storage.filesystem.files import create, describe, ensure_dir, fsync_dir, unusable

__all__ = [
    "DB_NAME",
    "DbFile",
    "LoopReader",
    "ReaderContext",
    "WriterContext",
    "busy",
    "migrate",
    "ping",
    "unavailable",
]

DB_NAME: Final = "state.sqlite3"

#: Schema migrations, applied in order; ``PRAGMA user_version`` is the number applied. Each
#: is a script of statements without ``;`` inside them, or a tuple of single statements.
_MIGRATIONS: Final[tuple[str | tuple[str, ...], ...]] = (
    """
    CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
    CREATE TABLE owners (conversation_id TEXT PRIMARY KEY, owner TEXT NOT NULL) WITHOUT ROWID;
    CREATE TABLE turns (id INTEGER PRIMARY KEY, conversation_id TEXT NOT NULL, turn TEXT NOT NULL);
    CREATE INDEX turns_by_conversation ON turns (conversation_id, id);
    CREATE TABLE flags (name TEXT PRIMARY KEY, value INTEGER NOT NULL);
    CREATE TABLE claims (
        seq INTEGER PRIMARY KEY AUTOINCREMENT,
        claim_id TEXT NOT NULL UNIQUE,
        owner TEXT NOT NULL,
        expires_at REAL NOT NULL
    );
    CREATE TABLE members (claim_id TEXT NOT NULL, name TEXT NOT NULL, PRIMARY KEY (claim_id, name)) WITHOUT ROWID;
    CREATE INDEX members_by_name ON members (name);
    CREATE TABLE exported (id INTEGER PRIMARY KEY, name TEXT NOT NULL UNIQUE)
    """,
    # 2: conversation metadata beside each owner (kept in step with the turns by a trigger),
    # and the registry of running streams (for interrupts from any worker).
    (
        "ALTER TABLE owners ADD COLUMN created_at TEXT",
        "ALTER TABLE owners ADD COLUMN topic_summary TEXT",
        "ALTER TABLE owners ADD COLUMN last_message_at TEXT",
        "ALTER TABLE owners ADD COLUMN message_count INTEGER NOT NULL DEFAULT 0",
        "ALTER TABLE owners ADD COLUMN last_used_model TEXT",
        "ALTER TABLE owners ADD COLUMN last_used_provider TEXT",
        "UPDATE owners SET"
        " message_count = (SELECT count(*) FROM turns t WHERE t.conversation_id = owners.conversation_id),"
        " created_at = (SELECT json_extract(turn, '$.timestamp') FROM turns t"
        "   WHERE t.conversation_id = owners.conversation_id ORDER BY id LIMIT 1)",
        "UPDATE owners SET (last_message_at, last_used_model, last_used_provider) ="
        " (SELECT json_extract(turn, '$.timestamp'), json_extract(turn, '$.model'), json_extract(turn, '$.provider')"
        "  FROM turns t WHERE t.conversation_id = owners.conversation_id ORDER BY id DESC LIMIT 1)",
        "CREATE INDEX owners_by_owner ON owners (owner)",
        "CREATE TRIGGER turns_update_owner AFTER INSERT ON turns BEGIN"
        " UPDATE owners SET message_count = message_count + 1,"
        " last_message_at = json_extract(NEW.turn, '$.timestamp'),"
        " last_used_model = json_extract(NEW.turn, '$.model'),"
        " last_used_provider = json_extract(NEW.turn, '$.provider')"
        " WHERE conversation_id = NEW.conversation_id; END",
        "CREATE TABLE streams (request_id TEXT PRIMARY KEY, owner TEXT NOT NULL, expires_at REAL NOT NULL,"
        " done INTEGER NOT NULL DEFAULT 0, interrupted INTEGER NOT NULL DEFAULT 0)",
    ),
    # 3: every stream registration forgets the expired entries; without an index that scanned
    # the whole registry (some 20,000 rows at 35 streams/s) and CPU per request grew with it.
    "CREATE INDEX streams_by_expiry ON streams (expires_at)",
    # 4: a claim's records in one value of its row (claims.py), not a row each.
    (
        "ALTER TABLE claims ADD COLUMN names TEXT NOT NULL DEFAULT ''",
        "UPDATE claims SET names = coalesce((SELECT group_concat(name, char(10)) FROM members m"
        " WHERE m.claim_id = claims.claim_id), '')",
        "DROP TABLE members",
    ),
)


@attrs.frozen
class DbFile:
    """Where the database is and how to open it."""

    path: Path
    file_mode: int
    dir_mode: int
    fsync: bool
    busy_timeout: float = 30.0

    def connect(self) -> tuple[sqlite3.Connection, tuple[int, int]]:
        """A connection in autocommit mode (transactions are explicit), WAL journal, and
        ``synchronous`` FULL with ``durability: fsync``, NORMAL otherwise (a commit survives the
        process being killed; the last ones may be lost on power failure); with the file's
        identity, to notice when it is removed or replaced under us."""
        try:
            ensure_dir(self.path.parent, self.dir_mode)
            with contextlib.suppress(FileExistsError):  # SQLite gives -wal and -shm the same mode
                os.close(create(self.path, os.O_RDWR | os.O_EXCL, self.file_mode))
        except OSError as exc:
            raise StorageUnavailable(unusable("state_path", self.path.parent, exc)) from exc
        conn = sqlite3.connect(self.path, isolation_level=None, timeout=self.busy_timeout, check_same_thread=False)
        try:
            conn.execute("PRAGMA journal_mode=WAL")
            conn.execute(f"PRAGMA synchronous={'FULL' if self.fsync else 'NORMAL'}")
            migrate(conn)
            st = os.stat(self.path)
        except BaseException:
            conn.close()
            raise
        return conn, (st.st_dev, st.st_ino)

    def replaced(self, identity: tuple[int, int]) -> bool:
        """Whether the file is gone or another one now (the state directory was removed)."""
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return True
        return (st.st_dev, st.st_ino) != identity


def migrate(conn: sqlite3.Connection) -> None:
    """Create or upgrade the schema, in one transaction (concurrent openers wait for each other)."""
    if conn.execute("PRAGMA user_version").fetchone()[0] == len(_MIGRATIONS):
        return  # the usual case: no write lock needed
    conn.execute("BEGIN IMMEDIATE")
    try:
        (version,) = conn.execute("PRAGMA user_version").fetchone()
        if version > len(_MIGRATIONS):
            raise StorageUnavailable(
                f"the state database's schema is version {version}, newer than this lightspeed knows"
                f" ({len(_MIGRATIONS)}); upgrade lightspeed"
            )
        for number, script in enumerate(_MIGRATIONS[version:], start=version + 1):
            statements = filter(str.strip, script.split(";")) if isinstance(script, str) else script
            for statement in statements:
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version={number}")
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


class WriterContext:
    """The writer lane's thread: one connection, one transaction per batch (group commit).

    Jobs write through :meth:`transaction`, a savepoint inside the batch's transaction, so a
    job that fails leaves nothing while the others of its batch commit. Record files written
    with ``durability: fsync`` name their directory in :attr:`dirs`; the batch fsyncs each
    once, after the commit.

    The connection is opened on first use, and again by the next job after opening failed (a
    state directory that cannot be created or written yet): record files, which need no
    connection, are written meanwhile, and the database works once its directory does, without
    a restart. ``on_connect`` runs after each successful opening (the import of the old layout).
    """

    def __init__(self, db: DbFile, *, on_connect: Callable[[WriterContext], object] | None = None) -> None:
        self.db = db
        self._on_connect = on_connect
        self._conn: sqlite3.Connection | None = None
        self._identity = (0, 0)
        self.fsync = db.fsync
        self.dirs: set[str] = set()
        self._in_txn = False
        self._joined = False
        self._checked = False

    @property
    def conn(self) -> sqlite3.Connection:
        """The connection; opened on first use, and anew (once per batch at most) if the file was removed."""
        if self._conn is not None and not self._checked and not self._in_txn:
            self._checked = True
            if self.db.replaced(self._identity):
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
                self._conn = None
        if self._conn is None:
            self._connect()
        assert self._conn is not None
        return self._conn

    def _connect(self) -> None:
        self._conn, self._identity = self.db.connect()
        self._checked = True
        if self._on_connect is None:
            return
        try:
            self._on_connect(self)
        except BaseException:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
            raise

    def single(self) -> sqlite3.Connection:
        """The connection, inside the batch's transaction, for a job that writes with **one**
        statement: SQLite undoes a statement that fails, so it needs no savepoint of its own
        (two statements fewer per job)."""
        self._joined = True
        conn = self.conn
        if not self._in_txn:
            conn.execute("BEGIN IMMEDIATE")
            self._in_txn = True
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """A savepoint inside the batch's transaction, for a job of several statements."""
        conn = self.single()
        conn.execute("SAVEPOINT job")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK TO job")
            conn.execute("RELEASE job")
            raise
        conn.execute("RELEASE job")

    def sync_dir(self, directory: str) -> None:
        """Have the batch fsync ``directory`` (with ``durability: fsync``)."""
        if self.fsync:
            self._joined = True
            self.dirs.add(directory)

    def joined(self) -> bool:
        joined, self._joined = self._joined, False
        return joined

    def end_batch(self) -> BaseException | None:
        failure: BaseException | None = None
        self._checked = False
        if self._in_txn:
            self._in_txn = False
            assert self._conn is not None  # a transaction began on it
            try:
                self._conn.execute("COMMIT")
            except sqlite3.Error as exc:
                failure = exc
                with contextlib.suppress(sqlite3.Error):
                    self._conn.execute("ROLLBACK")
        dirs, self.dirs = self.dirs, set()
        for directory in dirs:
            try:
                fsync_dir(directory)
            except OSError as exc:  # renamed, but not known to be durable: report it
                failure = failure or exc
        return failure

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class ReaderContext:
    """A pool thread: a reading connection of its own, opened on first use (and anew if the
    file was removed)."""

    def __init__(self, db: DbFile) -> None:
        self.db = db
        self._conn: sqlite3.Connection | None = None
        self._identity = (0, 0)

    @property
    def conn(self) -> sqlite3.Connection:
        if self._conn is not None and self.db.replaced(self._identity):
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            self._conn = None
        if self._conn is None:
            self._conn, self._identity = self.db.connect()
        return self._conn

    def joined(self) -> bool:
        return False

    def end_batch(self) -> BaseException | None:
        return None

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()


class LoopReader:
    """The event loop's own reading connection, for the query path's reads (an owner, a
    history): a few index lookups in pages the cache holds, cheaper than a hand-over to a thread
    and back (decision query-05). It never waits: SQLite's busy timeout is 0 on it, and a read
    it cannot do at once (the database busy, the connection not made yet, the file replaced)
    goes to a pool thread instead (:meth:`FilesystemStorage._query_read`). The connection is
    made in a thread (:meth:`connect`; making one may wait for another process's migration)
    and handed to the loop (:meth:`adopt`)."""

    def __init__(self, db: DbFile) -> None:
        self.db = db
        self._conn: sqlite3.Connection | None = None
        self._identity = (0, 0)

    def current(self) -> sqlite3.Connection | None:
        """The connection, unless there is none or the file was removed or replaced since."""
        if self._conn is not None and self.db.replaced(self._identity):
            self.close()
        return self._conn

    def connect(self) -> tuple[sqlite3.Connection, tuple[int, int]] | None:
        """A new connection for :meth:`adopt` (blocking: run in a thread); ``None`` when the
        database cannot be opened (the read that asked reports why)."""
        try:
            conn, identity = self.db.connect()
        except (StorageUnavailable, sqlite3.Error, OSError):
            return None
        conn.execute("PRAGMA busy_timeout = 0")
        return conn, identity

    def adopt(self, made: tuple[sqlite3.Connection, tuple[int, int]] | None) -> None:
        if made is not None:
            self.close()
            self._conn, self._identity = made

    def close(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(sqlite3.Error):
                conn.close()


def busy(exc: sqlite3.Error) -> bool:
    """Whether SQLite refused because another connection holds a lock (try again elsewhere)."""
    return (getattr(exc, "sqlite_errorcode", 0) & 0xFF) in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def ping(ctx: WriterContext, stamp: str) -> None:
    """A real write: fails when the database cannot take one (disk full, read-only)."""
    with ctx.transaction() as conn:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('ping', ?)", (stamp,))


def unavailable(exc: BaseException, where: Path) -> BaseException:
    """The error a waiting request gets for ``exc``: store failures become ``StorageUnavailable``."""
    if isinstance(exc, sqlite3.Error):
        return StorageUnavailable(f"the state database {where / DB_NAME} failed: {exc}")
    if isinstance(exc, OSError):
        return StorageUnavailable(f"filesystem store failed: {describe(exc)} ({exc.filename or where})")
    return exc
