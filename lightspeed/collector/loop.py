"""The periodic loop around the collection cycle, and the background task that runs it.

A cycle every ``collection_interval`` seconds (start to start); a failed cycle is retried
on an exponential schedule with full jitter, capped by the interval and never sooner than
the ingress's ``Retry-After``. Stopping asks for one final bounded collection.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
from typing import Final

import attrs

from lightspeed.collector.cycle import Collector
from lightspeed.collector.ingress import UploadOutcome, UploadResult
from lightspeed.collector.status import CycleReport

__all__ = ["MAX_RETRY_AFTER_SECONDS", "CollectorTask", "backoff_delay", "run_forever"]

log = logging.getLogger("lightspeed.collector")

#: Longest wait a ``Retry-After`` can impose.
MAX_RETRY_AFTER_SECONDS: Final = 24 * 3600.0


def backoff_delay(collector: Collector, failure: UploadResult) -> float:
    """Seconds to wait after a failed cycle: full jitter, capped by ``retry_max_seconds``
    (default ``collection_interval``), never less than the server's ``Retry-After``."""
    dc = collector.collection.data_collector
    n = max(1, collector.status.consecutive_failures)
    ceiling = float(dc.collection_interval) if dc.retry_max_seconds is None else dc.retry_max_seconds
    cap = min(ceiling, dc.retry_base_seconds * 2.0 ** min(n - 1, 62))
    delay = random.uniform(0, cap)
    if failure.retry_after is not None:
        delay = max(delay, min(failure.retry_after, MAX_RETRY_AFTER_SECONDS))
    return delay


async def run_forever(collector: Collector, stop: asyncio.Event) -> None:
    """Cycles until ``stop`` is set, retrying failures on the backoff schedule; then one
    final collection."""
    loop = asyncio.get_running_loop()
    interval = collector.collection.data_collector.collection_interval
    log.info("data collector started: every %d s, owner %s", interval, collector.owner)
    while not stop.is_set():
        started = loop.time()
        report = await _guarded_cycle(collector)
        if report.failure is not None:
            delay = backoff_delay(collector, report.failure)
            log.warning("next collection attempt in %.2f s (failure %d)", delay, collector.status.consecutive_failures)
        else:
            delay = max(0.0, interval - (loop.time() - started))
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), delay)
    log.info("data collector stopping: final collection")
    await _guarded_cycle(collector)
    log.info("data collector stopped")


async def _guarded_cycle(collector: Collector) -> CycleReport:
    try:
        report = await collector.run_once()
    except Exception as exc:
        log.exception("collection cycle crashed")
        failure = UploadResult(outcome=UploadOutcome.TRANSIENT, message=f"cycle crashed: {exc!r}")
        collector.record_failure(failure)
        return CycleReport(failure=failure)
    if report.uploads or report.set_aside or report.dropped or report.failure is not None:
        log.info("collection cycle: %s", report.summary())
    return report


@attrs.define(kw_only=True, eq=False)
class CollectorTask:
    """The collector as a background task: :meth:`start`, then :meth:`stop` (final bounded collection)."""

    collector: Collector
    shutdown_timeout: float
    _stop: asyncio.Event = attrs.field(factory=asyncio.Event, init=False)
    _task: asyncio.Task[None] | None = attrs.field(default=None, init=False)

    def start(self) -> None:
        self._task = asyncio.create_task(run_forever(self.collector, self._stop), name="lightspeed-collector")

    async def stop(self) -> None:
        """Ask for the final collection, wait for it at most ``shutdown_timeout`` seconds, then cancel.

        The task's own exception, if it died of one, is raised here.
        """
        task = self._task
        if task is None:
            return
        self._stop.set()
        try:
            await asyncio.wait_for(asyncio.shield(task), self.shutdown_timeout)
        except TimeoutError:
            log.error("final collection did not finish within %.1f s: cancelled", self.shutdown_timeout)
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
        finally:
            self._task = None
