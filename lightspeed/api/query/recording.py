"""Storing what a query produced, before the answer is complete: answered means stored.

A query's records are the conversation's owner (for a new conversation), its history turn
and, when ``transcripts_enabled``, a transcript. :func:`store_answer` stores them and
returns only when the store has them at its ``durability`` level; the handler sends the
answer (``/v1/query``'s body, a stream's ``end`` event) only after that. When a record
cannot be stored, the request fails with the Lightspeed Core Stack's 500 body
(:class:`RecordsNotStored`), so a client never holds a ``conversation_id`` that cannot be
used or an answer that was not collected.

Every store runs as a task tracked by :class:`PendingStores`: a handler that is cancelled
mid-store (the server shutting down) or a stream whose client went away still has its
records stored, and the application's ``records`` cleanup context waits for them before
the backend closes. Nothing else is ever deferred.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any, Final, TypeVar

from lightspeed.api.errors import ApiError
from lightspeed.metrics import QueryStats
from lightspeed.records import ConversationTurn, Transcript
from lightspeed.storage import StorageBackend

__all__ = [
    "HISTORY_NOT_STORED",
    "TRANSCRIPT_NOT_STORED",
    "PendingStores",
    "RecordsNotStored",
    "store_answer",
    "store_owner",
]

log = logging.getLogger("lightspeed.api.query")

T = TypeVar("T")

#: The upstream's bodies: a conversation store (its database or cache) that failed...
HISTORY_NOT_STORED: Final = ("Database query failed", "Failed to query the database")
#: ...and a transcript that could not be written (its generic internal error).
TRANSCRIPT_NOT_STORED: Final = ("Internal server error", "An unexpected error occurred while processing the request.")


class RecordsNotStored(ApiError):
    """500: a record of the interaction could not be stored (details in the log, not the body)."""

    def __init__(self, body: tuple[str, str]) -> None:
        super().__init__(500, *body)


class PendingStores:
    """The stores under way, so that shutdown waits for them and cancellation cannot cut them.

    :meth:`run` starts a store as a task and waits for it through :func:`asyncio.shield`: the
    caller's cancellation leaves the store running, and :meth:`drain` (called by the
    application's ``records`` cleanup context while the backend is still open) waits for it.
    """

    def __init__(self) -> None:
        self._tasks: set[asyncio.Task[Any]] = set()

    @property
    def pending(self) -> int:
        return len(self._tasks)

    def start(self, coro: Coroutine[Any, Any, T]) -> asyncio.Task[T]:
        """Run ``coro`` as a tracked task (its failure is the awaiter's business, never logged
        as an exception nobody retrieved)."""
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._done)
        return task

    def _done(self, task: asyncio.Task[Any]) -> None:
        self._tasks.discard(task)
        if not task.cancelled():
            task.exception()

    async def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return await asyncio.shield(self.start(coro))

    async def drain(self) -> None:
        while self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)


async def store_owner(storage: StorageBackend, stats: QueryStats, conversation_id: str, owner: str) -> None:
    """Record the owner of a new conversation; :class:`RecordsNotStored` when that fails."""
    try:
        await storage.set_conversation_owner(conversation_id, owner=owner)
    except Exception as exc:
        stats.history_failures += 1
        log.error("cannot record the owner of new conversation %s: %s", conversation_id, exc)
        raise RecordsNotStored(HISTORY_NOT_STORED) from exc


async def store_answer(
    storage: StorageBackend,
    stats: QueryStats,
    *,
    conversation_id: str,
    turn: ConversationTurn,
    transcript: Transcript | None,
    owner: asyncio.Future[None] | None = None,
) -> None:
    """Store the turn and the transcript (side by side, so a batching store takes both in
    one write), after the conversation's ``owner`` write when one is under way.

    Both are attempted even when one fails; then :class:`RecordsNotStored` names the
    failure the client sees (a history failure first: without it the conversation cannot
    go on). Failures are logged and counted in ``stats``.
    """
    if owner is not None:
        await owner  # raises RecordsNotStored: the conversation does not exist, store nothing
    if transcript is None:
        turn_error = await _append_turn(storage, stats, conversation_id, turn)
        transcript_error = None
    else:
        turn_error, transcript_error = await asyncio.gather(
            _append_turn(storage, stats, conversation_id, turn), _put_transcript(storage, stats, transcript)
        )
    if turn_error is not None:
        raise RecordsNotStored(HISTORY_NOT_STORED) from turn_error
    if transcript_error is not None:
        raise RecordsNotStored(TRANSCRIPT_NOT_STORED) from transcript_error


async def _append_turn(
    storage: StorageBackend, stats: QueryStats, conversation_id: str, turn: ConversationTurn
) -> Exception | None:
    try:
        await storage.append_turn(conversation_id, turn=turn)
    except Exception as exc:  # noqa: BLE001 - returned to store_answer, which raises it
        stats.history_failures += 1
        log.error("cannot store a turn of conversation %s: %s", conversation_id, exc)
        return exc
    return None


async def _put_transcript(storage: StorageBackend, stats: QueryStats, transcript: Transcript) -> Exception | None:
    try:
        await storage.put_transcript(transcript)
    except Exception as exc:  # noqa: BLE001 - returned to store_answer, which raises it
        stats.transcript_failures += 1
        log.error(
            "cannot store the transcript %s of conversation %s: %s",
            transcript.record_id,
            transcript.conversation_id,
            exc,
        )
        return exc
    stats.transcripts_stored += 1
    return None
