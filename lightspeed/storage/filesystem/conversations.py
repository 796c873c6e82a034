"""Conversation metadata, deletions and purges, and the stream registry of the filesystem store.

Metadata and streams are rows of the state database (``owners`` grew the metadata columns;
a trigger keeps them in step with ``turns``). A deletion runs in two steps:

1. on the pool lane, without any lock: find the candidate files (the transcript folders of
   the conversations, the feedback files that name them or the user, by reading each one,
   and their set-aside copies);
2. as one writer-lane job, inside the write transaction that every claim (of any process)
   also needs: forget the rows, look again at whatever appeared since step 1, delete the
   files, and note which of them a claim lists.

A claim that took a record before step 2 lists it: the record is reported in flight. A
claim after step 2 may still name it from an older scan, but the file is gone: the collector
reads it as vanished and never uploads it.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import sqlite3
import time
from collections import OrderedDict
from collections.abc import Collection, Iterable, Iterator, Sequence
from pathlib import Path

import attrs

from lightspeed.records import RecordKind, is_valid_record_id, is_valid_user_hash
from lightspeed.storage.base import ConversationInfo, ConversationPage, Deletion, StreamInterrupt
from lightspeed.storage.common import check_conversation_id, check_user_hash
from lightspeed.storage.filesystem import claims
from lightspeed.storage.filesystem.deleter_child import remove_empty_parents
from lightspeed.storage.filesystem.lanes import Lane
from lightspeed.storage.filesystem.scanning import Backlog, Roots
from lightspeed.storage.filesystem.statedb import ReaderContext, WriterContext

__all__ = [
    "Candidates",
    "ConversationOps",
    "delete_files",
    "find_candidates",
    "forget",
    "get_info",
    "list_page",
    "owned_by",
    "set_topic_summary",
]

_COLUMNS = (
    "conversation_id, owner, created_at, last_message_at, message_count, last_used_model, last_used_provider,"
    " topic_summary"
)
_CHUNK = 500


def _info(row: Sequence[object]) -> ConversationInfo:
    cid, owner, created_at, last_at, count, model, provider, summary = row
    return ConversationInfo(
        conversation_id=str(cid),
        owner=str(owner),
        created_at=None if created_at is None else str(created_at),
        last_message_at=None if last_at is None else str(last_at),
        message_count=int(count),  # type: ignore[call-overload]
        last_used_model=None if model is None else str(model),
        last_used_provider=None if provider is None else str(provider),
        topic_summary=None if summary is None else str(summary),
    )


# ---------------------------------------------------------------------- metadata


def get_info(conn: sqlite3.Connection, conversation_id: str) -> ConversationInfo | None:
    row = conn.execute(f"SELECT {_COLUMNS} FROM owners WHERE conversation_id = ?", (conversation_id,)).fetchone()
    return None if row is None else _info(row)


def list_page(conn: sqlite3.Connection, owner: str | None, limit: int | None, offset: int) -> ConversationPage:
    where, args = ("WHERE owner = ?", (owner,)) if owner is not None else ("", ())
    rows = conn.execute(
        f"SELECT {_COLUMNS} FROM owners {where}"
        " ORDER BY coalesce(last_message_at, created_at) DESC, conversation_id LIMIT ? OFFSET ?",
        (*args, -1 if limit is None else limit, offset),
    ).fetchall()
    (total,) = conn.execute(f"SELECT count(*) FROM owners {where}", args).fetchone()
    return ConversationPage(conversations=tuple(_info(row) for row in rows), total=int(total))


def set_topic_summary(ctx: WriterContext, conversation_id: str, summary: str | None) -> bool:
    with ctx.transaction() as conn:
        cursor = conn.execute(
            "UPDATE owners SET topic_summary = ? WHERE conversation_id = ?", (summary, conversation_id)
        )
    return cursor.rowcount > 0


def owned_by(conn: sqlite3.Connection, owner: str) -> list[str]:
    return [row[0] for row in conn.execute("SELECT conversation_id FROM owners WHERE owner = ?", (owner,))]


def forget(conn: sqlite3.Connection, conversation_ids: Sequence[str]) -> Deletion:
    """Delete the conversations' rows (owner, metadata, turns); inside the caller's transaction."""
    conversations = turns = 0
    for i in range(0, len(conversation_ids), _CHUNK):
        part = conversation_ids[i : i + _CHUNK]
        marks = ",".join("?" * len(part))
        turns += conn.execute(f"DELETE FROM turns WHERE conversation_id IN ({marks})", part).rowcount
        conversations += conn.execute(f"DELETE FROM owners WHERE conversation_id IN ({marks})", part).rowcount
    return Deletion(conversations=conversations, turns=turns)


# ---------------------------------------------------------------------- finding the files


@attrs.define
class Candidates:
    """What step 1 found: transcript folders to empty, feedback files that matched, and every
    feedback file already looked at (step 2 reads only the ones that appeared since)."""

    transcript_dirs: set[str] = attrs.Factory(set)
    feedback: set[str] = attrs.Factory(set)
    checked: set[str] = attrs.Factory(set)


def _subdirs(directory: str) -> list[str]:
    try:
        with os.scandir(directory) as it:
            return [e.name for e in it if e.is_dir(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _files(directory: str, suffix: str) -> list[str]:
    try:
        with os.scandir(directory) as it:
            return [e.name for e in it if e.name.endswith(suffix) and e.is_file(follow_symlinks=False)]
    except (FileNotFoundError, NotADirectoryError):
        return []


def _feedback_matches(path: str, users: Collection[str], conversations: Collection[str]) -> bool:
    try:
        with open(path, "rb") as fh:
            data = json.loads(fh.read())
    except (OSError, ValueError):
        return False
    if not isinstance(data, dict):
        return False
    return data.get("user_id") in users or data.get("conversation_id") in conversations


def _feedback_dirs(roots: Roots, aside: str) -> Iterator[tuple[str, str]]:
    """(folder, suffix) of every place a feedback record can be: the root, and set aside."""
    if roots.feedback is not None:
        yield roots.feedback, ".json"
    yield os.path.join(aside, "feedback"), ".json.aside"


def find_candidates(roots: Roots, aside: str, *, users: Collection[str], conversations: Collection[str]) -> Candidates:
    """Step 1: the records of ``users`` (every conversation under their hash) and of
    ``conversations`` (under any user), on disk or set aside; no lock held."""
    found = Candidates()
    for base in (roots.transcripts, os.path.join(aside, "transcripts")):
        if base is None:
            continue
        for user in _subdirs(base):
            if not is_valid_user_hash(user):
                continue
            user_dir = os.path.join(base, user)
            if user in users:
                found.transcript_dirs.update(os.path.join(user_dir, c) for c in _subdirs(user_dir))
            else:
                found.transcript_dirs.update(
                    os.path.join(user_dir, c) for c in conversations if os.path.isdir(os.path.join(user_dir, c))
                )
    for directory, suffix in _feedback_dirs(roots, aside):
        for name in _files(directory, suffix):
            path = os.path.join(directory, name)
            found.checked.add(path)
            if _feedback_matches(path, users, conversations):
                found.feedback.add(path)
    return found


def _record_name(path: str, roots: Roots, aside: str) -> tuple[RecordKind, str] | None:
    """The record name of a file (on disk or set aside), or None for a file that is no record."""
    for kind, base, folder in (
        (RecordKind.FEEDBACK, roots.feedback, "feedback"),
        (RecordKind.TRANSCRIPT, roots.transcripts, "transcripts"),
        (RecordKind.FEEDBACK, os.path.join(aside, "feedback"), "feedback"),
        (RecordKind.TRANSCRIPT, os.path.join(aside, "transcripts"), "transcripts"),
    ):
        if base is not None and path.startswith(base + os.sep):
            rel = path[len(base) + 1 :].removesuffix(".aside")
            if rel.endswith(".json") and is_valid_record_id(os.path.basename(rel)[:-5]):
                return kind, f"{folder}/{rel.replace(os.sep, '/')}"
    return None


def delete_files(
    conn: sqlite3.Connection,
    found: Candidates,
    roots: Roots,
    aside: str,
    *,
    users: Collection[str],
    conversations: Collection[str],
    owner_dirs: Iterable[str],
) -> Deletion:
    """Step 2, inside the write transaction: look again, delete, and name what a claim lists."""
    dirs = set(found.transcript_dirs) | set(owner_dirs)
    feedback = set(found.feedback)
    for directory, suffix in _feedback_dirs(roots, aside):  # feedback stored since step 1
        for name in _files(directory, suffix):
            path = os.path.join(directory, name)
            if path not in found.checked and _feedback_matches(path, users, conversations):
                feedback.add(path)
    paths = sorted(feedback)
    for directory in sorted(dirs):
        paths += [os.path.join(directory, n) for n in _files(directory, ".json") + _files(directory, ".json.aside")]
    counts = dict.fromkeys(RecordKind, 0)
    names: list[str] = []
    removed_transcripts: list[str] = []
    for path in paths:
        record = _record_name(path, roots, aside)
        if record is None:
            continue
        try:
            os.unlink(path)
        except FileNotFoundError:
            continue  # acked (deleted) by a collector meanwhile
        if path.endswith(".aside"):
            with contextlib.suppress(FileNotFoundError):
                os.unlink(path.removesuffix(".aside") + ".reason")  # {record id}.json.reason
        counts[record[0]] += 1
        names.append(record[1])
        if record[0] is RecordKind.TRANSCRIPT:
            removed_transcripts.append(path)
    # Every folder of these conversations that is empty now goes, with its user's when emptied.
    remove_empty_parents(removed_transcripts + [os.path.join(d, "-") for d in sorted(dirs)])
    held = claims.listed(conn) if names else set()
    for i in range(0, len(names), _CHUNK):
        part = names[i : i + _CHUNK]
        conn.execute(f"DELETE FROM exported WHERE name IN ({','.join('?' * len(part))})", part)
    return Deletion(
        transcripts=counts[RecordKind.TRANSCRIPT],
        feedback=counts[RecordKind.FEEDBACK],
        in_flight=tuple(n for n in names if n in held),
    )


# ---------------------------------------------------------------------- streams


def register_stream(ctx: WriterContext, request_id: str, owner: str, now: float, ttl: float) -> bool:
    with ctx.transaction() as conn:
        conn.execute("DELETE FROM streams WHERE expires_at <= ?", (now,))
        cursor = conn.execute(
            "INSERT OR IGNORE INTO streams (request_id, owner, expires_at) VALUES (?, ?, ?)",
            (request_id, owner, now + ttl),
        )
    return cursor.rowcount > 0


def interrupt_stream(ctx: WriterContext, request_id: str, owner: str, now: float) -> StreamInterrupt:
    with ctx.transaction() as conn:
        row = conn.execute(
            "SELECT owner, done OR interrupted FROM streams WHERE request_id = ? AND expires_at > ?", (request_id, now)
        ).fetchone()
        if row is None:
            return StreamInterrupt.NOT_FOUND
        if row[0] != owner:
            return StreamInterrupt.FORBIDDEN
        if row[1]:
            return StreamInterrupt.ALREADY_DONE
        conn.execute("UPDATE streams SET interrupted = 1 WHERE request_id = ?", (request_id,))
    return StreamInterrupt.INTERRUPTED


def interrupted_streams(conn: sqlite3.Connection, request_ids: Sequence[str]) -> set[str]:
    found: set[str] = set()
    for i in range(0, len(request_ids), _CHUNK):
        part = request_ids[i : i + _CHUNK]
        rows = conn.execute(
            f"SELECT request_id FROM streams WHERE interrupted = 1 AND request_id IN ({','.join('?' * len(part))})",
            part,
        )
        found.update(row[0] for row in rows)
    return found


def finish_stream(ctx: WriterContext, request_id: str, until: float) -> None:
    with ctx.transaction() as conn:
        conn.execute("UPDATE streams SET done = 1, expires_at = ? WHERE request_id = ?", (until, request_id))


def _owned_by(owner: str, ctx: ReaderContext) -> list[str]:
    return owned_by(ctx.conn, owner)


class ConversationOps:
    """The backend's conversation, deletion and stream operations (a mixin of ``FilesystemStorage``)."""

    state_root: Path
    _roots: Roots
    _owners: OrderedDict[str, tuple[str, float]]
    _backlog: Backlog | None

    def _lanes(self) -> tuple[Lane[WriterContext], Lane[ReaderContext]]:
        raise NotImplementedError

    async def list_conversations(
        self, owner: str | None, *, limit: int | None = None, offset: int = 0
    ) -> ConversationPage:
        if (limit is not None and limit < 1) or offset < 0:
            raise ValueError(f"limit must be at least 1 and offset at least 0, got {limit!r} and {offset!r}")
        _, pool = self._lanes()
        return await pool.run(lambda ctx: list_page(ctx.conn, owner, limit, offset))

    async def get_conversation(self, conversation_id: str) -> ConversationInfo | None:
        check_conversation_id(conversation_id)
        _, pool = self._lanes()
        return await pool.run(lambda ctx: get_info(ctx.conn, conversation_id))

    async def set_topic_summary(self, conversation_id: str, *, topic_summary: str | None) -> bool:
        check_conversation_id(conversation_id)
        writer, _ = self._lanes()
        return await writer.run(lambda ctx: set_topic_summary(ctx, conversation_id, topic_summary))

    async def _delete(self, *, users: Collection[str], conversation_ids: Collection[str], records: bool) -> Deletion:
        """Forget ``conversation_ids`` and (all of) ``users``' conversations; with ``records`` also
        delete their files, in the two steps :mod:`.conversations` describes."""
        writer, pool = self._lanes()
        aside = os.fspath(self.state_root / "aside")
        wanted = set(conversation_ids)
        for user in users:
            wanted.update(await pool.run(functools.partial(_owned_by, user)))
        found = Candidates()
        if records:
            found = await pool.run(lambda _: find_candidates(self._roots, aside, users=users, conversations=wanted))

        def delete(ctx: WriterContext) -> Deletion:
            with ctx.transaction() as conn:
                now_owned = set(wanted)
                for user in users:  # owned since step 1 too
                    now_owned.update(owned_by(conn, user))
                owners = {info.owner for cid in now_owned if (info := get_info(conn, cid)) is not None}
                deletion = forget(conn, sorted(now_owned))
                if not records:
                    return deletion
                owner_dirs = [
                    os.path.join(base, owner, cid)
                    for base in (self._roots.transcripts, os.path.join(aside, "transcripts"))
                    if base is not None
                    for owner in owners | set(users)
                    for cid in now_owned
                ]
                return deletion + delete_files(
                    conn,
                    found,
                    self._roots,
                    aside,
                    users=users,
                    conversations=now_owned,
                    owner_dirs=owner_dirs,
                )

        deletion = await writer.run(delete)
        for cid in wanted:
            self._owners.pop(cid, None)
        if deletion.transcripts or deletion.feedback:
            self._backlog = None  # names it holds may be gone: the next claim scans again
        return deletion

    async def delete_conversation(self, conversation_id: str, *, records: bool = True) -> Deletion:
        check_conversation_id(conversation_id)
        return await self._delete(users=(), conversation_ids=(conversation_id,), records=records)

    async def purge_user(self, owner: str) -> Deletion:
        check_user_hash(owner)
        return await self._delete(users=(owner,), conversation_ids=(), records=True)

    # ------------------------------------------------------------------ streams

    async def register_stream(self, request_id: str, *, owner: str, ttl_seconds: float) -> bool:
        writer, _ = self._lanes()
        return await writer.run(lambda ctx: register_stream(ctx, request_id, owner, time.time(), ttl_seconds))

    async def interrupt_stream(self, request_id: str, *, owner: str) -> StreamInterrupt:
        writer, _ = self._lanes()
        return await writer.run(lambda ctx: interrupt_stream(ctx, request_id, owner, time.time()))

    async def interrupted_streams(self, request_ids: Collection[str]) -> set[str]:
        ids = list(request_ids)
        _, pool = self._lanes()
        return await pool.run(lambda ctx: interrupted_streams(ctx.conn, ids))

    async def finish_stream(self, request_id: str, *, keep_seconds: float) -> None:
        writer, _ = self._lanes()
        until = time.time() + keep_seconds
        await writer.run(lambda ctx: finish_stream(ctx, request_id, until))
