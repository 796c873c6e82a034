"""The one way the store runs blocking work off the event loop: a :class:`Lane`.

A lane is a queue and one or more threads. The event loop submits a job (a function of the
thread's context) and awaits an asyncio future; a thread takes jobs in batches, runs them,
ends the batch through its context (for the writer: one SQLite commit and the directory
fsyncs for the whole batch, the *group commit*) and settles the batch's futures with one
wake-up of the loop. The store has two lanes: the writer (one thread, one SQLite
connection, batches of up to 512 jobs) and the pool (several threads, a reading connection
each, one job at a time: reads, scans, deletions).
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
from collections.abc import Callable
from typing import Any, Final, Generic, Protocol, TypeVar

from lightspeed.storage.errors import StorageUnavailable

__all__ = ["Context", "Lane"]

T = TypeVar("T")
C = TypeVar("C", bound="Context")

#: Jobs one writer batch takes at most.
BATCH_MAX: Final = 512

_Result = tuple["asyncio.Future[Any]", BaseException | None, Any]
_Pending = tuple["asyncio.Future[Any]", BaseException | None, Any, bool]
_Item = tuple[Callable[[C], Any], "asyncio.Future[Any]", bool, bool]


class Context(Protocol):
    """What a lane's thread hands each job, and what ends a batch."""

    def joined(self) -> bool:
        """Whether the job that just ran left work for :meth:`end_batch` (and resets that)."""

    def end_batch(self) -> BaseException | None:
        """Make the batch's durable jobs durable (commit, fsync); the error when that failed."""

    def close(self) -> None:
        """Release the thread's resources (its connection) when the lane stops."""


class Lane(Generic[C]):
    """A queue served by ``threads`` threads, each with a context made by ``make_context``."""

    def __init__(
        self,
        name: str,
        *,
        make_context: Callable[[], C],
        translate: Callable[[BaseException], BaseException],
        threads: int = 1,
        batch_max: int = BATCH_MAX,
    ) -> None:
        self.name = name
        self._make_context = make_context
        self._translate = translate
        self._threads_wanted = threads
        self._batch_max = batch_max
        # (job, future, durable, early); None tells one thread to stop.
        self._queue: queue.SimpleQueue[_Item[C] | None] = queue.SimpleQueue()
        self._threads: list[threading.Thread] = []
        self._loop: asyncio.AbstractEventLoop | None = None

    @property
    def running(self) -> bool:
        return bool(self._threads)

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        self._loop = loop
        for i in range(self._threads_wanted):
            thread = threading.Thread(target=self._run, name=f"{self.name}-{i}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def submit(self, job: Callable[[C], T], *, durable: bool = True, early: bool = False) -> asyncio.Future[T]:
        """Queue ``job``; its future settles when it ran and, if ``durable``, its batch ended.

        A job that is not durable (a read) is answered as soon as it ran, before the batch's
        writes are committed. Jobs run in the order they were queued, except that ``early``
        ones run before the others of their batch: reads, and record files, which then need
        not wait for (nor hold) the database's write lock that the batch's first database
        write takes until its commit.
        """
        if self._loop is None or not self._threads:  # closed while the caller was under way
            raise StorageUnavailable("the filesystem store is not open")
        fut: asyncio.Future[T] = self._loop.create_future()
        self._queue.put((job, fut, durable, early))
        return fut

    async def run(self, job: Callable[[C], T], *, durable: bool = True, early: bool = False) -> T:
        """Submit ``job`` and await it; a cancelled caller does not cancel the job."""
        return await asyncio.shield(self.submit(job, durable=durable, early=early))

    async def stop(self) -> None:
        """Finish every job queued before this call, then end the threads."""
        threads, self._threads = self._threads, []
        for _ in threads:
            self._queue.put(None)
        loop = asyncio.get_running_loop()
        for thread in threads:
            await loop.run_in_executor(None, thread.join)

    def _run(self) -> None:
        context: C | None = None
        try:
            context = self._make_context()
        except BaseException as exc:  # noqa: BLE001 - every job of this thread gets the error
            error = self._translate(exc)
            while (item := self._queue.get()) is not None:
                self._settle([(item[1], error, None)])
            return
        try:
            stopping = False
            while not stopping:
                item = self._queue.get()
                if item is None:
                    break
                batch = [item]
                while len(batch) < self._batch_max:
                    try:
                        nxt = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if nxt is None:
                        stopping = True
                        break
                    batch.append(nxt)
                self._run_batch(context, batch)
        finally:
            with contextlib.suppress(Exception):
                context.close()

    def _run_batch(self, context: C, batch: list[_Item[C]]) -> None:
        early: list[_Result] = []
        durable: list[_Pending] = []
        for job, fut, is_durable, _ in [i for i in batch if i[3]] + [i for i in batch if not i[3]]:
            try:
                value, error = job(context), None
            except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
                value, error = None, self._translate(exc)
            joined = context.joined()
            if is_durable:
                durable.append((fut, error, value, joined))
            else:
                early.append((fut, error, value))
        if early:  # reads: answered before the batch's writes are made durable
            self._settle(early)
        try:
            failure = context.end_batch()
        except BaseException as exc:  # noqa: BLE001 - the thread must outlive any failure
            failure = exc
        if durable:
            if failure is None:
                self._settle([(fut, exc, value) for fut, exc, value, _ in durable])
            else:  # the commit (or a directory fsync) failed: so did every job that joined it
                error = self._translate(failure)
                self._settle([(fut, exc or (error if j else None), value) for fut, exc, value, j in durable])

    def _settle(self, results: list[_Result]) -> None:
        assert self._loop is not None
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits any more
            self._loop.call_soon_threadsafe(_settle, results)


def _settle(results: list[_Result]) -> None:
    for fut, exc, value in results:
        if fut.done():  # the waiting request was cancelled
            continue
        if exc is None:
            fut.set_result(value)
        else:
            fut.set_exception(exc)
