"""Record factories and backend helpers shared by the tests (built on the kit's factories in
:mod:`lightspeed.testing`, so a record's shape is stated once)."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from aiohttp import web
from aiohttp.test_utils import TestClient

from lightspeed.actions import Action
from lightspeed.config import Config
from lightspeed.records import FeedbackRecord, Transcript, hash_user_id, new_record_id
from lightspeed.storage import create_backend
from lightspeed.storage.filesystem import FilesystemStorage
from lightspeed.testing import make_feedback, make_transcript

__all__ = ["ALICE", "OWNERS_ONLY", "MakeClient", "MakeConfig", "feedback", "fill", "fs_backend", "transcript"]

ALICE = hash_user_id("alice")

#: An ``authorization`` section granting every caller every action but ``admin`` and the
#: ``*_other_conversations`` ones: each conversation stays its owner's. (Without the section every
#: caller may use everyone's, the Lightspeed Core Stack's default.)
OWNERS_ONLY: dict[str, Any] = {
    "access_rules": [
        {
            "role": "*",
            "actions": sorted(a.value for a in Action if a is not Action.ADMIN and "_other_" not in a.value),
        }
    ]
}

#: The ``make_config`` fixture: ``make_config(**sections)``, a configuration on a temporary directory.
MakeConfig = Callable[..., Config]
#: The ``make_client`` fixture: ``await make_client(**sections)``, a client of the real app.
MakeClient = Callable[..., Awaitable[TestClient[web.Request, web.Application]]]


def feedback(cid: str | None = None, **fields: Any) -> FeedbackRecord:
    """Alice's feedback on conversation ``cid`` (a fresh one by default), about 2 KB of JSON."""
    values: dict[str, Any] = {"user_id": ALICE, "llm_response": "Kubernetes is " + "x" * 2000, "categories": ()}
    values.update(fields)
    return make_feedback(conversation_id=cid or new_record_id(), **values)


def transcript(user: str = ALICE, cid: str | None = None, **fields: Any) -> Transcript:
    """A transcript of ``user`` in conversation ``cid`` (a fresh one by default), about 1 KB."""
    fields.setdefault("llm_response", "a" * 1000)
    return make_transcript(user=user, conversation_id=cid, **fields)


def fs_backend(config: Config) -> FilesystemStorage:
    """The (unopened) filesystem backend that ``config`` selects."""
    store = create_backend(config.user_data_collection)
    assert isinstance(store, FilesystemStorage)
    return store


def fill(disk: Path) -> Path:
    """Take every free byte of ``disk`` with one file; returns it (remove it to free the space)."""
    filler = disk / "filler"
    fd = os.open(filler, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o600)
    try:
        for size in (1 << 16, 1 << 12, 1):
            with contextlib.suppress(OSError):
                while os.write(fd, b"\0" * size):
                    pass
    finally:
        os.close(fd)
    return filler
