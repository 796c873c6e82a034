"""Streaming tar.gz archives of stored records, spilled to a temporary file.

The event loop reads records in chunks from the storage backend while a worker thread
packs the previous chunk into the archive (zlib releases the GIL), so reading and
compressing overlap; at most two chunks are in memory at once and the archive itself is
never held in memory. Member names are the records' :attr:`StoredRecord.name`
(``feedback/{id}.json``, ``transcripts/{user}/{conversation}/{id}.json``).
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import os
import tarfile
import tempfile
import time
import zlib
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Final

import attrs

from lightspeed.storage import StorageBackend, StoredRecord

__all__ = ["Archive", "build_archive", "COMPRESS_LEVEL", "CHUNK_RECORDS"]

#: gzip level: 6 is gzip's and ``tar czf``'s default; see docs/benchmarks.md for the measurements.
COMPRESS_LEVEL: Final = 6
#: Records read from storage per hop to its worker thread.
CHUNK_RECORDS: Final = 256
_BLOCK: Final = tarfile.BLOCKSIZE
_RECORD: Final = tarfile.RECORDSIZE
_WRITE_BUFFER: Final = 1 << 20


class ArchiveTooLarge(Exception):
    """The compressed archive grew past the size limit."""


@attrs.frozen(kw_only=True)
class Archive:
    """A finished archive on disk; the caller deletes ``path`` (:meth:`discard`)."""

    path: Path
    #: Compressed size in bytes.
    size: int
    #: Records packed into the archive, in order.
    records: tuple[StoredRecord, ...]
    #: Records of the batch that no longer existed when read (deleted by someone else).
    missing: tuple[StoredRecord, ...]
    #: Sum of the packed records' JSON sizes.
    raw_bytes: int

    def discard(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.path)


class _Packer:
    """Writes tar members into a gzip stream; runs on one worker thread."""

    def __init__(self, path: Path, *, max_bytes: int, level: int) -> None:
        self._raw = open(path, "wb", buffering=0)  # noqa: SIM115 - closed in finish/abort
        self._out = io.BufferedWriter(self._raw, _WRITE_BUFFER)
        self._zip = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9)
        self._crc = 0
        self._length = 0
        self._max = max_bytes
        self._mtime = int(time.time())
        # gzip header: magic, deflate, no flags, mtime, no extra flags, OS unknown
        self._out.write(b"\x1f\x8b\x08\x00" + self._mtime.to_bytes(4, "little") + b"\x00\xff")

    def _write(self, data: bytes) -> None:
        self._crc = zlib.crc32(data, self._crc)
        self._length += len(data)
        out = self._zip.compress(data)
        if out:
            self._out.write(out)
            if self._out.tell() > self._max:
                raise ArchiveTooLarge

    def add(self, items: Sequence[tuple[str, bytes]]) -> None:
        parts: list[bytes] = []
        for name, data in items:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            info.mtime = self._mtime
            info.mode = 0o644
            parts.append(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict"))
            parts.append(data)
            rest = len(data) % _BLOCK
            if rest:
                parts.append(b"\0" * (_BLOCK - rest))
        self._write(b"".join(parts))

    def finish(self) -> int:
        # End of archive: two zero blocks, padded to a whole tar record like tar(1) does.
        end = 2 * _BLOCK
        total = self._length + end
        end += (-total) % _RECORD
        self._write(b"\0" * end)
        self._out.write(self._zip.flush())
        self._out.write(self._crc.to_bytes(4, "little") + (self._length & 0xFFFFFFFF).to_bytes(4, "little"))
        self._out.flush()
        size = self._out.tell()
        self._out.close()
        if size > self._max:
            raise ArchiveTooLarge
        return size

    def abort(self) -> None:
        with contextlib.suppress(OSError, ValueError):
            self._out.close()


async def build_archive(
    storage: StorageBackend,
    records: Sequence[StoredRecord],
    *,
    max_bytes: int,
    directory: str | os.PathLike[str] | None = None,
    level: int = COMPRESS_LEVEL,
    chunk_records: int = CHUNK_RECORDS,
) -> Archive:
    """Pack ``records`` (read through ``storage``) into a new ``.tar.gz`` file.

    Raises :class:`ArchiveTooLarge` (having removed the file) as soon as the compressed
    size passes ``max_bytes``; storage errors propagate likewise.
    """
    fd, name = tempfile.mkstemp(prefix="lightspeed-upload-", suffix=".tar.gz", dir=directory)
    os.close(fd)
    path = Path(name)
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=1, thread_name_prefix="lightspeed-archive")
    packer: _Packer | None = None
    packed: list[StoredRecord] = []
    missing: list[StoredRecord] = []
    raw = 0
    try:
        packer = await loop.run_in_executor(pool, lambda: _Packer(path, max_bytes=max_bytes, level=level))
        previous: asyncio.Future[None] | None = None
        for start in range(0, len(records), chunk_records):
            chunk = records[start : start + chunk_records]
            contents = await storage.read_many(chunk)
            items: list[tuple[str, bytes]] = []
            for rec, data in zip(chunk, contents, strict=True):
                if data is None:
                    missing.append(rec)
                    continue
                items.append((rec.name, data))
                packed.append(rec)
                raw += len(data)
            if previous is not None:
                await previous  # compress chunk k while chunk k+1 was being read
            previous = loop.run_in_executor(pool, packer.add, items)
        if previous is not None:
            await previous
        size = await loop.run_in_executor(pool, packer.finish)
    except BaseException:
        if packer is not None:
            # Runs after any add() still queued on the single worker thread.
            await asyncio.shield(loop.run_in_executor(pool, packer.abort))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    finally:
        pool.shutdown(wait=False)
    return Archive(path=path, size=size, records=tuple(packed), missing=tuple(missing), raw_bytes=raw)
