"""Claims and leases, in the state database (run on the writer lane).

A claim is a row of ``claims`` (its sequence number gives claims a total order) and its
records are rows of ``members``. A record is held while an unexpired claim lists it; the
database's write lock (``BEGIN IMMEDIATE``) makes choosing and holding records one step
across every process. Exported names (acked with ``delete=False``) are rows of
``exported``; this process keeps them in memory too, read incrementally.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable, Collection, Iterable, Sequence

from lightspeed.storage.base import Claim, StoredRecord
from lightspeed.storage.common import ClaimFill
from lightspeed.storage.errors import ClaimLost
from lightspeed.storage.filesystem.scanning import Backlog
from lightspeed.storage.filesystem.statedb import WriterContext

__all__ = ["Exported", "held_by_others", "leave", "settle_check", "take"]

_CHUNK = 500


def _chunks(items: Sequence[str]) -> Iterable[Sequence[str]]:
    for i in range(0, len(items), _CHUNK):
        yield items[i : i + _CHUNK]


def _marks(n: int) -> str:
    return ",".join("?" * n)


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


def held_by_others(conn: sqlite3.Connection, claim_id: str, now: float) -> set[str]:
    """Names held by unexpired claims other than ``claim_id``."""
    rows = conn.execute(
        "SELECT m.name FROM members m JOIN claims c ON c.claim_id = m.claim_id"
        " WHERE c.expires_at > ? AND m.claim_id <> ?",
        (now, claim_id),
    ).fetchall()
    return {row[0] for row in rows}


def _members(conn: sqlite3.Connection, claim_id: str) -> set[str]:
    return {row[0] for row in conn.execute("SELECT name FROM members WHERE claim_id = ?", (claim_id,))}


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
                "INSERT INTO claims (claim_id, owner, expires_at) VALUES (?, ?, ?)", (claim_id, owner, expires)
            )
            conn.executemany(
                "INSERT INTO members (claim_id, name) VALUES (?, ?)", ((claim_id, r.name) for r in fill.records)
            )
        _prune_expired(conn, now, skip, still_pending)
    return Claim(claim_id=claim_id, owner=owner, expires_at=expires, records=tuple(fill.records))


def _prune_expired(
    conn: sqlite3.Connection, now: float, exported: set[str], still_pending: Callable[[str], bool]
) -> None:
    """Forget expired claims (of collectors that died) whose records are all gone or exported.
    A claim with a record still pending stays: its owner must still learn ``ClaimLost`` if
    another claim took that record."""
    for (claim_id,) in conn.execute("SELECT claim_id FROM claims WHERE expires_at <= ?", (now,)).fetchall():
        names = _members(conn, claim_id)
        if not any(name not in exported and still_pending(name) for name in names):
            conn.execute("DELETE FROM members WHERE claim_id = ?", (claim_id,))
            conn.execute("DELETE FROM claims WHERE claim_id = ?", (claim_id,))


def renew(ctx: WriterContext, claim: Claim, *, lease_seconds: float, now: float) -> Claim:
    with ctx.transaction() as conn:
        names = _members(conn, claim.claim_id)
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
        current = _members(conn, claim.claim_id)
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
        ordered = list(names)
        if exported:
            conn.executemany("INSERT OR IGNORE INTO exported (name) VALUES (?)", ((n,) for n in ordered))
        for part in _chunks(ordered):
            conn.execute(f"DELETE FROM members WHERE claim_id = ? AND name IN ({_marks(len(part))})", (claim_id, *part))
        if conn.execute("SELECT 1 FROM members WHERE claim_id = ? LIMIT 1", (claim_id,)).fetchone() is None:
            conn.execute("DELETE FROM claims WHERE claim_id = ?", (claim_id,))
