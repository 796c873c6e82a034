"""The filesystem backend class: options, lifecycle, and each operation routed to its lane."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Mapping, Sequence
from pathlib import Path
from typing import Any, Final, TypeVar

from lightspeed.config import UserDataCollectionConfig
from lightspeed.records import (
    FEEDBACK_NAME_RE,
    TRANSCRIPT_NAME_RE,
    FeedbackRecord,
    RecordKind,
    Transcript,
)
from lightspeed.storage.base import (
    Claim,
    PendingStats,
    StorageBackend,
    StoredRecord,
)
from lightspeed.storage.common import (
    check_claim_args,
    parse_record_name,
    stored_record,
)
from lightspeed.storage.errors import RecordNotFound, StorageRootUnavailable, StorageUnavailable
from lightspeed.storage.filesystem import claims, conversations, files, oldlayout, statedb
from lightspeed.storage.filesystem.deleter import Deleter
from lightspeed.storage.filesystem.deleter_child import THREADS
from lightspeed.storage.filesystem.lanes import Lane
from lightspeed.storage.filesystem.options import FilesystemOptions, default_state_path, overlap_problems
from lightspeed.storage.filesystem.querystate import QueryStateOps
from lightspeed.storage.filesystem.scanning import Backlog, Roots, scan, scan_backlog
from lightspeed.storage.filesystem.statedb import DB_NAME, DbFile, LoopReader, ReaderContext, WriterContext

__all__ = ["FilesystemOptions", "FilesystemStorage"]

T = TypeVar("T")

log = logging.getLogger("lightspeed.storage.filesystem")

#: Threads of the pool lane: reads and scans.
_POOL_THREADS: Final = 4
#: Threads of the unlink lane: they delete files after an upload only when the deleting
#: helper process cannot run (:mod:`.deleter`).
_UNLINK_THREADS: Final = THREADS
#: Bytes the readiness probe writes in each directory: a full disk refuses them.
_PROBE: Final = b"lightspeed readiness probe\n" * 160
#: What fails while each directory cannot be written (said by the start-up log).
_FAILS: Final = {
    "state_path": "queries, feedback and conversations (they need the state database)",
    "feedback_storage": "feedback writes",
    "transcripts_storage": "queries (their transcripts are stored before they answer)",
}


class FilesystemStorage(QueryStateOps, conversations.ConversationOps, claims.Settling, StorageBackend):
    """JSON files in the seed's layout and a state database; several processes on one host
    (or one shared volume with working locks) may use the same directories at once."""

    supports_multiple_processes = True
    Options = FilesystemOptions

    def __init__(self, *, options: Mapping[str, Any], collection: UserDataCollectionConfig) -> None:
        super().__init__(options=options, collection=collection)
        self.options: FilesystemOptions
        self.feedback_root = Path(collection.feedback_storage).absolute() if collection.feedback_storage else None
        self.transcripts_root = (
            Path(collection.transcripts_storage).absolute() if collection.transcripts_storage else None
        )
        self._roots = Roots(
            os.fspath(self.feedback_root) if self.feedback_root else None,
            os.fspath(self.transcripts_root) if self.transcripts_root else None,
        )
        self.state_root = self._default_state_path(self.options, collection)
        self.fsync = self.options.durability == "fsync"
        self.file_mode = int(self.options.file_mode)
        self.dir_mode = int(self.options.dir_mode)
        self._stamp = files.Stamp()
        #: Whether created files and folders need their mode checked (the umask may narrow it).
        self._check_mode = True
        self._writer: Lane[WriterContext] | None = None
        self._pool: Lane[ReaderContext] | None = None
        self._unlinker: Lane[ReaderContext] | None = None
        self._loop_reader: LoopReader | None = None
        self._deleter: Deleter | None = None
        self._owners: OrderedDict[str, tuple[str, float]] = OrderedDict()  # id -> (owner, until)
        self._exported = claims.Exported()
        self._backlog: Backlog | None = None  # what the last claim's scan found

    _default_state_path = staticmethod(default_state_path)

    @classmethod
    def validate_options(cls, options: FilesystemOptions, collection: UserDataCollectionConfig) -> list[str]:
        return overlap_problems(options, collection)

    def accepts(self, kind: RecordKind) -> bool:
        return (self.feedback_root if kind is RecordKind.FEEDBACK else self.transcripts_root) is not None

    def __repr__(self) -> str:
        return f"<FilesystemStorage state={os.fspath(self.state_root)!r}>"

    # ------------------------------------------------------------------ lanes

    def _translate(self, exc: BaseException) -> BaseException:
        return statedb.unavailable(exc, self.state_root)

    def _lanes(self) -> tuple[Lane[WriterContext], Lane[ReaderContext]]:
        if self._writer is None or self._pool is None:
            raise StorageUnavailable("the filesystem store is not open")
        return self._writer, self._pool

    def _active_roots(self) -> list[tuple[str, Path]]:
        """The directories in use, each with the setting that names it."""
        roots = [("state_path", self.state_root)]
        if self.collection.feedback_enabled and self.feedback_root:
            roots.append(("feedback_storage", self.feedback_root))
        if self.collection.transcripts_enabled and self.transcripts_root:
            roots.append(("transcripts_storage", self.transcripts_root))
        return roots

    def _root_problems(self) -> list[tuple[str, str]]:
        """(setting, problem) for each directory in use that cannot be created or written: each
        is made if missing (again after an operator removed it) and a probe file is written
        there, so a full disk or a read-only directory shows too. Blocking: run in a lane."""
        problems = []
        for setting, root in self._active_roots():
            path = root / f".ping.{os.getpid()}.{uuid.uuid4().hex}.tmp"
            try:
                files.ensure_dir(root, self.dir_mode)
                try:
                    files.write_and_close(
                        files.create(path, os.O_WRONLY | os.O_EXCL, self.file_mode), _PROBE, fsync=False
                    )
                finally:
                    with contextlib.suppress(OSError):
                        os.unlink(path)
            except OSError as exc:
                problems.append((setting, files.unusable(setting, root, exc)))
        return problems

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self._writer is not None:
            return
        loop = asyncio.get_running_loop()
        db = DbFile(self.state_root / DB_NAME, file_mode=self.file_mode, dir_mode=self.dir_mode, fsync=self.fsync)
        pool: Lane[ReaderContext] = Lane(
            "lightspeed-fs-pool",
            make_context=lambda: ReaderContext(db),
            translate=self._translate,
            threads=_POOL_THREADS,
            batch_max=1,
        )
        pool.start(loop)
        unlinker: Lane[ReaderContext] = Lane(
            "lightspeed-fs-unlink",
            make_context=lambda: ReaderContext(db),
            translate=self._translate,
            threads=_UNLINK_THREADS,
            batch_max=1,
        )
        unlinker.start(loop)
        loop_reader = LoopReader(db)

        def prepare(_: ReaderContext) -> list[tuple[str, str]]:
            umask = files.process_umask()
            self._check_mode = umask is None or bool(umask & (self.file_mode | self.dir_mode))
            problems = self._root_problems()
            if self.collection.feedback_enabled and self.feedback_root:
                files.remove_stale_temp_files(self.feedback_root)
            return problems

        def import_old(ctx: WriterContext) -> None:
            oldlayout.import_old_layout(ctx, self.state_root)

        writer: Lane[WriterContext] = Lane(
            "lightspeed-fs-writer",
            make_context=lambda: WriterContext(db, on_connect=import_old),
            translate=self._translate,
        )
        try:
            problems = await pool.run(prepare)
            writer.start(loop)
            if not any(setting == "state_path" for setting, _ in problems):
                try:
                    await writer.run(lambda ctx: ctx.conn)  # the database opened and is migrated
                except StorageUnavailable as exc:
                    problems.append(("state_path", str(exc)))
                else:
                    loop_reader.adopt(await pool.run(lambda _: loop_reader.connect()))
        except BaseException:
            loop_reader.close()
            await writer.stop()
            await pool.stop()
            await unlinker.stop()
            raise
        self._writer, self._pool, self._unlinker = writer, pool, unlinker
        self._deleter = Deleter(lane=unlinker)
        self._loop_reader = loop_reader
        # A directory that cannot be used does not stop the service (one bad volume must not
        # take the rest of the API down): what needs it fails, and works once it can be used.
        for setting, problem in problems:
            log.error(
                "%s; %s fail until this is fixed (tried again on each use, no restart needed)", problem, _FAILS[setting]
            )

    async def aclose(self) -> None:
        writer, pool, unlinker, deleter = self._writer, self._pool, self._unlinker, self._deleter
        loop_reader, self._loop_reader = self._loop_reader, None
        if loop_reader is not None:
            loop_reader.close()
        self._writer = self._pool = self._unlinker = None
        self._deleter = None
        if writer is not None:
            await writer.stop()  # writes accepted before this complete first
        if deleter is not None:
            await deleter.aclose()
        for lane in (pool, unlinker):
            if lane is not None:
                await lane.stop()

    async def ping(self) -> None:
        writer, pool = self._lanes()
        stamp = str(time.time())
        found, database = await asyncio.gather(
            pool.run(lambda _: self._root_problems()),
            writer.run(lambda ctx: statedb.ping(ctx, stamp)),
            return_exceptions=True,
        )
        if isinstance(found, BaseException):
            raise found
        problems = [problem for _, problem in found]
        if isinstance(database, BaseException) and not any(setting == "state_path" for setting, _ in found):
            if not isinstance(database, StorageUnavailable):
                raise database
            problems.append(str(database))
        if problems:
            raise StorageUnavailable("; ".join(problems))

    # ------------------------------------------------------------------ records

    def _record_file(self, name: str) -> str:
        """The file of a record name, every component validated (a name may come from a caller).

        One regular expression per name (a collection cycle asks for every record's file twice:
        to read it and to delete it); :func:`parse_record_name` only words the error."""
        if FEEDBACK_NAME_RE.fullmatch(name):
            if self._roots.feedback is not None:
                return self._roots.feedback + name[len("feedback") :]
        elif TRANSCRIPT_NAME_RE.fullmatch(name):
            if self._roots.transcripts is not None:
                return self._roots.transcripts + name[len("transcripts") :]
        else:
            parse_record_name(name)  # raises ValueError, saying why
        raise ValueError(f"not a record name of this store: {name!r}")

    def _record_writer(
        self, record: FeedbackRecord | Transcript, root: Path | None, setting: str, *, new_dir: bool = False
    ) -> tuple[StoredRecord, Callable[[WriterContext], None]]:
        """The record's reference, and the writer-lane job that writes its file (atomically,
        its folder fsync'd with the batch under ``durability: fsync``); the job raises
        ``StorageRootUnavailable`` naming ``setting`` when the directory cannot be written."""
        if root is None:
            raise StorageUnavailable(f"{setting} is not configured")
        data = record.to_json()
        ref = stored_record(record, data)
        path = self._record_file(ref.name)

        def write(ctx: WriterContext) -> None:
            try:
                files.write_atomic(
                    path,
                    data,
                    mode=self.file_mode,
                    dir_mode=self.dir_mode,
                    fsync=self.fsync,
                    stamp_ns=self._stamp.next(),
                    new_dir=new_dir,
                    check_mode=self._check_mode,
                )
            except OSError as exc:  # the directory's fault: name it as configured
                configured = os.fspath(Path(getattr(self.collection, setting)))
                raise StorageRootUnavailable(files.unusable(setting, root, exc), root=configured) from exc
            ctx.sync_dir(os.path.dirname(path))

        return ref, write

    async def _put(self, record: FeedbackRecord | Transcript, root: Path | None, setting: str) -> StoredRecord:
        ref, write = self._record_writer(record, root, setting)
        writer, _ = self._lanes()
        await writer.run(write, early=True)
        return ref

    async def put_feedback(self, record: FeedbackRecord) -> StoredRecord:
        return await self._put(record, self.feedback_root, "feedback_storage")

    async def put_transcript(self, record: Transcript) -> StoredRecord:
        return await self._put(record, self.transcripts_root, "transcripts_storage")

    # ------------------------------------------------------------------ collection

    def _still_pending(self, name: str) -> bool:
        try:
            return os.path.lexists(self._record_file(name))
        except ValueError:
            return False

    async def _scan(self, kinds: Collection[RecordKind]) -> Backlog:
        writer, pool = self._lanes()

        def skip(ctx: WriterContext) -> frozenset[str]:  # what no claim may take now
            return frozenset(self._exported.refresh(ctx.conn) | claims.held_by_others(ctx.conn, "", time.time()))

        skipped = await writer.run(skip, durable=False)
        backlog = await pool.run(lambda _: scan_backlog(self._roots, kinds, skipped, time.monotonic()))
        self._backlog = backlog
        return backlog

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
        writer, _ = self._lanes()
        backlog = self._backlog
        scanned = backlog is None or not backlog.fresh(kinds, time.monotonic())
        if scanned:
            backlog = await self._scan(kinds)
        while True:
            assert backlog is not None

            def take(ctx: WriterContext, used: Backlog = backlog) -> Claim:
                return claims.take(
                    ctx,
                    used,
                    self._exported,
                    claim_id=str(uuid.uuid4()),
                    owner=owner,
                    max_records=max_records,
                    max_bytes=max_bytes,
                    lease_seconds=lease_seconds,
                    now=time.time(),
                    still_pending=self._still_pending,
                )

            result = await writer.run(take)
            if result.records or scanned:
                return result
            backlog, scanned = await self._scan(kinds), True  # the last scan's backlog is used up: look again

    async def read_record(self, record: StoredRecord) -> bytes:
        data = (await self.read_many([record]))[0]
        if data is None:
            raise RecordNotFound(f"record {record.name} no longer exists")
        return data

    async def read_many(self, records: Sequence[StoredRecord]) -> list[bytes | None]:
        paths = [self._record_file(r.name) for r in records]
        _, pool = self._lanes()

        sizes = [r.size for r in records]
        return await pool.run(lambda _: files.read_records(paths, sizes))

    async def pending_stats(self) -> PendingStats:
        writer, pool = self._lanes()
        exported = await writer.run(lambda ctx: frozenset(self._exported.refresh(ctx.conn)), durable=False)

        def count(_: ReaderContext) -> PendingStats:
            n = dict.fromkeys(RecordKind, 0)
            b = dict.fromkeys(RecordKind, 0)
            for _mtime, name, size, kind in scan(self._roots, tuple(RecordKind)):
                if name not in exported:
                    n[kind] += 1
                    b[kind] += size
            return PendingStats(records=n, bytes=b)

        return await pool.run(count)
