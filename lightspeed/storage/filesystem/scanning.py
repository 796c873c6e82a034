"""Finding records on disk: the folders that hold them, and the backlog of one scan.

Scanning costs one ``lstat`` per file, the largest cost of a collection cycle; one scan's
oldest records (the :class:`Backlog`) serve the claims that follow it.
"""

from __future__ import annotations

import array
import os
from collections.abc import Callable, Collection, Iterator, Sequence
from typing import Final

import attrs

from lightspeed.records import RecordKind, is_valid_conversation_id, is_valid_record_id, is_valid_user_hash
from lightspeed.storage.filesystem.files import remove_if_stale

__all__ = ["BACKLOG_MAX", "Backlog", "Roots", "scan", "scan_backlog"]


@attrs.frozen
class Roots:
    """The storage roots as strings (``None``: not configured)."""

    feedback: str | None
    transcripts: str | None

    def leaf_dirs(self, kinds: Collection[RecordKind]) -> Iterator[tuple[str, RecordKind, str]]:
        """Every folder that holds records of the given kinds, as (name prefix, kind, path);
        only folders with valid names, and no symlink is followed."""

        def subdirs(directory: str, valid: Callable[[str], bool]) -> list[str]:
            try:
                with os.scandir(directory) as it:
                    return [e.name for e in it if valid(e.name) and e.is_dir(follow_symlinks=False)]
            except (FileNotFoundError, NotADirectoryError):
                return []

        if RecordKind.FEEDBACK in kinds and self.feedback is not None:
            yield "feedback", RecordKind.FEEDBACK, self.feedback
        if RecordKind.TRANSCRIPT in kinds and self.transcripts is not None:
            root = self.transcripts
            for user in subdirs(root, is_valid_user_hash):
                for conv in subdirs(os.path.join(root, user), is_valid_conversation_id):
                    yield f"transcripts/{user}/{conv}", RecordKind.TRANSCRIPT, os.path.join(root, user, conv)


def _lstat(entry: os.DirEntry[str]) -> os.stat_result | None:
    """The entry's own stat, or None when it vanished since it was listed (acked by a collector)."""
    try:
        return entry.stat(follow_symlinks=False)
    except FileNotFoundError:
        return None


def record_files(directory: str) -> Iterator[tuple[str, os.stat_result]]:
    """(record id, lstat) of every record file in ``directory``; removes stale temporary files."""
    try:
        with os.scandir(directory) as it:
            for entry in it:
                name = entry.name
                if name.endswith(".json"):
                    rid = name[:-5]
                    if is_valid_record_id(rid) and entry.is_file(follow_symlinks=False) and (st := _lstat(entry)):
                        yield rid, st
                elif name.endswith(".tmp"):
                    remove_if_stale(entry)
    except (FileNotFoundError, NotADirectoryError):
        return


def scan(roots: Roots, kinds: Collection[RecordKind]) -> Iterator[tuple[int, str, int, RecordKind]]:
    """Every record file of the given kinds as (mtime_ns, name, size, kind); no symlink is followed."""
    for prefix, kind, directory in roots.leaf_dirs(kinds):
        for rid, st in record_files(directory):
            yield (st.st_mtime_ns, f"{prefix}/{rid}.json", st.st_size, kind)


def scan_backlog(roots: Roots, kinds: Collection[RecordKind], skip: Collection[str], now: float) -> Backlog:
    """One scan of the tree: the oldest records whose names are not in ``skip``."""
    backlog = Backlog(kinds, now)
    for prefix, kind, directory in roots.leaf_dirs(kinds):
        folder = -1
        for rid, st in record_files(directory):
            if skip and f"{prefix}/{rid}.json" in skip:
                continue
            if folder < 0:
                folder = backlog.add_folder(prefix, kind)
            backlog.add(st.st_mtime_ns, folder, rid, st.st_size)
    backlog.finish()
    return backlog


#: Records one scan keeps for the claims that follow it (the oldest ones; about 60 bytes each).
BACKLOG_MAX: Final = 100_000
#: A backlog older than this is scanned again rather than used.
BACKLOG_SECONDS: Final = 60.0


class Backlog:
    """The oldest pending records found by one scan, for the claims that follow it.

    Scanning costs one ``lstat`` per file. A cycle over N files claims N/batch batches, and
    scanning for each of them made claiming the largest cost of a cycle (quadratic in the
    number of batches). The backlog lets the later claims of a cycle take the next records
    from the last scan instead, checking only that each one still exists. Records live in
    flat arrays rather than objects, so 100,000 of them take about 6 MB; a scan that finds
    more keeps the oldest :data:`BACKLOG_MAX`.
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
        if len(self.mtime) >= 2 * BACKLOG_MAX:
            self._keep(self._oldest()[:BACKLOG_MAX])

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
        if len(oldest) > BACKLOG_MAX:
            self._keep(oldest[:BACKLOG_MAX])
            oldest = list(range(BACKLOG_MAX))
        self.order = array.array("l", oldest)

    def fresh(self, kinds: Collection[RecordKind], now: float) -> bool:
        return self.pos < len(self.order) and self.kinds == frozenset(kinds) and now - self.made < BACKLOG_SECONDS

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
