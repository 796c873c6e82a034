"""The default backend: JSON files in the seed's directory layout.

::

    feedback_storage/{record_id}.json
    transcripts_storage/{sha256(user_id)}/{conversation_id}/{record_id}.json
    state_path/                      (outside both roots, never collected)
        lock                         flock(2) taken by claims, acks and flag swaps
        conversations/{xx}/{id}.json owner of each conversation (insert-if-absent: O_CREAT|O_EXCL)
        flags/{name}.json            shared flags
        claims/{claim_id}.json       live leases: owner, expiry, record names
        exported.log                 names acked with delete=False (cleanup_after_send: false)
        aside/...                    records set aside (too large to upload), with a reason file

Writes go to a temporary name (a dot file not ending in ``.json``) in the target directory
and are renamed into place, so ``*.json`` only ever shows complete records. Record writes
and history appends are handed to one writer thread that takes them in batches, and new
conversations' owners to a second one: the event loop pays one queue put per call and one
wake-up per batch instead of a worker-pool hop per file (see ``docs/benchmarks.md`` for the
measurements that chose this over aiofiles and over a pool).

Options (``user_data_collection.storage.options``):

``state_path``
    where conversations, flags and claims live; default ``.lightspeed-state`` beside the
    first configured storage root (``./.lightspeed-state`` when none is configured).
``durability``
    ``rename`` (default: atomic, not crash-durable) or ``fsync`` (fsync each file before the
    rename and each directory after it; one batch shares the directory fsyncs).
``file_mode`` / ``dir_mode``
    permissions of what is created, default ``0o600`` / ``0o700`` (give them as octal
    strings such as ``"0640"`` or integers).
"""

from __future__ import annotations

import array
import asyncio
import contextlib
import errno
import fcntl
import functools
import json
import os
import queue
import shutil
import stat
import threading
import time
import uuid
from collections import OrderedDict
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, Literal, TypeVar

import attrs

from lightspeed.config import OctalMode, UserDataCollectionConfig
from lightspeed.records import (
    ConversationTurn,
    FeedbackRecord,
    RecordKind,
    Transcript,
    is_valid_conversation_id,
    is_valid_record_id,
    is_valid_user_hash,
)
from lightspeed.storage.base import Claim, PendingStats, StorageBackend, StoredRecord
from lightspeed.storage.common import (
    ClaimFill,
    check_claim_args,
    check_conversation_id,
    check_flag_name,
    check_user_hash,
    parse_record_name,
    stored_record,
)
from lightspeed.storage.errors import ClaimLost, RecordNotFound, StorageUnavailable

__all__ = ["FilesystemOptions", "FilesystemStorage"]

T = TypeVar("T")

_BATCH_MAX: Final = 512
_UNLINK_THREADS: Final = 16
_PARALLEL_UNLINK_MIN: Final = 256
_OWNER_CACHE_MAX: Final = 100_000
#: How long an owner file may stay empty or incomplete while its creator writes it.
_OWNER_WRITE_SECONDS: Final = 1.0


def _describe(exc: OSError) -> str:
    return f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, exc.errno)})"


