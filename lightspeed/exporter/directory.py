"""The exporter's source: every complete ``*.json`` another program wrote under a data directory.

The upstream Lightspeed Core Stack writes its feedback and transcripts in place, without a
temporary name, so a file can be seen half-written. Here a file is *complete* when it has
not changed for ``settle_seconds`` (its modification time is that old) and parses as JSON.
Each claimed file is remembered by its fingerprint (inode, size, modification time in
nanoseconds): the bytes uploaded are the bytes of that fingerprint, and a file is deleted
after a 202 only if it still has it; a file rewritten meanwhile stays and is collected again
as new. Nothing is ever deleted unsent.

The state (claims with their leases, the files exported when ``cleanup_after_send`` is off,
the files set aside) lives in ``state_dir``, whose files never end in ``.json``, and which
the scan skips when it lies inside the data directory::

    state_dir/
        lock          flock(2) taken by claims, renewals, acks and releases
        claims        the live claims: {claim_id: {owner, expires_at, records: {name: fingerprint}}}
        exported.log  "name<TAB>inode<TAB>size<TAB>mtime_ns" of files acked without deletion
        aside/...     files too large to upload, moved here with a ``.reason`` file beside each

Several exporters on one volume (one node) coordinate through the lock and the leases.
Symbolic links are never followed, for files or folders; names that a ustar header cannot
hold (not ASCII, or too long) are skipped with a warning, never deleted.

The data directory's files are read by :mod:`lightspeed.exporter.files`, the state directory
by :mod:`lightspeed.exporter.state`; this module is the backend that joins them, each call
run on a small thread pool.

Only the collection half of :class:`~lightspeed.storage.StorageBackend` makes sense for files
another program writes: the methods that store records, owners, history and flags raise
:class:`~lightspeed.storage.StorageUnavailable` saying so.
"""

from __future__ import annotations

import asyncio
import errno
import functools
import os
import time
import uuid
from collections.abc import Callable, Collection, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

from lightspeed.config import UserDataCollectionConfig
from lightspeed.exporter.files import DataFiles, Fingerprint, fingerprint
from lightspeed.exporter.state import ExporterState
from lightspeed.records import ConversationTurn, FeedbackRecord, RecordKind, Transcript
from lightspeed.storage import (
    Claim,
    ClaimLost,
    PendingStats,
    RecordNotFound,
    StorageBackend,
    StorageUnavailable,
    StoredRecord,
)

__all__ = ["DEFAULT_SETTLE_SECONDS", "DirectorySource", "STATE_DIR_NAME"]

T = TypeVar("T")

#: How long a file must stay unchanged before it counts as complete.
DEFAULT_SETTLE_SECONDS: Final = 5.0
#: The state directory's name when it lies in the data directory (no ``*.json`` inside).
STATE_DIR_NAME: Final = ".lightspeed-exporter"


