"""The data directory as the exporter reads it: which files are candidates (``*.json``, regular,
with a name an archive can hold, outside the state directory and the subdirectories not
allowed), which are complete (valid JSON, checked once per version), their exact bytes by
fingerprint, and deleting or moving files after an upload. Blocking; the caller runs it off
the event loop (see :mod:`lightspeed.exporter.directory`)."""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import shutil
import stat
import tarfile
from collections.abc import Iterator, Mapping
from pathlib import Path

from lightspeed.records import RecordKind

__all__ = ["DataFiles", "Fingerprint", "fingerprint"]

log = logging.getLogger("lightspeed.exporter")

#: Fingerprint of a file: inode, size, modification time (ns).
Fingerprint = tuple[int, int, int]


def fingerprint(st: os.stat_result) -> Fingerprint:
    """The fingerprint of a file's ``stat``."""
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _ustar_name_ok(name: str) -> bool:
    try:
        tarfile.TarInfo(name).tobuf(tarfile.USTAR_FORMAT, "ascii", "strict")
    except (ValueError, UnicodeError):
        return False
    return True


class DataFiles:
    """The candidate files under ``data_dir``, named by their path relative to it (``a/b.json``)."""

    def __init__(self, data_dir: Path, *, state_dir: Path, allowed_subdirs: frozenset[str]) -> None:
        self.data_dir = data_dir
        self.state_dir = state_dir
        self.allowed_subdirs = allowed_subdirs
        #: Files found complete (or not) by fingerprint, so a file is parsed once per version.
        self._complete: dict[str, tuple[Fingerprint, bool]] = {}
        self._warned: set[tuple[str, Fingerprint | None]] = set()

    @staticmethod
    def kind(name: str) -> RecordKind:
        """Files under feedback/ are feedback; every other file counts as a transcript in the metrics."""
        return RecordKind.FEEDBACK if name.startswith("feedback/") else RecordKind.TRANSCRIPT

    def path(self, name: str) -> str:
        """The file of a record name, checked to stay inside the data directory."""
        parts = name.split("/")
        if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"not a record name of this directory: {name!r}")
        return os.path.join(self.data_dir, *parts)

    def scan(self) -> Iterator[tuple[str, os.stat_result]]:
        """(name relative to the data directory, lstat) of every candidate ``*.json`` file."""
        root = os.fspath(self.data_dir)
        state = os.fspath(self.state_dir)
        for dirpath, dirnames, filenames in os.walk(root, followlinks=False):
            rel = os.path.relpath(dirpath, root)
            if rel == ".":
                rel = ""
                if self.allowed_subdirs:
                    dirnames[:] = [d for d in dirnames if d in self.allowed_subdirs]
            dirnames[:] = [d for d in dirnames if os.path.join(dirpath, d) != state]
            if rel == "" and self.allowed_subdirs:
                continue  # files directly in the data directory are in no allowed subdirectory
            for filename in filenames:
                if not filename.endswith(".json"):
                    continue
                name = f"{rel}/{filename}" if rel else filename
                name = name.replace(os.sep, "/")
                try:
                    st = os.lstat(os.path.join(dirpath, filename))
                except FileNotFoundError:
                    continue
                if not stat.S_ISREG(st.st_mode):  # symbolic links and the rest are never read
                    self.warn_once(name, None, "is not a regular file (a symbolic link?): never collected")
                    continue
                if not _ustar_name_ok(name):
                    self.warn_once(name, None, "has a name an archive cannot hold (not ASCII, or too long): skipped")
                    continue
                yield name, st

    def warn_once(self, name: str, fp: Fingerprint | None, what: str) -> None:
        """Log ``name`` ``what`` once per version of the file."""
        if (name, fp) not in self._warned:
            self._warned.add((name, fp))
            log.warning("%s %s", name, what)

    def is_complete(self, name: str, fp: Fingerprint) -> bool:
        """Parses as JSON (checked once per version of the file)."""
        cached = self._complete.get(name)
        if cached is not None and cached[0] == fp:
            return cached[1]
        ok = False
        try:
            data = self.read_exact(name, fp)
        except OSError:
            data = None
        if data is not None:
            try:
                json.loads(data)
                ok = True
            except ValueError:
                self.warn_once(name, fp, "has not changed for the settle time but is not valid JSON: left in place")
        self._complete[name] = (fp, ok)
        return ok

    def read_exact(self, name: str, fp: Fingerprint) -> bytes | None:
        """The file's bytes if it still has fingerprint ``fp``; ``None`` if it changed or is gone."""
        try:
            fd = os.open(self.path(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return None
            raise
        with os.fdopen(fd, "rb") as fh:
            if fingerprint(os.fstat(fh.fileno())) != fp:
                return None
            data = fh.read(fp[1] + 1)
            if len(data) != fp[1] or fingerprint(os.fstat(fh.fileno())) != fp:
                return None  # written to while we read
            return data

    def delete(self, files: dict[str, Fingerprint]) -> None:
        """Delete each file that still has the fingerprint that was sent; then the folders this empties,
        below the top-level subdirectory (which the writing program may expect to exist)."""
        parents: set[str] = set()
        for name, fp in files.items():
            path = self.path(name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if fingerprint(st) != fp:
                log.info("%s changed after it was sent: kept, and collected again as new", name)
                continue
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path)
            if name.count("/") >= 2:
                parents.add(os.path.dirname(path))
        top_levels = {os.path.join(self.data_dir, d) for d in os.listdir(self.data_dir)}
        for folder in sorted(parents, key=len, reverse=True):
            d = folder
            while d not in top_levels and Path(d).is_relative_to(self.data_dir) and d != os.fspath(self.data_dir):
                try:
                    os.rmdir(d)
                except OSError:
                    break
                d = os.path.dirname(d)

    def move(self, files: Mapping[str, Fingerprint], *, to: Path, reason: str) -> None:
        """Move each file to the same name under ``to``, with a ``.reason`` file beside it."""
        for name in files:
            src = self.path(name)
            dst = to / name
            dst.parent.mkdir(mode=0o700, parents=True, exist_ok=True)
            try:
                os.rename(src, dst)
            except FileNotFoundError:
                continue
            except OSError as exc:
                if exc.errno != errno.EXDEV:
                    raise
                shutil.copy2(src, dst)
                os.unlink(src)
            dst.with_name(dst.name + ".reason").write_text(reason + "\n", encoding="utf-8")
