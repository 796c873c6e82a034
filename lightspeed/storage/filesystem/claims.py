"""Claims and leases, in the state database (run on the writer lane).

A claim is a row of ``claims`` (its sequence number gives claims a total order) whose
``names`` column lists its records, one name a line. A record is held while an unexpired
claim lists it; the database's write lock (``BEGIN IMMEDIATE``) makes choosing and holding
records one step across every process. One value per claim, written when it is taken and
dropped with its last ack: a row per record (two B-trees of 150-byte keys) wrote about 2 KB
of WAL per record collected (decision collector-02). Exported names (acked with
``delete=False``) are rows of ``exported``; this process keeps them in memory too, read
incrementally.
"""

from __future__ import annotations

import errno
import os
import shutil
import sqlite3
import time
from collections.abc import Callable, Collection, Sequence
from pathlib import Path

from lightspeed.records import RecordKind
from lightspeed.storage.base import Claim, StoredRecord
from lightspeed.storage.common import ClaimFill
from lightspeed.storage.errors import ClaimLost, StorageUnavailable
from lightspeed.storage.filesystem import files
from lightspeed.storage.filesystem.deleter import Deleter
from lightspeed.storage.filesystem.lanes import Lane
from lightspeed.storage.filesystem.scanning import Backlog
from lightspeed.storage.filesystem.statedb import ReaderContext, WriterContext

__all__ = ["Exported", "Settling", "held_by_others", "leave", "listed", "settle_check", "take"]


class Exported:
    """The names acked with ``delete=False``, by any process: read from the database as they grow."""

    def __init__(self) -> None:
        self.names: set[str] = set()
        self._last_id = 0

    def refresh(self, conn: sqlite3.Connection) -> set[str]:
        rows = conn.execute("SELECT id, name FROM exported WHERE id > ? ORDER BY id", (self._last_id,)).fetchall()
        if rows:
            self.names.update(name for _, name in rows)
            self._last_id = rows[-1][0]
        return self.names


def _names(value: str) -> list[str]:
    """The record names of a claim's ``names`` value."""
    return value.split("\n") if value else []


def held_by_others(conn: sqlite3.Connection, claim_id: str, now: float) -> set[str]:
    """Names held by unexpired claims other than ``claim_id``."""
    held: set[str] = set()
    for (names,) in conn.execute("SELECT names FROM claims WHERE expires_at > ? AND claim_id <> ?", (now, claim_id)):
        held.update(_names(names))
    return held


def listed(conn: sqlite3.Connection) -> set[str]:
    """Names that any claim lists, expired or not."""
    found: set[str] = set()
    for (names,) in conn.execute("SELECT names FROM claims"):
        found.update(_names(names))
    return found


def _members(conn: sqlite3.Connection, claim_id: str) -> list[str]:
    row = conn.execute("SELECT names FROM claims WHERE claim_id = ?", (claim_id,)).fetchone()
    return [] if row is None else _names(row[0])


def take(
    ctx: WriterContext,
    backlog: Backlog,
    exported: Exported,
    *,
    claim_id: str,
    owner: str,
    max_records: int,
    max_bytes: int,
    lease_seconds: float,
    now: float,
    still_pending: Callable[[str], bool],
) -> Claim:
    """The next records of ``backlog`` that nobody holds, held by a new claim; oldest first."""
    with ctx.transaction() as conn:
        held = held_by_others(conn, "", now)
        skip = exported.refresh(conn)
        fill = ClaimFill(max_records, max_bytes)
        while not fill.full and (item := backlog.peek()) is not None:
            name, size, kind = item
            if name in held or name in skip:
                backlog.pos += 1
                continue
            # Not checked to still exist: an lstat per record costs as much as the scan saved
            # (the previous batch's files are being deleted meanwhile). A record another
            # collector acked since the scan reads as missing, which read_many reports.
            if not fill.offer(StoredRecord(kind=kind, record_id=name[-41:-5], name=name, size=size)):
                break
            backlog.pos += 1
        expires = now + lease_seconds
        if fill.records:
            conn.execute(
                "INSERT INTO claims (claim_id, owner, expires_at, names) VALUES (?, ?, ?, ?)",
                (claim_id, owner, expires, "\n".join(r.name for r in fill.records)),
            )
        _prune_expired(conn, now, skip, still_pending)
    return Claim(claim_id=claim_id, owner=owner, expires_at=expires, records=tuple(fill.records))


def _prune_expired(
    conn: sqlite3.Connection, now: float, exported: set[str], still_pending: Callable[[str], bool]
) -> None:
    """Forget expired claims (of collectors that died) whose records are all gone or exported.
    A claim with a record still pending stays: its owner must still learn ``ClaimLost`` if
    another claim took that record."""
    for claim_id, names in conn.execute("SELECT claim_id, names FROM claims WHERE expires_at <= ?", (now,)).fetchall():
        if not any(name not in exported and still_pending(name) for name in _names(names)):
            conn.execute("DELETE FROM claims WHERE claim_id = ?", (claim_id,))


def renew(ctx: WriterContext, claim: Claim, *, lease_seconds: float, now: float) -> Claim:
    with ctx.transaction() as conn:
        names = set(_members(conn, claim.claim_id))
        if held_by_others(conn, claim.claim_id, now).intersection(names):
            raise ClaimLost(f"claim {claim.claim_id} was taken over after its lease expired")
        expires = now + lease_seconds
        conn.execute("UPDATE claims SET expires_at = ? WHERE claim_id = ?", (expires, claim.claim_id))
    return Claim(
        claim_id=claim.claim_id,
        owner=claim.owner,
        expires_at=expires,
        records=tuple(r for r in claim.records if r.name in names),
    )


