"""The state database: owners, history, flags, claims and exported names in one SQLite file.

``{state_path}/state.sqlite3`` (with SQLite's ``-wal`` and ``-shm`` beside it), in WAL mode:
readers never wait for the writer, every process sharing the directory sees a commit at
once, and a transaction either commits or leaves nothing. The writer lane's thread owns the
only connection that writes (:class:`WriterContext`); the pool's threads read through
connections of their own (:class:`ReaderContext`). See ``docs/decisions/`` for why SQLite
rather than files.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import sqlite3
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Final

import attrs

from lightspeed.records import ConversationTurn, is_valid_conversation_id, utc_timestamp
from lightspeed.storage.errors import StorageUnavailable
from lightspeed.storage.filesystem.files import create, describe, ensure_dir, fsync_dir, unusable

__all__ = ["DB_NAME", "DbFile", "ReaderContext", "WriterContext", "import_old_layout", "migrate"]

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

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        self._joined = True
        conn = self.conn
        if not self._in_txn:
            conn.execute("BEGIN IMMEDIATE")
            self._in_txn = True
        self.conn.execute("SAVEPOINT job")
        try:
            yield self.conn
        except BaseException:
            self.conn.execute("ROLLBACK TO job")
            self.conn.execute("RELEASE job")
            raise
        self.conn.execute("RELEASE job")

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


# ---------------------------------------------------------------------- owners, history, flags


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
    """A query's rows in one savepoint: the owner of a new conversation (insert-if-absent),
    then its turn; returns the owner recorded (``None`` when ``owner`` was not given)."""
    with ctx.transaction() as conn:
        recorded = None if owner is None else _insert_owner(conn, conversation_id, owner)
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


def ping(ctx: WriterContext, stamp: str) -> None:
    """A real write: fails when the database cannot take one (disk full, read-only)."""
    with ctx.transaction() as conn:
        conn.execute("INSERT OR REPLACE INTO meta (key, value) VALUES ('ping', ?)", (stamp,))


# ---------------------------------------------------------------------- the layout before the database

#: What the state directory held before the database (lightspeed 0.1 development versions).
_OLD_ENTRIES: Final = ("conversations", "flags", "claims", "exported.log", "lock")


def import_old_layout(ctx: WriterContext, state_root: Path) -> int:
    """Import the owners, history, flags and exported names of the file layout that came
    before the database, then remove its files (none of which may be named ``*.json`` any
    more). Claims are not imported: their leases lapse with the restart. An owner file that is
    empty or damaged (a write that failed half-way) is dropped: that conversation starts anew.
    Idempotent, and safe with several processes opening at once. Returns the owners imported.
    """
    if not any((state_root / name).exists() for name in _OLD_ENTRIES):
        return 0
    imported = 0
    with ctx.transaction() as conn:
        done = conn.execute("SELECT 1 FROM meta WHERE key = 'imported_file_layout'").fetchone()
        if not done:
            imported = _import(conn, state_root)
            conn.execute("INSERT INTO meta (key, value) VALUES ('imported_file_layout', '1')")
    failure = ctx.end_batch()
    if failure is not None:
        raise failure
    for name in _OLD_ENTRIES:  # only after the commit: a crash before this imports nothing twice
        path = state_root / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    aside = state_root / "aside"
    if aside.is_dir():  # set-aside records: no longer named *.json in the state directory
        for path in aside.rglob("*.json"):
            with contextlib.suppress(OSError):
                path.rename(path.with_name(path.name + ".aside"))
    return imported


def _import(conn: sqlite3.Connection, state_root: Path) -> int:
    owners = 0
    conversations = state_root / "conversations"
    for path in sorted(conversations.glob("*/*.json")) if conversations.is_dir() else []:
        cid = path.name[: -len(".json")]
        try:
            owner = str(json.loads(path.read_bytes())["owner"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # empty or damaged: the write that made it failed
        if not is_valid_conversation_id(cid):
            continue
        conn.execute("INSERT OR IGNORE INTO owners (conversation_id, owner) VALUES (?, ?)", (cid, owner))
        owners += 1
        turns = path.with_name(f"{cid}.turns.jsonl")
        with contextlib.suppress(FileNotFoundError):
            for line in turns.read_bytes().split(b"\n"):
                try:
                    turn = ConversationTurn.from_dict(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue  # blank, or a torn last line after a crash
                text = json.dumps(turn.to_dict(), ensure_ascii=False)
                conn.execute("INSERT INTO turns (conversation_id, turn) VALUES (?, ?)", (cid, text))
        # Created when its first turn was (the owner file kept no time), else now.
        conn.execute(
            "UPDATE owners SET created_at = coalesce((SELECT json_extract(turn, '$.timestamp') FROM turns"
            " WHERE conversation_id = ? ORDER BY id LIMIT 1), ?) WHERE conversation_id = ?",
            (cid, utc_timestamp(), cid),
        )
    flags = state_root / "flags"
    for path in sorted(flags.glob("*.json")) if flags.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            value = bool(json.loads(path.read_bytes())["value"])
            conn.execute("INSERT OR REPLACE INTO flags (name, value) VALUES (?, ?)", (path.stem, int(value)))
    with contextlib.suppress(FileNotFoundError):
        names = (state_root / "exported.log").read_bytes().decode(errors="replace").splitlines()
        conn.executemany("INSERT OR IGNORE INTO exported (name) VALUES (?)", ((n,) for n in names if n))
    return owners


def unavailable(exc: BaseException, where: Path) -> BaseException:
    """The error a waiting request gets for ``exc``: store failures become ``StorageUnavailable``."""
    if isinstance(exc, sqlite3.Error):
        return StorageUnavailable(f"the state database {where / DB_NAME} failed: {exc}")
    if isinstance(exc, OSError):
        return StorageUnavailable(f"filesystem store failed: {describe(exc)} ({exc.filename or where})")
    return exc