class _BatchWriter:
    """One thread that writes record files in batches and settles their futures together.

    It also reads flags (an item whose data is ``None``): each flag file is read once per
    batch for every reader queued in it, so a flag check costs the event loop a queue put,
    never a thread-pool hop of its own, and still sees any value set before it was queued.
    """

    def __init__(
        self,
        *,
        fsync: bool,
        file_mode: int,
        ensure_dir: Callable[[Path], None],
        read_flag: Callable[[Path], bool | None],
        name: str = "lightspeed-fs-writer",
    ) -> None:
        self._name = name
        self._fsync = fsync
        self._file_mode = file_mode
        self._ensure_dir = ensure_dir
        self._read_flag = read_flag
        # (path, bytes, future): write a record; (path, None, future): read a flag;
        # (function, None, future): call it (a small write that must keep its order, see append).
        self._queue: queue.SimpleQueue[tuple[Path | Callable[[], Any], bytes | None, asyncio.Future[Any]] | None] = (
            queue.SimpleQueue()
        )
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._counter = 0
        self._last_ns = 0

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        self._thread = threading.Thread(target=self._run, name=self._name, daemon=True)
        self._thread.start()

    def submit(self, path: Path, data: bytes) -> asyncio.Future[None]:
        assert self._loop is not None, "writer not started"
        fut: asyncio.Future[None] = self._loop.create_future()
        self._queue.put((path, data, fut))
        return fut

    def call(self, fn: Callable[[], T]) -> asyncio.Future[T]:
        """Run ``fn`` on the writer thread, after the writes queued before it."""
        assert self._loop is not None, "writer not started"
        fut: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((fn, None, fut))
        return fut

    def read_flag(self, path: Path) -> asyncio.Future[bool | None]:
        assert self._loop is not None, "writer not started"
        fut: asyncio.Future[bool | None] = self._loop.create_future()
        self._queue.put((path, None, fut))
        return fut

    async def stop(self) -> None:
        if self._thread is None:
            return
        self._queue.put(None)
        await asyncio.get_running_loop().run_in_executor(None, self._thread.join)
        self._thread = None

    def _run(self) -> None:
        stopping = False
        while not stopping:
            item = self._queue.get()
            if item is None:
                break
            batch = [item]
            while len(batch) < _BATCH_MAX:
                try:
                    nxt = self._queue.get_nowait()
                except queue.Empty:
                    break
                if nxt is None:
                    stopping = True
                    break
                batch.append(nxt)
            assert self._loop is not None
            readers = [(p, f) for p, d, f in batch if d is None and isinstance(p, Path)]
            if readers:  # answered before the batch is written: their requests go on meanwhile
                with contextlib.suppress(RuntimeError):  # loop closed: nobody is waiting any more
                    self._loop.call_soon_threadsafe(_settle, self._read_flags(readers))
            writes = [(p, d, f) for p, d, f in batch if d is not None and isinstance(p, Path)]
            results = self._write_batch(writes) if writes else []
            for fn, _, fut in batch:
                if not isinstance(fn, Path):
                    results.append((fut, *_call(fn)))
            if results:
                with contextlib.suppress(RuntimeError):
                    self._loop.call_soon_threadsafe(_settle, results)

    def _read_flags(
        self, readers: list[tuple[Path, asyncio.Future[Any]]]
    ) -> list[tuple[asyncio.Future[Any], BaseException | None, Any]]:
        values: dict[Path, tuple[BaseException | None, bool | None]] = {}
        results: list[tuple[asyncio.Future[Any], BaseException | None, Any]] = []
        for path, fut in readers:
            if path not in values:
                try:
                    values[path] = (None, self._read_flag(path))
                except OSError as exc:
                    values[path] = (StorageUnavailable(f"cannot read flag {path}: {_describe(exc)}"), None)
                except (ValueError, KeyError, TypeError) as exc:
                    values[path] = (StorageUnavailable(f"flag file {path} is damaged: {exc!r}"), None)
            results.append((fut, *values[path]))
        return results

    def _write_batch(
        self, batch: list[tuple[Path, bytes, asyncio.Future[Any]]]
    ) -> list[tuple[asyncio.Future[Any], BaseException | None, Any]]:
        results: list[tuple[asyncio.Future[Any], BaseException | None, Any]] = []
        dirs: set[Path] = set()
        for path, data, fut in batch:
            try:
                self._write_one(path, data)
                dirs.add(path.parent)
                results.append((fut, None, None))
            except OSError as exc:
                results.append((fut, StorageUnavailable(f"cannot write {path}: {_describe(exc)}"), None))
        if self._fsync:
            failed: dict[Path, StorageUnavailable] = {}
            for d in dirs:
                try:
                    fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY)
                    try:
                        os.fsync(fd)
                    finally:
                        os.close(fd)
                except OSError as exc:  # renamed, but not known to be durable: report it
                    failed[d] = StorageUnavailable(f"cannot fsync directory {d}: {_describe(exc)}")
            if failed:
                results = [
                    (f, e or failed.get(p.parent), None) for (f, e, _), (p, _, _) in zip(results, batch, strict=True)
                ]
        return results

    def _write_one(self, path: Path, data: bytes) -> None:
        self._counter += 1
        tmp = path.with_name(f".{path.stem}.{os.getpid()}.{self._counter}.tmp")
        for attempt in range(10):
            try:
                fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, self._file_mode)
                break
            except FileNotFoundError:
                if attempt == 9:
                    raise
                # A directory was removed (by us after an upload, or by an exporter sidecar): re-create it.
                self._ensure_dir(path.parent)
        try:
            try:
                if os.fstat(fd).st_mode & 0o777 != self._file_mode:
                    os.fchmod(fd, self._file_mode)  # the umask took bits we were asked to set
                view = memoryview(data)
                while view:
                    n = os.write(fd, view)
                    view = view[n:]
                # A timestamp of our own, later than the last one this writer gave: claims take
                # records oldest first by mtime, and the filesystem's clock ticks too coarsely
                # (a jiffy on ext4) to tell apart records written one after the other.
                self._last_ns = max(time.time_ns(), self._last_ns + 1)
                os.utime(fd, ns=(self._last_ns, self._last_ns))
                if self._fsync:
                    os.fsync(fd)
            finally:
                os.close(fd)
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise


def _read_fd(fd: int, size: int) -> bytes:
    """All of an open file whose size is probably ``size``: one read of that much (plus one byte,
    to see the end), rather than large reads that allocate big buffers only to shrink them."""
    data = os.read(fd, size + 1)
    if len(data) == size:
        return data  # the whole file: short reads of regular files happen only at the end
    parts = [data]
    while chunk := os.read(fd, 1 << 16):
        parts.append(chunk)
    return b"".join(parts)


def _lstat(entry: os.DirEntry[str]) -> os.stat_result | None:
    """The entry's own stat, or None when it vanished since it was listed (acked by a collector)."""
    try:
        return entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None


def _unlink_some(paths: Sequence[str]) -> None:
    for path in paths:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)


def _unlink_all(paths: Sequence[str]) -> None:
    """Remove files (missing ones are fine); large batches on several threads, because each
    unlink waits on the filesystem's journal and they overlap well (see docs/benchmarks.md)."""
    if len(paths) < _PARALLEL_UNLINK_MIN:
        _unlink_some(paths)
        return
    step = -(-len(paths) // _UNLINK_THREADS)
    with ThreadPoolExecutor(max_workers=_UNLINK_THREADS, thread_name_prefix="lightspeed-fs-unlink") as pool:
        for done in [pool.submit(_unlink_some, paths[i : i + step]) for i in range(0, len(paths), step)]:
            done.result()


#: A writer's temporary file this old was left by a process that died mid-write.
STALE_TEMP_SECONDS: Final = 3600.0


def _remove_if_stale(entry: os.DirEntry[str]) -> None:
    """Remove a writer's temporary dot-file (never a record) left behind by a killed process."""
    if not entry.name.startswith("."):
        return
    with contextlib.suppress(OSError):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) and time.time() - st.st_mtime > STALE_TEMP_SECONDS:
            os.unlink(entry.path)


