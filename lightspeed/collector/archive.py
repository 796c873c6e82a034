"""Streaming tar.gz archives of stored records, spilled to a temporary file.

The event loop reads records in chunks from the storage backend while worker threads
pack earlier chunks, each into one gzip member (zlib releases the GIL, so reading and
compressing overlap and two chunks compress at once); the members are written in order to
a temporary file, and concatenated gzip members are one valid ``.tar.gz`` (RFC 1952, as
pigz writes). Only a few chunks are in memory at once; the archive never is. Member names
are the records' :attr:`StoredRecord.name`
(``feedback/{id}.json``, ``transcripts/{user}/{conversation}/{id}.json``).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import os
import re
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

__all__ = ["Archive", "build_archive", "COMPRESS_LEVEL", "CHUNK_RECORDS", "remove_orphaned_archives"]

#: gzip level when none is given (``data_collector.compression_level`` sets it): level 1
#: compresses this data about 1.8x faster than gzip's default 6, for archives about 9% larger;
#: see docs/benchmarks.md.
COMPRESS_LEVEL: Final = 1
#: Records read from storage per hop to its worker thread.
CHUNK_RECORDS: Final = 256
_BLOCK: Final = tarfile.BLOCKSIZE
_RECORD: Final = tarfile.RECORDSIZE
_ZEROS: Final = bytes(tarfile.BLOCKSIZE)
#: Threads compressing chunks at once (each chunk becomes one gzip member, as pigz does).
_WORKERS: Final = 2
#: An archive file's name, ``lightspeed-upload-{pid}-{random}.tar.gz``: the process id tells
#: the file of a collector that died (SIGKILL, the OOM killer) from one still at work.
_SPOOL_NAME: Final = re.compile(r"lightspeed-upload-(\d{1,10})-[A-Za-z0-9_]+\.tar\.gz")


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


def _header_template(mtime: int) -> bytes:
    info = tarfile.TarInfo("")
    info.mtime = mtime
    info.mode = 0o644
    return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "strict")


def _header(template: bytes, name: bytes, size: int) -> bytes:
    """A ustar header for a regular file: ``template`` with name, size and checksum filled in.

    The same bytes as :meth:`tarfile.TarInfo.tobuf` in ``USTAR_FORMAT`` (a test checks it),
    at a fraction of the cost; long names are split at a slash into prefix and name.
    """
    prefix = b""
    if len(name) > 100:
        cut = name.find(b"/")  # the shortest prefix that leaves a name of at most 100 bytes, as tarfile does
        while cut != -1 and len(name) - cut - 1 > 100:
            cut = name.find(b"/", cut + 1)
        if cut <= 0 or cut > 155:
            raise ValueError(f"name too long for a ustar header: {name!r}")
        prefix, name = name[:cut], name[cut + 1 :]
    if size >= 8**11:
        raise ValueError(f"record too large for a ustar header: {size} bytes")
    h = bytearray(template)
    h[0 : len(name)] = name
    h[124:136] = b"%011o\0" % size
    h[345 : 345 + len(prefix)] = prefix
    h[148:156] = b"        "  # the checksum counts its own field as spaces
    h[148:156] = b"%06o\0 " % sum(h)
    return bytes(h)


def _tar_chunk(items: Sequence[tuple[str, bytes]], template: bytes) -> bytes:
    """The tar members (ustar headers, data, padding) of a chunk of records."""
    parts: list[bytes] = []
    for name, data in items:
        parts.append(_header(template, name.encode("ascii"), len(data)))
        parts.append(data)
        rest = len(data) % _BLOCK
        if rest:
            parts.append(_ZEROS[: _BLOCK - rest])
    return b"".join(parts)


def _gzip_member(data: bytes, level: int, mtime: int) -> bytes:
    """``data`` as one complete gzip member (RFC 1952); members concatenate into one valid file."""
    comp = zlib.compressobj(level, zlib.DEFLATED, -zlib.MAX_WBITS, 9)
    xfl = b"\x02" if level == 9 else b"\x04" if level == 1 else b"\x00"  # as gzip(1) marks them
    header = b"\x1f\x8b\x08\x00" + mtime.to_bytes(4, "little") + xfl + b"\xff"
    trailer = zlib.crc32(data).to_bytes(4, "little") + (len(data) & 0xFFFFFFFF).to_bytes(4, "little")
    return header + comp.compress(data) + comp.flush() + trailer


def _pack(items: Sequence[tuple[str, bytes]], level: int, mtime: int) -> tuple[bytes, int]:
    """Runs on a worker thread (zlib releases the GIL): the chunk's compressed member and tar length."""
    tar = _tar_chunk(items, _header_template(mtime))
    return _gzip_member(tar, level, mtime), len(tar)


