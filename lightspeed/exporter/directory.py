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

Only the collection half of :class:`~lightspeed.storage.StorageBackend` makes sense for files
another program writes: the methods that store records, owners, history and flags raise
:class:`~lightspeed.storage.StorageUnavailable` saying so.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import fcntl
import functools
import json
import logging
import os
import shutil
import stat
import tarfile
import threading
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Final, NoReturn, TypeVar

from lightspeed.config import UserDataCollectionConfig
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

log = logging.getLogger("lightspeed.exporter")

T = TypeVar("T")

#: How long a file must stay unchanged before it counts as complete.
DEFAULT_SETTLE_SECONDS: Final = 5.0
#: The state directory's name when it lies in the data directory (no ``*.json`` inside).
STATE_DIR_NAME: Final = ".lightspeed-exporter"
#: Fingerprint of a file: inode, size, modification time (ns).
Fingerprint = tuple[int, int, int]


def _fingerprint(st: os.stat_result) -> Fingerprint:
    return (st.st_ino, st.st_size, st.st_mtime_ns)


def _ustar_name_ok(name: str) -> bool:
    try:
        tarfile.TarInfo(name).tobuf(tarfile.USTAR_FORMAT, "ascii", "strict")
    except (ValueError, UnicodeError):
        return False
    return True


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
        #: Files found complete (or not) by fingerprint, so a file is parsed once per version.
        self._complete: dict[str, tuple[Fingerprint, bool]] = {}
        #: Fingerprints of the records this instance claimed, for read_many.
        self._claimed: dict[str, Fingerprint] = {}
        self._warned: set[tuple[str, Fingerprint | None]] = set()

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

    # ------------------------------------------------------------------ scanning

    def _kind(self, name: str) -> RecordKind:
        # Files under feedback/ are feedback; every other file counts as a transcript in the metrics.
        return RecordKind.FEEDBACK if name.startswith("feedback/") else RecordKind.TRANSCRIPT

    def _path(self, name: str) -> str:
        """The file of a record name, checked to stay inside the data directory."""
        parts = name.split("/")
        if not name or name.startswith("/") or any(p in ("", ".", "..") for p in parts):
            raise ValueError(f"not a record name of this directory: {name!r}")
        return os.path.join(self.data_dir, *parts)

    def _scan(self) -> Iterator[tuple[str, os.stat_result]]:
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
                    self._warn_once(name, None, "is not a regular file (a symbolic link?): never collected")
                    continue
                if not _ustar_name_ok(name):
                    self._warn_once(name, None, "has a name an archive cannot hold (not ASCII, or too long): skipped")
                    continue
                yield name, st

    def _warn_once(self, name: str, fp: Fingerprint | None, what: str) -> None:
        if (name, fp) not in self._warned:
            self._warned.add((name, fp))
            log.warning("%s %s", name, what)

    def _is_complete(self, name: str, fp: Fingerprint) -> bool:
        """Parses as JSON (checked once per version of the file)."""
        cached = self._complete.get(name)
        if cached is not None and cached[0] == fp:
            return cached[1]
        ok = False
        try:
            data = self._read_exact(name, fp)
        except OSError:
            data = None
        if data is not None:
            try:
                json.loads(data)
                ok = True
            except ValueError:
                self._warn_once(name, fp, "has not changed for the settle time but is not valid JSON: left in place")
        self._complete[name] = (fp, ok)
        return ok

    def _read_exact(self, name: str, fp: Fingerprint) -> bytes | None:
        """The file's bytes if it still has fingerprint ``fp``; ``None`` if it changed or is gone."""
        try:
            fd = os.open(self._path(name), os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
        except OSError as exc:
            if exc.errno in (errno.ENOENT, errno.ELOOP, errno.ENOTDIR):
                return None
            raise
        with os.fdopen(fd, "rb") as fh:
            if _fingerprint(os.fstat(fh.fileno())) != fp:
                return None
            data = fh.read(fp[1] + 1)
            if len(data) != fp[1] or _fingerprint(os.fstat(fh.fileno())) != fp:
                return None  # written to while we read
            return data

    # ------------------------------------------------------------------ state

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.state_dir.mkdir(mode=0o700, parents=True, exist_ok=True)
        fd = os.open(self.state_dir / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def _load_claims(self) -> dict[str, dict[str, Any]]:
        try:
            data = json.loads((self.state_dir / "claims").read_bytes())
        except FileNotFoundError:
            return {}
        except ValueError:
            log.error("the exporter's claims file in %s is corrupt: starting with no claims", self.state_dir)
            return {}
        return data if isinstance(data, dict) else {}

    def _save_claims(self, claims: Mapping[str, Any]) -> None:
        path = self.state_dir / "claims"
        tmp = path.with_name(f".claims.{os.getpid()}.{threading.get_ident()}.tmp")
        tmp.write_bytes(json.dumps(claims).encode())
        os.replace(tmp, path)

    @staticmethod
    def _held(claims: Mapping[str, Any], now: float, *, but: str = "") -> set[str]:
        held: set[str] = set()
        for cid, data in claims.items():
            if cid != but and float(data["expires_at"]) > now:
                held.update(data["records"])
        return held

    def _load_exported(self) -> set[tuple[str, Fingerprint]]:
        out: set[tuple[str, Fingerprint]] = set()
        try:
            text = (self.state_dir / "exported.log").read_text(encoding="utf-8")
        except FileNotFoundError:
            return out
        for line in text.splitlines():
            parts = line.split("\t")
            if len(parts) == 4 and all(p.isdigit() for p in parts[1:]):
                out.add((parts[0], (int(parts[1]), int(parts[2]), int(parts[3]))))
        return out

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
            with self._locked():
                now = time.time()
                claims = self._load_claims()
                # Claims whose lease ran out and whose files are all gone are forgotten.
                for cid in [c for c, d in claims.items() if float(d["expires_at"]) <= now]:
                    if not any(os.path.lexists(self._path(n)) for n in claims[cid]["records"]):
                        del claims[cid]
                held = self._held(claims, now)
                exported = self._load_exported()
                found = sorted((st.st_mtime_ns, name, st) for name, st in self._scan())
                chosen: list[StoredRecord] = []
                prints: dict[str, Fingerprint] = {}
                total = 0
                for mtime_ns, name, st in found:
                    fp = _fingerprint(st)
                    kind = self._kind(name)
                    if kind not in kinds or name in held or (name, fp) in exported:
                        continue
                    if now - mtime_ns / 1e9 < self.settle_seconds:
                        continue  # may still be being written
                    if not self._is_complete(name, fp):
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
                self._save_claims(claims)
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
            return [None if fp is None else self._read_exact(r.name, fp) for r, fp in zip(records, prints, strict=True)]

        return await self._run(read_all)

    async def renew(self, claim: Claim, *, lease_seconds: float) -> Claim:
        def do_renew() -> Claim:
            with self._locked():
                now = time.time()
                claims = self._load_claims()
                mine = claims.get(claim.claim_id)
                names = set(mine["records"]) if mine else set()
                if names & self._held(claims, now, but=claim.claim_id):
                    raise ClaimLost(f"claim {claim.claim_id} was taken over after its lease expired")
                expires = now + lease_seconds
                if mine:
                    mine["expires_at"] = expires
                    self._save_claims(claims)
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
        with self._locked():
            now = time.time()
            claims = self._load_claims()
            mine = claims.get(claim.claim_id)
            current: dict[str, list[int]] = mine["records"] if mine else {}
            targets = [r.name for r in (claim.records if records is None else records) if r.name in current]
            held = self._held(claims, now, but=claim.claim_id)
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
            self._save_claims(claims)

    def _delete(self, files: dict[str, Fingerprint]) -> None:
        """Delete each file that still has the fingerprint that was sent; then the folders this empties,
        below the top-level subdirectory (which the writing program may expect to exist)."""
        parents: set[str] = set()
        for name, fp in files.items():
            path = self._path(name)
            try:
                st = os.lstat(path)
            except FileNotFoundError:
                continue
            if _fingerprint(st) != fp:
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

    def _mark_exported(self, files: dict[str, Fingerprint]) -> None:
        if not files:
            return
        lines = "".join(f"{n}\t{fp[0]}\t{fp[1]}\t{fp[2]}\n" for n, fp in files.items() if "\t" not in n)
        fd = os.open(self.state_dir / "exported.log", os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_CLOEXEC, 0o600)
        with os.fdopen(fd, "w", encoding="utf-8") as fh:
            fh.write(lines)

    async def ack(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None, delete: bool) -> None:
        action = self._delete if delete else self._mark_exported
        await self._run(functools.partial(self._settle, claim, records, action, strict=True))

    async def release(self, claim: Claim, *, records: Sequence[StoredRecord] | None = None) -> None:
        await self._run(functools.partial(self._settle, claim, records, lambda _files: None, strict=False))

    async def set_aside(self, claim: Claim, records: Sequence[StoredRecord], *, reason: str) -> None:
        def move(files: dict[str, Fingerprint]) -> None:
            for name in files:
                src = self._path(name)
                dst = self.state_dir / "aside" / name
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

        await self._run(functools.partial(self._settle, claim, list(records), move, strict=True))

    async def pending_stats(self) -> PendingStats:
        def count() -> PendingStats:
            with self._locked():
                exported = self._load_exported()
            n = {k: 0 for k in RecordKind}
            b = {k: 0 for k in RecordKind}
            for name, st in self._scan():
                if (name, _fingerprint(st)) in exported:
                    continue
                kind = self._kind(name)
                n[kind] += 1
                b[kind] += st.st_size
            return PendingStats(records=n, bytes=b)

        return await self._run(count)

    def __repr__(self) -> str:
        return f"<DirectorySource {self.data_dir}>"