def _remove_stale_temp_files(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(directory) as it:
        for entry in it:
            if entry.name.endswith(".tmp"):
                _remove_if_stale(entry)


def _call(fn: Callable[[], Any]) -> tuple[BaseException | None, Any]:
    """Run ``fn`` on the writer thread: (the error for the waiting request, or None; its result)."""
    try:
        return None, fn()
    except OSError as exc:
        return StorageUnavailable(f"filesystem store failed: {_describe(exc)} ({exc.filename})"), None
    except Exception as exc:  # noqa: BLE001 - handed to the waiting request
        return exc, None


def _settle(results: list[tuple[asyncio.Future[Any], BaseException | None, Any]]) -> None:
    for fut, exc, value in results:
        if fut.done():  # the waiting request was cancelled
            continue
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)


#: Records one scan keeps for the claims that follow it (the oldest ones; about 60 bytes each).
_BACKLOG_MAX: Final = 100_000
#: A backlog older than this is scanned again rather than used.
_BACKLOG_SECONDS: Final = 60.0


class _Backlog:
    """The oldest pending records found by one scan, for the claims that follow it.

    Scanning costs one ``lstat`` per file. A cycle over N files claims N/batch batches, and
    scanning for each of them made claiming the largest cost of a cycle (quadratic in the
    number of batches). The backlog lets the later claims of a cycle take the next records
    from the last scan instead, checking only that each one still exists. Records live in
    flat arrays rather than objects, so 100,000 of them take about 6 MB; a scan that finds
    more keeps the oldest :data:`_BACKLOG_MAX`.
    """

    __slots__ = ("folder", "folders", "ids", "kinds", "kinds_of", "made", "mtime", "order", "pos", "size")

    def __init__(self, kinds: Collection[RecordKind], made: float) -> None:
        self.kinds = frozenset(kinds)
        self.made = made
        self.folders: list[str] = []  # name prefixes: "feedback", "transcripts/{user}/{conversation}"
        self.kinds_of: list[RecordKind] = []
        self.mtime = array.array("q")
        self.size = array.array("q")
        self.folder = array.array("l")
        self.ids = bytearray()  # record ids, 36 ASCII bytes each
        self.order = array.array("l")  # indices, oldest first
        self.pos = 0  # next position in order

    def add_folder(self, prefix: str, kind: RecordKind) -> int:
        self.folders.append(prefix)
        self.kinds_of.append(kind)
        return len(self.folders) - 1

    def add(self, mtime_ns: int, folder: int, record_id: str, size: int) -> None:
        self.mtime.append(mtime_ns)
        self.size.append(size)
        self.folder.append(folder)
        self.ids += record_id.encode("ascii")
        if len(self.mtime) >= 2 * _BACKLOG_MAX:
            self._keep(self._oldest()[:_BACKLOG_MAX])

    def _oldest(self) -> list[int]:
        # Stable: equal mtimes (common, at the filesystem's timestamp resolution) keep scan order.
        return sorted(range(len(self.mtime)), key=self.mtime.__getitem__)

    def _keep(self, indices: Sequence[int]) -> None:
        ids = self.ids
        self.mtime = array.array("q", (self.mtime[i] for i in indices))
        self.size = array.array("q", (self.size[i] for i in indices))
        self.folder = array.array("l", (self.folder[i] for i in indices))
        self.ids = bytearray().join(ids[36 * i : 36 * i + 36] for i in indices)

    def finish(self) -> None:
        oldest = self._oldest()
        if len(oldest) > _BACKLOG_MAX:
            self._keep(oldest[:_BACKLOG_MAX])
            oldest = list(range(_BACKLOG_MAX))
        self.order = array.array("l", oldest)

    def fresh(self, kinds: Collection[RecordKind], now: float) -> bool:
        return self.pos < len(self.order) and self.kinds == frozenset(kinds) and now - self.made < _BACKLOG_SECONDS

    def peek(self) -> tuple[str, int, RecordKind] | None:
        """The next record's name, size and kind, or None when the backlog is used up."""
        if self.pos >= len(self.order):
            return None
        i = self.order[self.pos]
        f = self.folder[i]
        return (
            f"{self.folders[f]}/{self.ids[36 * i : 36 * i + 36].decode('ascii')}.json",
            self.size[i],
            self.kinds_of[f],
        )


_FILE_MODE: Final = OctalMode(0o600)
_DIR_MODE: Final = OctalMode(0o700)


@attrs.frozen(kw_only=True)
class FilesystemOptions:
    """``user_data_collection.storage.options`` of the filesystem backend."""

    #: Where conversations, flags and claims live (default: ``.lightspeed-state`` beside the
    #: first configured storage root).
    state_path: str | None = None
    #: ``rename`` (atomic, not crash-durable) or ``fsync`` (file and directory fsync'd).
    durability: Literal["rename", "fsync"] = "rename"
    file_mode: OctalMode = _FILE_MODE
    dir_mode: OctalMode = _DIR_MODE