def settle_check(
    ctx: WriterContext, claim: Claim, records: Sequence[StoredRecord] | None, *, strict: bool, now: float
) -> tuple[list[StoredRecord], list[str]]:
    """Which of ``records`` (all of the claim's when ``None``) are still the claim's: those to
    act on, and those another unexpired claim took (``ClaimLost`` for them when ``strict``)."""
    with ctx.transaction() as conn:
        current = set(_members(conn, claim.claim_id))
        targets = [r for r in (claim.records if records is None else records) if r.name in current]
        held = held_by_others(conn, claim.claim_id, now)
    lost = [r.name for r in targets if r.name in held]
    if lost and strict:
        raise ClaimLost(
            f"claim {claim.claim_id}: {len(lost)} record(s) were taken over by another collector"
            f" after the lease expired (first: {lost[0]})"
        )
    return [r for r in targets if r.name not in held], lost


def leave(ctx: WriterContext, claim_id: str, names: Collection[str], *, exported: bool = False) -> None:
    """Take ``names`` out of the claim (marking them exported first when told); the claim ends
    when none are left."""
    with ctx.transaction() as conn:
        if exported:
            conn.executemany("INSERT OR IGNORE INTO exported (name) VALUES (?)", ((n,) for n in names))
        current = _members(conn, claim_id)
        gone = set(names)
        remaining = [n for n in current if n not in gone]
        if not remaining:
            conn.execute("DELETE FROM claims WHERE claim_id = ?", (claim_id,))
        elif len(remaining) < len(current):
            conn.execute("UPDATE claims SET names = ? WHERE claim_id = ?", ("\n".join(remaining), claim_id))


class Settling:
    """The backend's ack, release, set_aside and renew (a mixin of ``FilesystemStorage``)."""

    state_root: Path
    file_mode: int
    dir_mode: int
    fsync: bool
    _backlog: Backlog | None
    _deleter: Deleter | None

    def _translate(self, exc: BaseException) -> BaseException:
        raise NotImplementedError

    def _lanes(self) -> tuple[Lane[WriterContext], Lane[ReaderContext]]:
        raise NotImplementedError

    def _record_file(self, name: str) -> str:
        raise NotImplementedError

    async def renew(self, claim: Claim, *, lease_seconds: float) -> Claim:
        writer, _ = self._lanes()
        return await writer.run(lambda ctx: renew(ctx, claim, lease_seconds=lease_seconds, now=time.time()))

    async def ack(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None, delete: bool) -> None:
        files_of = {r.name: self._record_file(r.name) for r in (claim.records if records is None else records)}
        writer, _ = self._lanes()
        if not delete:

            def export(ctx: WriterContext) -> None:
                targets, _ = settle_check(ctx, claim, records, strict=True, now=time.time())
                leave(ctx, claim.claim_id, [r.name for r in targets], exported=True)

            await writer.run(export)
            return
        targets, lost = await writer.run(lambda ctx: settle_check(ctx, claim, records, strict=True, now=time.time()))
        # Deleting thousands of files takes a while: the claim (still listing these records)
        # keeps every other collector off them meanwhile. The deleter does it in a helper
        # process, off this process's GIL (decision collector-03).
        paths = [files_of[r.name] for r in targets]
        deleter = self._deleter
        if deleter is None:
            raise StorageUnavailable("the filesystem store is not open")
        try:
            await deleter.unlink(paths)
            await deleter.remove_empty_parents(
                [p for p, r in zip(paths, targets, strict=True) if r.kind is RecordKind.TRANSCRIPT]
            )
        except OSError as exc:
            raise self._translate(exc) from exc
        done = [r.name for r in targets] + lost
        await writer.run(lambda ctx: leave(ctx, claim.claim_id, done))

    async def release(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None) -> None:
        writer, _ = self._lanes()

        def give_back(ctx: WriterContext) -> bool:
            targets, lost = settle_check(ctx, claim, records, strict=False, now=time.time())
            leave(ctx, claim.claim_id, [r.name for r in targets] + lost)
            return bool(targets)

        if await writer.run(give_back):
            self._backlog = None  # released records are older than the backlog's: the next claim scans again

    async def set_aside(self, claim: Claim, *, records: Sequence[StoredRecord], reason: str) -> None:
        sources = {r.name: self._record_file(r.name) for r in records}
        writer, _ = self._lanes()

        def move(ctx: WriterContext) -> None:
            targets, _ = settle_check(ctx, claim, list(records), strict=True, now=time.time())
            for rec in targets:
                # Kept in the state directory under a name that is not *.json: never a record there.
                dst = self.state_root / "aside" / f"{rec.name}.aside"
                files.ensure_dir(dst.parent, self.dir_mode)
                try:
                    os.rename(sources[rec.name], dst)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    shutil.copy2(sources[rec.name], dst)
                    os.unlink(sources[rec.name])
                reason_path = dst.with_name(rec.name.rsplit("/", 1)[-1] + ".reason")
                files.write_atomic(
                    reason_path, reason.encode(), mode=self.file_mode, dir_mode=self.dir_mode, fsync=self.fsync
                )
            leave(ctx, claim.claim_id, [r.name for r in targets])

        await writer.run(move)
