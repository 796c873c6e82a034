"""The one way the store runs blocking work off the event loop: a :class:`Lane`.

A lane is a queue and one or more threads. The event loop submits a job (a function of the
thread's context) and awaits an asyncio future; a thread takes jobs in batches, runs them,
ends the batch through its context (for the writer: one SQLite commit and the directory
fsyncs for the whole batch, the *group commit*) and settles the batch's futures with one
wake-up of the loop. The store's lanes: the writer (one thread, one SQLite connection,
batches of up to 512 jobs), the reader (one thread, a reading connection, batches: the query
path's reads), the pool (several threads, a reading connection each, one job at a time: scans,
reads outside the query path) and the unlink lane (deletions, when the deleting helper process
cannot run).

Every hand-over between the loop and a thread costs both of them the GIL, so a batching lane
hands over as little as it can, both ways (decision ``store-01``): the jobs the loop submits
during one iteration of the event loop go to the thread together (one ``queue.put``, one
wake-up), and a batch's results come back with one ``call_soon_threadsafe`` (two when the
batch answered reads before its commit).
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
U = TypeVar("U")
C = TypeVar("C", bound="Context")

#: Jobs one writer batch takes at most.
BATCH_MAX: Final = 512

_Result = tuple["asyncio.Future[Any]", BaseException | None, Any]
_Pending = tuple["asyncio.Future[Any]", BaseException | None, Any, bool]
#: (first, then, future, durable): ``first`` runs in the batch's early pass (reads, record
#: files), ``then`` in its ordered pass, given the context and (when there is a ``first``)
#: what ``first`` returned; either may be None.
_Item = tuple[Callable[[C], Any] | None, Callable[..., Any] | None, "asyncio.Future[Any]", bool]


class Context(Protocol):
    """What a lane's thread hands each job, and what ends a batch."""

    def joined(self) -> bool:
        """Whether the job that just ran left work for :meth:`end_batch` (and resets that)."""

    def end_batch(self) -> BaseException | None:
        """Make the batch's durable jobs durable (commit, fsync); the error when that failed."""

    def close(self) -> None:
        """Release the thread's resources (its connection) when the lane stops."""


class Lane(Generic[C]):
    """A queue served by ``threads`` threads, each with a context made by ``make_context``.

    With ``batch_max`` above 1 (one thread taking batches), the jobs submitted during one
    iteration of the event loop are queued together; with ``batch_max`` 1 (a pool of threads
    taking one job each), each job is queued at once, for the next free thread.
    """

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
        # Lists of items, each list one iteration's submissions; None tells one thread to stop.
        self._queue: queue.SimpleQueue[list[_Item[C]] | None] = queue.SimpleQueue()
        self._submitted: list[_Item[C]] = []  # this iteration's, not queued yet (loop thread only)
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
        return self._submit((job, None, None, durable) if early else (None, job, None, durable))

    def submit_phased(self, first: Callable[[C], T], then: Callable[[C, T], U]) -> asyncio.Future[U]:
        """Queue a durable job in two parts: ``first`` runs in the batch's early pass (with the
        record files), ``then(context, what first returned)`` in its ordered pass (with the
        database writes); the future settles with ``then``'s result once the batch ended. When
        ``first`` raises, ``then`` does not run and the future gets the error."""
        return self._submit((first, then, None, True))

    def _submit(self, item: tuple[Any, Any, None, bool]) -> asyncio.Future[Any]:
        loop = self._loop
        if loop is None or not self._threads:  # closed while the caller was under way
            raise StorageUnavailable("the filesystem store is not open")
        fut = loop.create_future()
        queued: _Item[C] = (item[0], item[1], fut, item[3])
        if self._batch_max == 1:
            self._queue.put([queued])
            return fut
        submitted = self._submitted
        submitted.append(queued)
        if len(submitted) == 1:  # the first of this iteration: hand them all over at its end
            loop.call_soon(self._hand_over)
        return fut

    def _hand_over(self) -> None:
        items, self._submitted = self._submitted, []
        if items:
            self._queue.put(items)

    async def run(self, job: Callable[[C], T], *, durable: bool = True, early: bool = False) -> T:
        """Submit ``job`` and await it. A cancelled caller does not cancel the job: it runs
        (the thread then drops its result)."""
        return await self.submit(job, durable=durable, early=early)

    async def run_phased(self, first: Callable[[C], T], then: Callable[[C, T], U]) -> U:
        """:meth:`submit_phased` and await it; a cancelled caller does not cancel the job."""
        return await self.submit_phased(first, then)

    async def stop(self) -> None:
        """Finish every job queued before this call, then end the threads."""
        self._hand_over()
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
            while (items := self._queue.get()) is not None:
                self._settle([(item[2], error, None) for item in items])
            return
        try:
            stopping = False
            while not stopping:
                items = self._queue.get()
                if items is None:
                    break
                batch = items
                while len(batch) < self._batch_max:
                    try:
                        more = self._queue.get_nowait()
                    except queue.Empty:
                        break
                    if more is None:
                        stopping = True
                        break
                    batch += more
                self._run_batch(context, batch)
        finally:
            with contextlib.suppress(Exception):
                context.close()

    def _run_batch(self, context: C, batch: list[_Item[C]]) -> None:
        # 1. Early reads, answered at once: they wait neither for the batch's files nor its commit.
        reads = [(first, fut) for first, _, fut, durable in batch if first is not None and not durable]
        if reads:
            self._settle([(fut, *self._call(first, context)) for first, fut in reads])
            context.joined()
        # 2. Early writes (record files) and the first parts of phased jobs.
        durable: list[_Pending] = []
        firsts: dict[int, Any] = {}
        for i, (first, then, fut, is_durable) in enumerate(batch):
            if first is None or not is_durable:
                continue
            error, value = self._call(first, context)
            joined = context.joined()
            if then is not None and error is None:
                firsts[i] = (value, joined)
            else:
                durable.append((fut, error, value, joined))
        # 3. Everything else, in the order it was submitted (the database writes).
        late_reads: list[_Result] = []
        for i, (first, then, fut, is_durable) in enumerate(batch):
            if then is None:
                continue
            if first is None:
                error, value = self._call(then, context)
                joined = context.joined()
            elif i in firsts:
                before, joined = firsts[i]
                error, value = self._call(then, context, before)
                joined = context.joined() or joined
            else:
                continue  # its first part failed: settled with that error
            if is_durable:
                durable.append((fut, error, value, joined))
            else:
                late_reads.append((fut, error, value))
        if late_reads:  # reads in order: answered before the batch's writes are made durable
            self._settle(late_reads)
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

    def _call(self, job: Callable[..., Any], *args: Any) -> tuple[BaseException | None, Any]:
        """Run one job: (None, its value), or (the error a waiting request gets, None)."""
        try:
            return None, job(*args)
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting request
            return self._translate(exc), None

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
