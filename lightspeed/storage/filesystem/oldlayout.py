"""The file layout of the state directory before the state database (lightspeed 0.1 development
versions): imported into the database once, then removed."""

from __future__ import annotations

import contextlib
import json
import shutil
import sqlite3
from pathlib import Path
from typing import Final

from lightspeed.records import ConversationTurn, is_valid_conversation_id, utc_timestamp
from lightspeed.storage.filesystem.statedb import WriterContext

__all__ = ["import_old_layout"]

#: What the state directory held before the database (lightspeed 0.1 development versions).
_OLD_ENTRIES: Final = ("conversations", "flags", "claims", "exported.log", "lock")


def import_old_layout(ctx: WriterContext, state_root: Path) -> int:
    """Import the owners, history, flags and exported names of the file layout that came
    before the database, then remove its files (none of which may be named ``*.json`` any
    more). Claims are not imported: their leases lapse with the restart. An owner file that is
    empty or damaged (a write that failed half-way) is dropped: that conversation starts anew.
    Idempotent, and safe with several processes opening at once. Returns the owners imported.
    """
    if not any((state_root / name).exists() for name in _OLD_ENTRIES):
        return 0
    imported = 0
    with ctx.transaction() as conn:
        done = conn.execute("SELECT 1 FROM meta WHERE key = 'imported_file_layout'").fetchone()
        if not done:
            imported = _import(conn, state_root)
            conn.execute("INSERT INTO meta (key, value) VALUES ('imported_file_layout', '1')")
    failure = ctx.end_batch()
    if failure is not None:
        raise failure
    for name in _OLD_ENTRIES:  # only after the commit: a crash before this imports nothing twice
        path = state_root / name
        if path.is_dir():
            shutil.rmtree(path, ignore_errors=True)
        else:
            with contextlib.suppress(FileNotFoundError):
                path.unlink()
    aside = state_root / "aside"
    if aside.is_dir():  # set-aside records: no longer named *.json in the state directory
        for path in aside.rglob("*.json"):
            with contextlib.suppress(OSError):
                path.rename(path.with_name(path.name + ".aside"))
    return imported


def _import(conn: sqlite3.Connection, state_root: Path) -> int:
    owners = 0
    conversations = state_root / "conversations"
    for path in sorted(conversations.glob("*/*.json")) if conversations.is_dir() else []:
        cid = path.name[: -len(".json")]
        try:
            owner = str(json.loads(path.read_bytes())["owner"])
        except (OSError, ValueError, KeyError, TypeError):
            continue  # empty or damaged: the write that made it failed
        if not is_valid_conversation_id(cid):
            continue
        conn.execute("INSERT OR IGNORE INTO owners (conversation_id, owner) VALUES (?, ?)", (cid, owner))
        owners += 1
        turns = path.with_name(f"{cid}.turns.jsonl")
        with contextlib.suppress(FileNotFoundError):
            for line in turns.read_bytes().split(b"\n"):
                try:
                    turn = ConversationTurn.from_dict(json.loads(line))
                except (ValueError, KeyError, TypeError):
                    continue  # blank, or a torn last line after a crash
                text = json.dumps(turn.to_dict(), ensure_ascii=False)
                conn.execute("INSERT INTO turns (conversation_id, turn) VALUES (?, ?)", (cid, text))
        # Created when its first turn was (the owner file kept no time), else now.
        conn.execute(
            "UPDATE owners SET created_at = coalesce((SELECT json_extract(turn, '$.timestamp') FROM turns"
            " WHERE conversation_id = ? ORDER BY id LIMIT 1), ?) WHERE conversation_id = ?",
            (cid, utc_timestamp(), cid),
        )
    flags = state_root / "flags"
    for path in sorted(flags.glob("*.json")) if flags.is_dir() else []:
        with contextlib.suppress(OSError, ValueError, KeyError, TypeError):
            value = bool(json.loads(path.read_bytes())["value"])
            conn.execute("INSERT OR REPLACE INTO flags (name, value) VALUES (?, ?)", (path.stem, int(value)))
    with contextlib.suppress(FileNotFoundError):
        names = (state_root / "exported.log").read_bytes().decode(errors="replace").splitlines()
        conn.executemany("INSERT OR IGNORE INTO exported (name) VALUES (?)", ((n,) for n in names if n))
    return owners