class DirectorySource(StorageBackend):
    """Complete ``*.json`` files under ``data_dir`` as records to collect; see the module docstring."""

    name = "exporter-directory"
    supports_multiple_processes = True

    def __init__(
        self,
        *,
        data_dir: str | os.PathLike[str],
        collection: UserDataCollectionConfig,
        allowed_subdirs: Sequence[str] = (),
        settle_seconds: float = DEFAULT_SETTLE_SECONDS,
        state_dir: str | os.PathLike[str] | None = None,
    ) -> None:
        super().__init__(options={}, collection=collection)
        self.data_dir = Path(data_dir).absolute()
        self.allowed_subdirs = frozenset(allowed_subdirs)
        self.settle_seconds = settle_seconds
        self.state_dir = Path(state_dir).absolute() if state_dir is not None else self.data_dir / STATE_DIR_NAME
        self._executor: ThreadPoolExecutor | None = None
        self.files = DataFiles(self.data_dir, state_dir=self.state_dir, allowed_subdirs=self.allowed_subdirs)
        self.state = ExporterState(self.state_dir)
        #: Fingerprints of the records this instance claimed, for read_many.
        self._claimed: dict[str, Fingerprint] = {}

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self._executor is not None:
            return
        self._executor = ThreadPoolExecutor(max_workers=2, thread_name_prefix="lightspeed-exporter")
        try:
            await self._run(self._check_dirs)
        except StorageUnavailable:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise

    def _check_dirs(self) -> None:
        if not self.data_dir.is_dir():
            raise FileNotFoundError(errno.ENOENT, "the data directory does not exist", str(self.data_dir))
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)

    async def aclose(self) -> None:
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)

    async def ping(self) -> None:
        def probe() -> None:
            self._check_dirs()
            os.listdir(self.data_dir)

        await self._run(probe)

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StorageUnavailable("the exporter's data directory is not open")
        try:
            return await asyncio.get_running_loop().run_in_executor(self._executor, fn, *args)
        except OSError as exc:
            raise StorageUnavailable(
                f"data directory {self.data_dir}: {exc.strerror or exc} ({exc.filename or ''})"
            ) from exc

    # ------------------------------------------------------------------ not for files another program writes

    def _read_only(self) -> NoReturn:
        raise StorageUnavailable("the exporter only collects files another program writes; it stores nothing")

    async def put_feedback(self, record: FeedbackRecord) -> StoredRecord:
        self._read_only()

    async def put_transcript(self, record: Transcript) -> StoredRecord:
        self._read_only()

    async def set_conversation_owner(self, conversation_id: str, *, owner: str) -> str:
        self._read_only()

    async def get_conversation_owner(self, conversation_id: str) -> str | None:
        self._read_only()

    async def append_turn(self, conversation_id: str, turn: ConversationTurn) -> None:
        self._read_only()

    async def get_turns(self, conversation_id: str, *, limit: int) -> list[ConversationTurn]:
        self._read_only()

    async def get_flag(self, name: str) -> bool | None:
        self._read_only()

    async def set_flag(self, name: str, value: bool) -> bool | None:
        self._read_only()

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

        def do_claim() -> Claim:
            with self.state.locked():
                now = time.time()
                claims = self.state.load_claims()
                # Claims whose lease ran out and whose files are all gone are forgotten.
                for cid in [c for c, d in claims.items() if float(d["expires_at"]) <= now]:
                    if not any(os.path.lexists(self.files.path(n)) for n in claims[cid]["records"]):
                        del claims[cid]
                held = self.state.held(claims, now)
                exported = self.state.load_exported()
                found = sorted((st.st_mtime_ns, name, st) for name, st in self.files.scan())
                chosen: list[StoredRecord] = []
                prints: dict[str, Fingerprint] = {}
                total = 0
                for mtime_ns, name, st in found:
                    fp = fingerprint(st)
                    kind = self.files.kind(name)
                    if kind not in kinds or name in held or (name, fp) in exported:
                        continue
                    if now - mtime_ns / 1e9 < self.settle_seconds:
                        continue  # may still be being written
                    if not self.files.is_complete(name, fp):
                        continue
                    if chosen and total + st.st_size > max_bytes:
                        break
                    stem = name.rsplit("/", 1)[-1][: -len(".json")]
                    chosen.append(StoredRecord(kind=kind, record_id=stem, name=name, size=st.st_size))
                    prints[name] = fp
                    total += st.st_size
                    if len(chosen) >= max_records or total > max_bytes:
                        break
                claim_id = str(uuid.uuid4())
                expires = now + lease_seconds
                if chosen:
                    claims[claim_id] = {"owner": owner, "expires_at": expires, "records": prints}
                self.state.save_claims(claims)
                self._claimed.update(prints)
                return Claim(claim_id=claim_id, owner=owner, expires_at=expires, records=tuple(chosen))

        return await self._run(do_claim)

    async def read_record(self, record: StoredRecord) -> bytes:
        data = (await self.read_many([record]))[0]
        if data is None:
            raise RecordNotFound(f"{record.name} is gone or changed since it was claimed")
        return data

    async def read_many(self, records: Sequence[StoredRecord]) -> list[bytes | None]:
        prints = [self._claimed.get(r.name) for r in records]

        def read_all() -> list[bytes | None]:
            return [
                None if fp is None else self.files.read_exact(r.name, fp) for r, fp in zip(records, prints, strict=True)
            ]

        return await self._run(read_all)

    async def renew(self, claim: Claim, *, lease_seconds: float) -> Claim:
        def do_renew() -> Claim:
            with self.state.locked():
                now = time.time()
                claims = self.state.load_claims()
                mine = claims.get(claim.claim_id)
                names = set(mine["records"]) if mine else set()
                if names & self.state.held(claims, now, but=claim.claim_id):
                    raise ClaimLost(f"claim {claim.claim_id} was taken over after its lease expired")
                expires = now + lease_seconds
                if mine:
                    mine["expires_at"] = expires
                    self.state.save_claims(claims)
                return Claim(
                    claim_id=claim.claim_id,
                    owner=claim.owner,
                    expires_at=expires,
                    records=tuple(r for r in claim.records if r.name in names),
                )

        return await self._run(do_renew)

    def _settle(
        self,
        claim: Claim,
        records: Sequence[StoredRecord] | None,
        action: Callable[[dict[str, Fingerprint]], None],
        *,
        strict: bool,
    ) -> None:
        with self.state.locked():
            now = time.time()
            claims = self.state.load_claims()
            mine = claims.get(claim.claim_id)
            current: dict[str, list[int]] = mine["records"] if mine else {}
            targets = [r.name for r in (claim.records if records is None else records) if r.name in current]
            held = self.state.held(claims, now, but=claim.claim_id)
            lost = [n for n in targets if n in held]
            if lost and strict:
                raise ClaimLost(
                    f"claim {claim.claim_id}: {len(lost)} file(s) were taken over by another collector"
                    f" after the lease expired (first: {lost[0]})"
                )
            chosen = {n: (current[n][0], current[n][1], current[n][2]) for n in targets if n not in held}
            action(chosen)
            for n in targets:
                current.pop(n, None)
                self._claimed.pop(n, None)
            if mine is not None and not current:
                del claims[claim.claim_id]
            self.state.save_claims(claims)

    async def ack(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None, delete: bool) -> None:
        action = self.files.delete if delete else self.state.mark_exported
        await self._run(functools.partial(self._settle, claim, records, action, strict=True))

    async def release(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None) -> None:
        await self._run(functools.partial(self._settle, claim, records, lambda _files: None, strict=False))

    async def set_aside(self, claim: Claim, records: Sequence[StoredRecord], *, reason: str) -> None:
        move = functools.partial(self.files.move, to=self.state.aside_dir, reason=reason)
        await self._run(functools.partial(self._settle, claim, list(records), move, strict=True))

    async def pending_stats(self) -> PendingStats:
        def count() -> PendingStats:
            with self.state.locked():
                exported = self.state.load_exported()
            n = {k: 0 for k in RecordKind}
            b = {k: 0 for k in RecordKind}
            for name, st in self.files.scan():
                if (name, fingerprint(st)) in exported:
                    continue
                kind = self.files.kind(name)
                n[kind] += 1
                b[kind] += st.st_size
            return PendingStats(records=n, bytes=b)

        return await self._run(count)

    def __repr__(self) -> str:
        return f"<DirectorySource {self.data_dir}>"
