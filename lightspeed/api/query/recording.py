"""Storing what a query produced: the conversation's history turn and, when enabled, the transcript.

The turn and the transcript are stored just after the answer, by a :class:`RecordWriter`
that the next query of the conversation and the shutdown wait for. A failure to store is
logged and counted in :class:`~lightspeed.metrics.QueryStats`.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Coroutine
from typing import Any

from lightspeed.metrics import QueryStats
from lightspeed.records import ConversationTurn, Transcript
from lightspeed.storage import StorageBackend

__all__ = ["RecordWriter"]

log = logging.getLogger("lightspeed.api.query")


class RecordWriter:
    """Stores each answer's history turn and transcript after the answer has gone out,
    so the disk is never on the user's path.

    Turns of one conversation are stored in order, and :meth:`settled` lets the next query
    of a conversation wait for the previous turn before it reads the history. At most
    ``max_pending`` stores run at once; beyond that the caller waits for its own
    (backpressure, so memory stays bounded when the store is slower than the queries).
    :meth:`drain` waits for every pending store; the application's ``records`` cleanup context calls it at shutdown,
    before the storage backend closes, so a clean shutdown loses nothing.
    """

    def __init__(self, *, storage: StorageBackend, stats: QueryStats, max_pending: int = 256) -> None:
        self.storage = storage
        self.stats = stats
        self.max_pending = max_pending
        self._pending: set[asyncio.Task[None]] = set()
        self._last_turn: dict[str, asyncio.Task[None]] = {}

    @property
    def pending(self) -> int:
        return len(self._pending)

    def spawn(self, coro: Coroutine[Any, Any, None]) -> asyncio.Task[None]:
        """Run ``coro`` (which must not raise) as a task that :meth:`drain` waits for."""
        task = asyncio.ensure_future(coro)
        self._pending.add(task)
        task.add_done_callback(self._pending.discard)
        return task

    async def submit(self, conversation_id: str, turn: ConversationTurn, transcript: Transcript | None) -> None:
        previous = self._last_turn.get(conversation_id)
        task = asyncio.ensure_future(self._store(conversation_id, turn, transcript, previous))
        self._pending.add(task)
        self._last_turn[conversation_id] = task

        def done(t: asyncio.Task[None]) -> None:
            self._pending.discard(t)
            if self._last_turn.get(conversation_id) is t:
                del self._last_turn[conversation_id]

        task.add_done_callback(done)
        if len(self._pending) > self.max_pending:
            await asyncio.shield(task)

    async def settled(self, conversation_id: str) -> None:
        """Wait until the turns of ``conversation_id`` given so far are stored."""
        task = self._last_turn.get(conversation_id)
        if task is not None:
            await asyncio.shield(task)

    async def drain(self) -> None:
        while self._pending:
            await asyncio.gather(*self._pending)

    async def _store(
        self,
        conversation_id: str,
        turn: ConversationTurn,
        transcript: Transcript | None,
        previous: asyncio.Task[None] | None,
    ) -> None:
        if previous is not None:
            await previous  # never raises: failures are logged below
        if transcript is None:
            await self._put_turn(conversation_id, turn)
        else:
            await asyncio.gather(self._put_turn(conversation_id, turn), self._put_transcript(transcript))

    async def _put_turn(self, conversation_id: str, turn: ConversationTurn) -> None:
        try:
            await self.storage.append_turn(conversation_id, turn=turn)
        except Exception as exc:  # noqa: BLE001 - logged and counted; the answer stands
            self.stats.history_failures += 1
            log.error("cannot store a turn of conversation %s: %s", conversation_id, exc)

    async def _put_transcript(self, transcript: Transcript) -> None:
        stats = self.stats
        try:
            await self.storage.put_transcript(transcript)
        except Exception as exc:  # noqa: BLE001 - logged and counted; the answer stands
            stats.transcript_failures += 1
            log.error(
                "cannot store the transcript %s of conversation %s: %s",
                transcript.record_id,
                transcript.conversation_id,
                exc,
            )
        else:
            stats.transcripts_stored += 1
