"""Atomic file writes and directory handling (blocking; called from the store's lanes).

Every file the store writes goes to a temporary name in its target directory (a dot file
ending in ``.tmp``, never ``.json``) and is renamed into place, so a tool globbing ``*.json``
only ever sees complete files. A failed write removes its temporary file.
"""

from __future__ import annotations

import contextlib
import errno
import itertools
import os
import stat
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Final

__all__ = [
    "STALE_TEMP_SECONDS",
    "Stamp",
    "create",
    "describe",
    "ensure_dir",
    "fsync_dir",
    "make_dir",
    "process_umask",
    "read_fd",
    "read_records",
    "remove_if_stale",
    "remove_stale_temp_files",
    "unusable",
    "write_and_close",
    "write_atomic",
]

#: A temporary file this old was left by a process that died mid-write.
STALE_TEMP_SECONDS: Final = 3600.0

_counter = itertools.count()
#: This process's id, for temporary names (``os.getpid`` is a system call each time).
_pid = os.getpid()


def _forked() -> None:
    global _pid  # the one process-wide value, renewed in a forked child
    _pid = os.getpid()


os.register_at_fork(after_in_child=_forked)


def process_umask() -> int | None:
    """The process's umask, read from ``/proc`` (``os.umask`` can only read it by changing
    it, for every thread at once); ``None`` where ``/proc`` does not say."""
    try:
        with open("/proc/self/status", "rb") as fh:
            for line in fh:
                if line.startswith(b"Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    return None


def describe(exc: OSError) -> str:
    """``No space left on device (ENOSPC)``: what an operator can act on."""
    return f"{exc.strerror or exc} ({errno.errorcode.get(exc.errno or 0, exc.errno)})"


def unusable(setting: str, root: Path, exc: OSError) -> str:
    """``feedback_storage /data/feedback cannot be written: Not a directory (ENOTDIR) (/data)``: the
    setting, its directory, the cause, and the path that failed when it is another one."""
    failed = os.fspath(exc.filename) if exc.filename else ""
    if failed.endswith(".tmp"):  # a temporary file of ours: its directory is what matters
        failed = os.path.dirname(failed)
    where = f" ({failed})" if failed and failed != os.fspath(root) else ""
    return f"{setting} {root} cannot be written: {describe(exc)}{where}"


def ensure_dir(path: Path, mode: int) -> None:
    """Create ``path`` and its missing parents with ``mode`` (which the umask may not narrow).

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
                    os.mkdir(d, mode)
                except FileExistsError:
                    if not os.path.isdir(d):  # a file (or dangling link) where a directory belongs
                        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), str(d)) from None
                    continue
                if os.stat(d).st_mode & 0o777 != mode:
                    os.chmod(d, mode)
            return
        except FileNotFoundError:  # a parent was removed while we worked: start again after a
            time.sleep(0.001 * attempt)  # pause that lets a sweep in progress end (we are in a thread)
    raise FileNotFoundError(errno.ENOENT, "directory keeps being removed while it is created", str(path))


def make_dir(path: str, mode: int, *, check_mode: bool = True) -> None:
    """Create the folder ``path`` (its parent exists, usually) with ``mode``: one ``mkdir``
    where :func:`ensure_dir` first looks at each level; fine when it exists already. Without
    ``check_mode`` (the umask cannot narrow ``mode``) the new folder's mode is not checked."""
    try:
        os.mkdir(path, mode)
    except FileExistsError:
        return
    except FileNotFoundError:
        ensure_dir(Path(path), mode)
        return
    if check_mode and os.stat(path).st_mode & 0o777 != mode:
        os.chmod(path, mode)


def create(path: Path | str, flags: int, mode: int, *, check_mode: bool = True) -> int:
    """``os.open`` with ``O_CREAT`` and ``mode``, which the umask may not narrow (without
    ``check_mode``, the caller knows it cannot, and the mode is not checked)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, mode)
    if not check_mode:
        return fd
    try:
        if os.fstat(fd).st_mode & 0o777 != mode:
            os.fchmod(fd, mode)
    except BaseException:
        os.close(fd)
        raise
    return fd


def write_and_close(fd: int, data: bytes, *, fsync: bool, stamp_ns: int | None = None) -> None:
    """Write all of ``data`` (completing short writes), optionally set the file's times and
    fsync it, then close ``fd`` whatever happens."""
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        if stamp_ns is not None:
            os.utime(fd, ns=(stamp_ns, stamp_ns))
        if fsync:
            os.fsync(fd)
    finally:
        os.close(fd)


class Stamp:
    """Modification times for record files, each later than the last: claims take records
    oldest first by mtime, and the filesystem's clock ticks too coarsely (a jiffy on ext4)
    to tell apart records written one after the other. Thread-safe."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self) -> int:
        with self._lock:
            self._last = max(time.time_ns(), self._last + 1)
            return self._last


def write_atomic(
    path: Path | str,
    data: bytes,
    *,
    mode: int,
    dir_mode: int,
    fsync: bool,
    stamp_ns: int | None = None,
    new_dir: bool = False,
    check_mode: bool = True,
) -> None:
    """Write ``path`` atomically: a temporary dot file in the same directory, renamed into place.

    Missing directories are created (with ``dir_mode``), also when removed while we write;
    ``new_dir`` says the folder is probably new (a new conversation's): it is made first,
    rather than after a failed attempt. ``check_mode`` false: the caller knows the umask
    cannot narrow the modes (see :func:`create`). On any failure the temporary file is
    removed and ``path`` is untouched. The directory itself is not fsync'd here (see
    :func:`fsync_dir`: a batch shares that).
    """
    path = os.fspath(path)
    directory, name = os.path.split(path)
    tmp = f"{directory}/.{name}.{_pid}.{next(_counter)}.tmp"
    if new_dir:
        make_dir(directory, dir_mode, check_mode=check_mode)
    for attempt in range(10):
        try:
            fd = create(tmp, os.O_WRONLY | os.O_EXCL, mode, check_mode=check_mode)
            break
        except FileNotFoundError:
            if attempt == 9:
                raise
            ensure_dir(Path(directory), dir_mode)
    try:
        write_and_close(fd, data, fsync=fsync, stamp_ns=stamp_ns)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def fsync_dir(path: Path | str) -> None:
    """Make the names created or removed in ``path`` durable."""
    fd = os.open(path, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_fd(fd: int, size: int) -> bytes:
    """All of an open file whose size is probably ``size``: one read of that much (plus one byte,
    to see the end), rather than large reads that allocate big buffers only to shrink them."""
    data = os.read(fd, size + 1)
    if len(data) == size:
        return data  # the whole file: short reads of regular files happen only at the end
    parts = [data]
    while chunk := os.read(fd, 1 << 16):
        parts.append(chunk)
    return b"".join(parts)


def read_records(paths: Sequence[str], sizes: Sequence[int]) -> list[bytes | None]:
    """The bytes of each file (``None`` for one deleted, or a symbolic link: never followed)."""
    out: list[bytes | None] = []
    for path, size in zip(paths, sizes, strict=True):
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP):
                out.append(None)
                continue
            raise
        try:
            out.append(read_fd(fd, size))
        finally:
            os.close(fd)
    return out


def remove_if_stale(entry: os.DirEntry[str]) -> None:
    """Remove a writer's temporary dot file (never a record) left behind by a killed process."""
    if not entry.name.startswith("."):
        return
    with contextlib.suppress(OSError):
        st = entry.stat(follow_symlinks=False)
        if stat.S_ISREG(st.st_mode) and time.time() - st.st_mtime > STALE_TEMP_SECONDS:
            os.unlink(entry.path)


def remove_stale_temp_files(directory: Path) -> None:
    with contextlib.suppress(FileNotFoundError, NotADirectoryError), os.scandir(directory) as it:
        for entry in it:
            if entry.name.endswith(".tmp"):
                remove_if_stale(entry)