def _pack_end(length: int, level: int, mtime: int) -> tuple[bytes, int]:
    return _gzip_member(bytes(length), level, mtime), length


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
    fd, name = tempfile.mkstemp(prefix=f"lightspeed-upload-{os.getpid()}-", suffix=".tar.gz", dir=directory)
    path = Path(name)
    out = os.fdopen(fd, "wb")
    loop = asyncio.get_running_loop()
    pool = ThreadPoolExecutor(max_workers=_WORKERS, thread_name_prefix="lightspeed-archive")
    in_flight: collections.deque[asyncio.Future[tuple[bytes, int]]] = collections.deque()
    mtime = int(time.time())
    packed: list[StoredRecord] = []
    missing: list[StoredRecord] = []
    raw = size = tar_length = 0

    async def write_oldest() -> None:
        nonlocal size, tar_length
        member, length = await in_flight.popleft()
        await loop.run_in_executor(pool, out.write, member)
        size += len(member)
        tar_length += length
        if size > max_bytes:
            raise ArchiveTooLarge

    try:
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
            if items:
                # Compress this chunk while the next ones are read; members are written in order.
                in_flight.append(loop.run_in_executor(pool, _pack, items, level, mtime))
            while len(in_flight) > _WORKERS:
                await write_oldest()
        while in_flight:
            await write_oldest()
        # End of archive: two zero blocks, padded to a whole tar record as tar(1) does.
        end = 2 * _BLOCK
        end += (-(tar_length + end)) % _RECORD
        in_flight.append(loop.run_in_executor(pool, _pack_end, end, level, mtime))
        await write_oldest()
        await loop.run_in_executor(pool, out.close)
    except BaseException:
        for fut in in_flight:
            fut.cancel()
        await asyncio.shield(loop.run_in_executor(pool, out.close))
        with contextlib.suppress(FileNotFoundError):
            os.unlink(path)
        raise
    finally:
        pool.shutdown(wait=False)
    return Archive(path=path, size=size, records=tuple(packed), missing=tuple(missing), raw_bytes=raw)


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except (OverflowError, ValueError):  # no such process id
        return False
    return True


def remove_orphaned_archives(directory: str | os.PathLike[str] | None = None) -> list[str]:
    """Remove the archive files that collectors which no longer run left in ``directory`` (the
    system's temporary directory by default); only this user's regular files. Blocking.

    A collector removes its archive after the upload, also when the upload fails; only a
    process killed meanwhile leaves one (up to ``max_payload_bytes``), and nothing else would
    ever remove it. A host's processes only: a temporary directory shared across process
    namespaces may have a live collector's file removed, and that upload fails and is retried.
    """
    removed: list[str] = []
    uid = os.getuid()
    with contextlib.suppress(OSError), os.scandir(directory or tempfile.gettempdir()) as entries:
        for entry in entries:
            found = _SPOOL_NAME.fullmatch(entry.name)
            if found is None or (pid := int(found.group(1))) == os.getpid() or _running(pid):
                continue
            with contextlib.suppress(OSError):
                st = entry.stat(follow_symlinks=False)
                if st.st_uid == uid and entry.is_file(follow_symlinks=False):
                    os.unlink(entry.path)
                    removed.append(entry.path)
    return removed