class FilesystemStorage(StorageBackend):
    """JSON files in the seed's layout; several processes on one host (or one shared volume)
    may use the same directories at once."""

    supports_multiple_processes = True
    Options = FilesystemOptions

    def __init__(self, *, options: Mapping[str, Any], collection: UserDataCollectionConfig) -> None:
        super().__init__(options=options, collection=collection)
        self.feedback_root = Path(collection.feedback_storage).absolute() if collection.feedback_storage else None
        self.transcripts_root = (
            Path(collection.transcripts_storage).absolute() if collection.transcripts_storage else None
        )
        self._feedback_dir = os.fspath(self.feedback_root) if self.feedback_root else None
        self._transcripts_dir = os.fspath(self.transcripts_root) if self.transcripts_root else None
        self.options: FilesystemOptions
        self.state_root = self._default_state_path(self.options, collection)
        self.fsync = self.options.durability == "fsync"
        self.file_mode = int(self.options.file_mode)
        self.dir_mode = int(self.options.dir_mode)
        self._writer = _BatchWriter(
            fsync=self.fsync, file_mode=self.file_mode, ensure_dir=self._ensure_dir, read_flag=self._read_flag
        )
        self._owner_writer = _BatchWriter(
            fsync=self.fsync,
            file_mode=self.file_mode,
            ensure_dir=self._ensure_dir,
            read_flag=self._read_flag,
            name="lightspeed-fs-owners",
        )
        self._executor: ThreadPoolExecutor | None = None
        self._owners: OrderedDict[str, str] = OrderedDict()
        self._exported: set[str] = set()
        self._exported_pos = (0, 0)  # (inode, offset read so far) of exported.log
        self._backlog: _Backlog | None = None  # what the last claim's scan found (see _Backlog)
        self._open = False

    @staticmethod
    def _default_state_path(options: FilesystemOptions, collection: UserDataCollectionConfig) -> Path:
        if options.state_path:
            return Path(options.state_path).absolute()
        for root in (collection.feedback_storage, collection.transcripts_storage):
            if root:
                return Path(root).absolute().parent / ".lightspeed-state"
        return Path(".lightspeed-state").absolute()

    @classmethod
    def validate_options(cls, options: FilesystemOptions, collection: UserDataCollectionConfig) -> list[str]:
        problems: list[str] = []
        roots = {
            "feedback_storage": collection.feedback_storage,
            "transcripts_storage": collection.transcripts_storage,
        }
        paths = {k: Path(v).absolute() for k, v in roots.items() if v}
        paths["state_path"] = cls._default_state_path(options, collection)
        names = list(paths)
        for i, a in enumerate(names):
            for b in names[i + 1 :]:
                pa, pb = paths[a], paths[b]
                if pa == pb or pa in pb.parents or pb in pa.parents:
                    problems.append(
                        f"state_path: {a} ({pa}) and {b} ({pb}) overlap; each needs its own directory"
                        if "state_path" in (a, b)
                        else f"storage roots {a} ({pa}) and {b} ({pb}) overlap; each needs its own directory"
                    )
        return problems

    def accepts(self, kind: RecordKind) -> bool:
        root = self.feedback_root if kind is RecordKind.FEEDBACK else self.transcripts_root
        return root is not None

    # ------------------------------------------------------------------ helpers

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._executor is None:
            raise StorageUnavailable("the filesystem store is not open")
        loop = asyncio.get_running_loop()
        try:
            return await loop.run_in_executor(self._executor, fn, *args)
        except OSError as exc:
            raise StorageUnavailable(f"filesystem store failed: {_describe(exc)} ({exc.filename})") from exc

    def _ensure_dir(self, path: Path) -> None:
        """Create ``path`` and missing parents below the storage root with ``dir_mode``.

        A folder removed meanwhile (an exporter sidecar deletes emptied ones) is created again.
        """
        for attempt in range(10):
            missing: list[Path] = []
            p = path
            while not p.is_dir():
                missing.append(p)
                if p.parent == p:
                    break
                p = p.parent
            try:
                for d in reversed(missing):
                    try:
                        os.mkdir(d, self.dir_mode)
                    except FileExistsError:
                        if not os.path.isdir(d):  # a file (or dangling link) where a directory belongs
                            raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(d)) from None
                        continue
                    if os.stat(d).st_mode & 0o777 != self.dir_mode:
                        os.chmod(d, self.dir_mode)
                return
            except FileNotFoundError:  # a parent was removed while we worked: start again, after a
                time.sleep(0.001 * attempt)  # pause that lets a sweep in progress end (we are in a thread)
        raise FileNotFoundError(errno.ENOENT, "directory keeps being removed while it is created", str(path))

    def _create(self, path: Path, flags: int) -> int:
        """``os.open`` with ``O_CREAT`` and ``file_mode``, which the umask may not narrow."""
        fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, self.file_mode)
        try:
            if os.fstat(fd).st_mode & 0o777 != self.file_mode:
                os.fchmod(fd, self.file_mode)
        except BaseException:
            os.close(fd)
            raise
        return fd

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self._ensure_dir(self.state_root)
        fd = self._create(self.state_root / "lock", os.O_RDWR)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)  # closing releases the lock

    def _write_and_close(self, fd: int, data: bytes) -> None:
        """Write all of ``data`` to ``fd`` (fsync'd when ``durability: fsync``), then close it."""
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view) :]
            if self.fsync:
                os.fsync(fd)
        finally:
            os.close(fd)

    def _write_small(self, path: Path, data: bytes) -> None:
        """Atomic replace of a small state file, from a worker thread."""
        self._ensure_dir(path.parent)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
        fd = self._create(tmp, os.O_WRONLY | os.O_TRUNC)
        self._write_and_close(fd, data)
        os.replace(tmp, path)

    # ------------------------------------------------------------------ lifecycle

    async def open(self) -> None:
        if self._open:
            return
        self._executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="lightspeed-fs")
        roots = [self.state_root]
        if self.collection.feedback_enabled and self.feedback_root:
            roots.append(self.feedback_root)
        if self.collection.transcripts_enabled and self.transcripts_root:
            roots.append(self.transcripts_root)
        try:
            for root in roots:
                await self._run(self._ensure_dir, root)
            if self.collection.feedback_enabled and self.feedback_root:
                await self._run(_remove_stale_temp_files, self.feedback_root)
        except StorageUnavailable:
            self._executor.shutdown(wait=False)
            self._executor = None
            raise
        self._writer.start(asyncio.get_running_loop())
        self._owner_writer.start(asyncio.get_running_loop())
        self._open = True

    async def aclose(self) -> None:
        if not self._open:
            return
        self._open = False
        await self._writer.stop()
        await self._owner_writer.stop()
        if self._executor is not None:
            executor, self._executor = self._executor, None
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown)

    async def ping(self) -> None:
        def probe() -> None:
            dirs = [self.state_root]
            if self.collection.feedback_enabled and self.feedback_root:
                dirs.append(self.feedback_root)
            if self.collection.transcripts_enabled and self.transcripts_root:
                dirs.append(self.transcripts_root)
            for d in dirs:
                self._ensure_dir(d)
                probe_path = d / f".ping.{os.getpid()}.{threading.get_ident()}.tmp"
                fd = os.open(probe_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_CLOEXEC, self.file_mode)
                os.close(fd)
                os.unlink(probe_path)

        await self._run(probe)

    # ------------------------------------------------------------------ records

    async def put_feedback(self, record: FeedbackRecord) -> StoredRecord:
        if self.feedback_root is None:
            raise StorageUnavailable("feedback_storage is not configured")
        data = record.to_json()
        ref = stored_record(record, data)
        await self._put(self._record_path(ref.name), data)
        return ref

    async def put_transcript(self, record: Transcript) -> StoredRecord:
        if self.transcripts_root is None:
            raise StorageUnavailable("transcripts_storage is not configured")
        data = record.to_json()
        ref = stored_record(record, data)
        await self._put(self._record_path(ref.name), data)
        return ref

    async def _put(self, path: Path, data: bytes) -> None:
        if not self._open:
            raise StorageUnavailable("the filesystem store is not open")
        # Shield: a cancelled request must not leave the writer without a future to settle.
        await asyncio.shield(self._writer.submit(path, data))

    # ------------------------------------------------------------------ conversations

    def _owner_path(self, conversation_id: str) -> Path:
        check_conversation_id(conversation_id)
        return self.state_root / "conversations" / conversation_id[-2:] / f"{conversation_id}.json"

    def _remember_owner(self, conversation_id: str, owner: str) -> None:
        self._owners[conversation_id] = owner
        self._owners.move_to_end(conversation_id)
        if len(self._owners) > _OWNER_CACHE_MAX:
            self._owners.popitem(last=False)

    @staticmethod
    def _read_owner(path: Path) -> str:
        """The owner in ``path`` (FileNotFoundError when there is none). From a worker thread.

        An owner file is created, then written: a file still empty, or cut short, is being
        written by a concurrent insert of the same conversation, so it is read again for up
        to :data:`_OWNER_WRITE_SECONDS` before it counts as damaged.
        """
        deadline = time.monotonic() + _OWNER_WRITE_SECONDS
        while True:
            try:
                return str(json.loads(path.read_bytes())["owner"])
            except (ValueError, KeyError, TypeError) as exc:  # being written, or a hand edit or disk fault
                if time.monotonic() > deadline:
                    raise StorageUnavailable(f"conversation owner file {path} is damaged: {exc!r}") from exc
                time.sleep(0.002)

    async def set_conversation_owner(self, conversation_id: str, *, owner: str) -> str:
        check_user_hash(owner)
        known = self._owners.get(conversation_id)
        if known is not None:
            return known
        path = self._owner_path(conversation_id)

        def insert() -> str:
            self._ensure_dir(path.parent)
            # Created in place with O_EXCL, which fails if the conversation already has an owner:
            # one directory change per new conversation, where a temporary file, link(2) and
            # unlink(2) made three. A reader that comes between the create and the write (only a
            # concurrent insert of the same id can) waits for the content: see _read_owner.
            try:
                fd = self._create(path, os.O_WRONLY | os.O_EXCL)
            except FileExistsError:
                return self._read_owner(path)
            self._write_and_close(fd, json.dumps({"owner": owner}).encode())
            return owner

        if not self._open:
            raise StorageUnavailable("the filesystem store is not open")
        # A thread of its own, which takes the inserts of many requests at once: they wait
        # neither for a worker pool's hand-off per call nor behind transcript writes.
        recorded = await asyncio.shield(self._owner_writer.call(insert))
        self._remember_owner(conversation_id, recorded)
        return recorded

    async def get_conversation_owner(self, conversation_id: str) -> str | None:
        known = self._owners.get(conversation_id)
        if known is not None:
            return known
        path = self._owner_path(conversation_id)

        def read() -> str | None:
            try:
                return self._read_owner(path)
            except FileNotFoundError:
                return None

        owner = await self._run(read)
        if owner is not None:
            self._remember_owner(conversation_id, owner)
        return owner

    async def append_turn(self, conversation_id: str, *, turn: ConversationTurn) -> None:
        path = self._owner_path(conversation_id).with_suffix(".turns.jsonl")
        line = json.dumps(turn.to_dict(), ensure_ascii=False).encode("utf-8") + b"\n"

        def append() -> None:
            self._ensure_dir(path.parent)
            # One write(2) with O_APPEND: concurrent appenders never interleave within a line.
            fd = self._create(path, os.O_WRONLY | os.O_APPEND)
            self._write_and_close(fd, line)

        if not self._open:
            raise StorageUnavailable("the filesystem store is not open")
        # On the writer thread, with the transcript of the same answer: one hand-off for both.
        await asyncio.shield(self._writer.call(append))

    async def get_turns(self, conversation_id: str, *, limit: int) -> list[ConversationTurn]:
        path = self._owner_path(conversation_id).with_suffix(".turns.jsonl")
        if limit <= 0:
            return []

        def read() -> list[ConversationTurn]:
            try:
                data = path.read_bytes()
            except FileNotFoundError:
                return []
            lines = [ln for ln in data.split(b"\n") if ln.strip()]
            turns: list[ConversationTurn] = []
            for ln in lines[-limit:]:
                try:
                    turns.append(ConversationTurn.from_dict(json.loads(ln)))
                except (ValueError, KeyError):
                    continue  # a torn last line after a crash: skip it
            return turns

        return await self._run(read)

    # ------------------------------------------------------------------ flags

    def _flag_path(self, name: str) -> Path:
        check_flag_name(name)
        return self.state_root / "flags" / f"{name}.json"

    @staticmethod
    def _read_flag(path: Path) -> bool | None:
        try:
            return bool(json.loads(path.read_bytes())["value"])
        except FileNotFoundError:
            return None

    async def get_flag(self, name: str) -> bool | None:
        # Read by the writer thread, once per batch for every reader queued in it: POST
        # /v1/feedback checks this flag on every request, and a thread-pool hop each was
        # its largest cost after the write itself (docs/benchmarks.md). Still a real read
        # made after this call was queued, so a value set by any process is seen at once.
        path = self._flag_path(name)
        if not self._open:
            raise StorageUnavailable("the filesystem store is not open")
        return await self._writer.read_flag(path)

    async def set_flag(self, name: str, *, value: bool) -> bool | None:
        path = self._flag_path(name)

        def swap() -> bool | None:
            with self._locked():
                try:
                    previous = self._read_flag(path)
                except (ValueError, KeyError, TypeError):  # damaged by hand: setting it repairs it
                    previous = None
                if previous != value:
                    self._write_small(path, json.dumps({"value": value}).encode())
                return previous

        return await self._run(swap)

    # ------------------------------------------------------------------ collection

    def _record_file(self, name: str) -> str:
        """Map a record name back to its file, validating every component (a name may come from
        a caller, so it must never reach outside the roots). Strings, not Paths: a batch can
        hold tens of thousands of records, and this runs for each of them."""
        kind = parse_record_name(name).kind
        if kind is RecordKind.FEEDBACK and self._feedback_dir is not None:
            return self._feedback_dir + name[len("feedback") :]
        if kind is RecordKind.TRANSCRIPT and self._transcripts_dir is not None:
            return self._transcripts_dir + name[len("transcripts") :]
        raise ValueError(f"not a record name of this store: {name!r}")

    def _record_path(self, name: str) -> Path:
        return Path(self._record_file(name))

    def _leaf_dirs(self, kinds: Collection[RecordKind]) -> Iterator[tuple[str, RecordKind, str]]:
        """Every folder that holds records of the given kinds, as (name prefix, kind, path);
        only folders with valid names, and no symlink is followed."""

        def subdirs(directory: str, valid: Callable[[str], bool]) -> list[str]:
            try:
                with os.scandir(directory) as it:
                    return [e.name for e in it if valid(e.name) and e.is_dir(follow_symlinks=False)]
            except (FileNotFoundError, NotADirectoryError):
                return []

        if RecordKind.FEEDBACK in kinds and self.feedback_root is not None:
            yield "feedback", RecordKind.FEEDBACK, os.fspath(self.feedback_root)
        if RecordKind.TRANSCRIPT in kinds and self.transcripts_root is not None:
            root = os.fspath(self.transcripts_root)
            for user in subdirs(root, is_valid_user_hash):
                for conv in subdirs(os.path.join(root, user), is_valid_conversation_id):
                    yield f"transcripts/{user}/{conv}", RecordKind.TRANSCRIPT, os.path.join(root, user, conv)

    @staticmethod
    def _record_files(directory: str) -> Iterator[tuple[str, os.stat_result]]:
        """(record id, lstat) of every record file in ``directory``; removes stale temporary files."""
        try:
            with os.scandir(directory) as it:
                for entry in it:
                    name = entry.name
                    if name.endswith(".json"):
                        rid = name[:-5]
                        if (
                            is_valid_record_id(rid)
                            and entry.is_file(follow_symlinks=False)
                            and (st := _lstat(entry)) is not None
                        ):
                            yield rid, st
                    elif name.endswith(".tmp"):
                        _remove_if_stale(entry)
        except (FileNotFoundError, NotADirectoryError):
            return

    def _scan(self, kinds: Collection[RecordKind]) -> Iterator[tuple[int, str, int, RecordKind]]:
        """Every record file of the given kinds as (mtime_ns, name, size, kind); no symlink is followed."""
        for prefix, kind, directory in self._leaf_dirs(kinds):
            for rid, st in self._record_files(directory):
                yield (st.st_mtime_ns, f"{prefix}/{rid}.json", st.st_size, kind)

    def _scan_backlog(self, kinds: Collection[RecordKind], skip: Collection[str]) -> _Backlog:
        """One scan of the tree: the oldest records whose names are not in ``skip``."""
        backlog = _Backlog(kinds, time.monotonic())
        for prefix, kind, directory in self._leaf_dirs(kinds):
            folder = -1
            for rid, st in self._record_files(directory):
                if skip and f"{prefix}/{rid}.json" in skip:
                    continue
                if folder < 0:
                    folder = backlog.add_folder(prefix, kind)
                backlog.add(st.st_mtime_ns, folder, rid, st.st_size)
        backlog.finish()
        return backlog

    def _load_claims(self, now: float) -> dict[str, dict[str, Any]]:
        """Live claims by id; expired claim files are left for their owner to clean up."""
        claims: dict[str, dict[str, Any]] = {}
        directory = self.state_root / "claims"
        try:
            entries = list(os.scandir(directory))
        except FileNotFoundError:
            return claims
        for entry in entries:
            if not entry.name.endswith(".json"):
                continue
            try:
                data = json.loads(Path(entry.path).read_bytes())
            except (FileNotFoundError, ValueError):
                continue
            claims[entry.name[:-5]] = data
        return claims

    def _claim_path(self, claim_id: str) -> Path:
        if not is_valid_record_id(claim_id):
            raise ValueError(f"invalid claim id {claim_id!r}")
        return self.state_root / "claims" / f"{claim_id}.json"

    def _held_by_others(self, claim_id: str, now: float) -> set[str]:
        held: set[str] = set()
        for cid, data in self._load_claims(now).items():
            if cid != claim_id and float(data["expires_at"]) > now:
                held.update(data["records"])
        return held

    def _prune_expired_claims(self, now: float, exported: set[str]) -> None:
        """Remove the files of expired claims (of collectors that died) whose records are all
        gone or exported, so dead collectors do not leave files for every later claim to read.
        A claim with a record still pending keeps its file: its owner must still learn
        ``ClaimLost`` if another claim took that record. Called under the lock."""
        for cid, data in self._load_claims(now).items():
            if float(data["expires_at"]) > now:
                continue
            pending = False
            for name in data["records"]:
                try:
                    if name not in exported and self._record_path(name).exists():
                        pending = True
                        break
                except ValueError:
                    continue
            if not pending:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(self._claim_path(cid))

    def _load_exported(self) -> set[str]:
        path = self.state_root / "exported.log"
        try:
            fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
        except FileNotFoundError:
            self._exported.clear()
            self._exported_pos = (0, 0)
            return self._exported
        with os.fdopen(fd, "rb") as fh:
            inode = os.fstat(fh.fileno()).st_ino
            if inode != self._exported_pos[0]:
                self._exported.clear()
                self._exported_pos = (inode, 0)
            fh.seek(self._exported_pos[1])
            chunk = fh.read()
        complete = chunk[: chunk.rfind(b"\n") + 1]
        self._exported.update(line.decode() for line in complete.splitlines() if line)
        self._exported_pos = (inode, self._exported_pos[1] + len(complete))
        return self._exported

    def _take(
        self, backlog: _Backlog, held: set[str], exported: set[str], max_records: int, max_bytes: int
    ) -> list[StoredRecord]:
        """The next records to claim from ``backlog``, oldest first. Called under the lock."""
        fill = ClaimFill(max_records, max_bytes)
        while not fill.full and (item := backlog.peek()) is not None:
            name, size, kind = item
            if name in held or name in exported:
                backlog.pos += 1
                continue
            # Not checked to still exist: an lstat per record costs as much as the scan saved
            # (the previous batch's files are being deleted meanwhile). A record another
            # collector acked since the scan reads as missing, which read_many reports.
            if not fill.offer(StoredRecord(kind=kind, record_id=name[-41:-5], name=name, size=size)):
                break
            backlog.pos += 1
        chosen = fill.records
        return chosen

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

        def do_claim() -> Claim:
            with self._locked():
                now = time.time()
                held = self._held_by_others("", now)
                exported = self._load_exported()
                backlog = self._backlog
                chosen: list[StoredRecord] = []
                if backlog is not None and backlog.fresh(kinds, time.monotonic()):
                    chosen = self._take(backlog, held, exported, max_records, max_bytes)
                if not chosen:  # the last scan's backlog is used up (or stale): look again
                    backlog = self._backlog = self._scan_backlog(kinds, held | exported)
                    chosen = self._take(backlog, held, exported, max_records, max_bytes)
                claim_id = str(uuid.uuid4())
                expires = now + lease_seconds
                if chosen:
                    body = {"owner": owner, "expires_at": expires, "records": [r.name for r in chosen]}
                    self._write_small(self._claim_path(claim_id), json.dumps(body).encode())
                self._prune_expired_claims(now, exported)
                return Claim(claim_id=claim_id, owner=owner, expires_at=expires, records=tuple(chosen))

        return await self._run(do_claim)

    async def read_record(self, record: StoredRecord) -> bytes:
        path = self._record_path(record.name)

        def read() -> bytes:
            try:
                fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
            except FileNotFoundError:
                raise RecordNotFound(f"record {record.name} no longer exists") from None
            except OSError as exc:
                if exc.errno == errno.ELOOP:
                    raise RecordNotFound(f"record {record.name} is a symbolic link; not read") from None
                raise
            with os.fdopen(fd, "rb") as fh:
                return fh.read()

        return await self._run(read)

    async def read_many(self, records: Sequence[StoredRecord]) -> list[bytes | None]:
        paths = [self._record_file(r.name) for r in records]

        def read_all() -> list[bytes | None]:
            out: list[bytes | None] = []
            for path, rec in zip(paths, records, strict=True):
                try:
                    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
                except OSError as exc:
                    if exc.errno in (errno.ENOENT, errno.ELOOP):  # deleted, or a symbolic link: not read
                        out.append(None)
                        continue
                    raise
                try:
                    out.append(_read_fd(fd, rec.size))
                finally:
                    os.close(fd)
            return out

        return await self._run(read_all)

    def _update_claim(self, claim: Claim, remaining: Sequence[str], expires_at: float | None = None) -> None:
        path = self._claim_path(claim.claim_id)
        if not remaining:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            return
        try:
            data = json.loads(path.read_bytes())
        except FileNotFoundError:
            data = {"owner": claim.owner, "expires_at": claim.expires_at}
        data["records"] = list(remaining)
        if expires_at is not None:
            data["expires_at"] = expires_at
        self._write_small(path, json.dumps(data).encode())

    def _current_names(self, claim: Claim) -> list[str]:
        try:
            return list(json.loads(self._claim_path(claim.claim_id).read_bytes())["records"])
        except FileNotFoundError:
            return []

    async def renew(self, claim: Claim, *, lease_seconds: float) -> Claim:
        def do_renew() -> Claim:
            with self._locked():
                now = time.time()
                names = self._current_names(claim)
                held = self._held_by_others(claim.claim_id, now)
                if held.intersection(names):  # a claim with no records left is renewed as empty
                    raise ClaimLost(f"claim {claim.claim_id} was taken over after its lease expired")
                expires = now + lease_seconds
                self._update_claim(claim, names, expires)
                keep = set(names)
                return Claim(
                    claim_id=claim.claim_id,
                    owner=claim.owner,
                    expires_at=expires,
                    records=tuple(r for r in claim.records if r.name in keep),
                )

        return await self._run(do_renew)

    def _settle_records(
        self,
        claim: Claim,
        records: Sequence[StoredRecord] | None,
        action: Callable[[list[StoredRecord]], None],
        *,
        strict: bool,
        act_unlocked: bool = False,
    ) -> None:
        with self._locked():
            now = time.time()
            # Only what is still in the claim: a record released earlier is not acked with it.
            current = set(self._current_names(claim))
            targets = [r for r in (claim.records if records is None else records) if r.name in current]
            held = self._held_by_others(claim.claim_id, now)
            lost = [r.name for r in targets if r.name in held]
            if lost and strict:
                raise ClaimLost(
                    f"claim {claim.claim_id}: {len(lost)} record(s) were taken over by another collector"
                    f" after the lease expired (first: {lost[0]})"
                )
            targets = [r for r in targets if r.name not in held]
            done = {r.name for r in targets} | set(lost)
            if not act_unlocked:
                action(targets)
                self._update_claim(claim, [n for n in self._current_names(claim) if n not in done])
                return
        # Deleting thousands of files takes a while; the claim (still listing these records)
        # keeps every other collector off them meanwhile, so other claims and acks need not wait.
        action(targets)
        with self._locked():
            self._update_claim(claim, [n for n in self._current_names(claim) if n not in done])

    async def ack(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None, delete: bool) -> None:
        def delete_files(targets: list[StoredRecord]) -> None:
            # Plain strings, not Path objects: a batch can hold tens of thousands of records.
            paths = [self._record_file(rec.name) for rec in targets]
            _unlink_all(paths)
            parents = {
                os.path.dirname(path)
                for path, rec in zip(paths, targets, strict=True)
                if rec.kind is RecordKind.TRANSCRIPT
            }
            del paths
            # Linear clean-up: try each emptied conversation folder once, then its user folder.
            users: set[str] = set()
            for conv_dir in parents:
                with contextlib.suppress(OSError):
                    os.rmdir(conv_dir)  # fails harmlessly when not empty
                    users.add(os.path.dirname(conv_dir))
            for user_dir in users:
                with contextlib.suppress(OSError):
                    os.rmdir(user_dir)

        def mark_exported(targets: list[StoredRecord]) -> None:
            if not targets:
                return
            path = self.state_root / "exported.log"
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, self.file_mode)
            self._write_and_close(fd, "".join(f"{r.name}\n" for r in targets).encode())

        action = delete_files if delete else mark_exported
        await self._run(
            functools.partial(self._settle_records, claim, records, action, strict=True, act_unlocked=delete)
        )

    async def release(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None) -> None:
        def forget_backlog(targets: list[StoredRecord]) -> None:
            if targets:  # released records are older than the backlog's: the next claim scans again
                self._backlog = None

        await self._run(functools.partial(self._settle_records, claim, records, forget_backlog, strict=False))

    async def set_aside(self, claim: Claim, *, records: Sequence[StoredRecord], reason: str) -> None:
        def move(targets: list[StoredRecord]) -> None:
            for rec in targets:
                src = self._record_path(rec.name)
                dst = self.state_root / "aside" / rec.name
                self._ensure_dir(dst.parent)
                try:
                    os.rename(src, dst)
                except FileNotFoundError:
                    continue
                except OSError as exc:
                    if exc.errno != errno.EXDEV:
                        raise
                    shutil.copy2(src, dst)
                    os.unlink(src)
                self._write_small(dst.with_name(dst.name + ".reason"), reason.encode())

        await self._run(functools.partial(self._settle_records, claim, list(records), move, strict=True))

    async def pending_stats(self) -> PendingStats:
        def count() -> PendingStats:
            with self._locked():
                exported = set(self._load_exported())
            n = {k: 0 for k in RecordKind}
            b = {k: 0 for k in RecordKind}
            for _, name, size, kind in self._scan(tuple(RecordKind)):
                if name in exported:
                    continue
                n[kind] += 1
                b[kind] += size
            return PendingStats(records=n, bytes=b)

        return await self._run(count)
