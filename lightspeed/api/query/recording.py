"""Storing what a query produced, before the answer is complete: answered means stored.

A query's records are the conversation's owner (for a new conversation), its history turn
and, when ``transcripts_enabled``, a transcript. :func:`store_answer` hands all three to
the store in one call and returns only when the store has them at its ``durability``
level; the handler sends the answer (``/v1/query``'s body, a stream's ``end`` event) only
after that. When a record
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
from lightspeed.storage import InteractionNotStored, StorageBackend

__all__ = [
    "HISTORY_NOT_STORED",
    "TRANSCRIPT_NOT_STORED",
    "PendingStores",
    "RecordsNotStored",
    "store_answer",
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


async def store_answer(
    storage: StorageBackend,
    stats: QueryStats,
    *,
    conversation_id: str,
    turn: ConversationTurn,
    transcript: Transcript | None,
    owner: str | None = None,
) -> None:
    """Store the owner of a new conversation (``owner``), the turn and the transcript, in
    one call of the store (:meth:`~lightspeed.storage.StorageBackend.store_interaction`: one
    job of the filesystem store's writer, in one batch with other requests').

    Raises :class:`RecordsNotStored` with the body the client sees: a history failure (the
    owner or the turn) first, as without it the conversation cannot go on. Failures are
    logged and counted in ``stats``.
    """
    try:
        await storage.store_interaction(conversation_id, turn=turn, transcript=transcript, owner=owner)
    except InteractionNotStored as exc:
        if exc.history is not None:
            stats.history_failures += 1
            log.error("cannot store a turn of conversation %s: %s", conversation_id, exc.history)
        if exc.transcript is not None and transcript is not None:
            stats.transcript_failures += 1
            log.error(
                "cannot store the transcript %s of conversation %s: %s",
                transcript.record_id,
                conversation_id,
                exc.transcript,
            )
        elif transcript is not None:
            stats.transcripts_stored += 1
        raise RecordsNotStored(HISTORY_NOT_STORED if exc.history is not None else TRANSCRIPT_NOT_STORED) from exc
    except Exception as exc:  # a backend that raised outside the contract: count it as the history's
        stats.history_failures += 1
        log.error("cannot store a turn of conversation %s: %s", conversation_id, exc)
        raise RecordsNotStored(HISTORY_NOT_STORED) from exc
    if transcript is not None:
        stats.transcripts_stored += 1
