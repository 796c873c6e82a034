"""One collection cycle.

One cycle: (optionally) drop the oldest records when pending data exceeds
``max_pending_bytes``; then, until nothing is left to claim, claim a batch, pack it into
a size-bounded tar.gz on disk, upload it, and ack it (delete, or mark exported) only
after a 202. A failed upload releases what was not delivered and ends the cycle; the
loop (:mod:`lightspeed.collector.loop`) then backs off and tries again.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import socket
import time
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Final, Protocol

import attrs

from lightspeed.collector.archive import Archive, ArchiveTooLarge, build_archive, remove_orphaned_archives
from lightspeed.collector.ingress import UploadOutcome, UploadResult
from lightspeed.collector.status import CollectorStatus, CycleReport
from lightspeed.config import UserDataCollectionConfig
from lightspeed.records import RecordKind
from lightspeed.storage import Claim, ClaimLost, StorageBackend, StorageError, StoredRecord

if TYPE_CHECKING:
    from lightspeed.metrics import CollectorMetrics

__all__ = ["BATCH_RECORDS", "FIRST_BATCH_RECORDS", "Collector", "Preview", "Uploader", "enabled_kinds"]

log = logging.getLogger("lightspeed.collector")

#: Most records claimed (and packed into one archive) at a time.
BATCH_RECORDS: Final = 5_000
#: Records in a cycle's first batch; each later batch doubles, up to the most. A small first
#: batch gets its upload and ack (deleting its files) started early, overlapping the packing
#: of the next batches: only the last batch's ack is not overlapped by anything.
FIRST_BATCH_RECORDS: Final = 1_000


class Uploader(Protocol):
    async def upload(self, archive: Path, *, filename: str | None = None) -> UploadResult: ...

    async def ready(self) -> UploadResult | None:
        """``None`` when an upload could go out now; else why not (no credentials), so that
        nothing is claimed or packed in vain."""
        ...


def enabled_kinds(collection: UserDataCollectionConfig) -> tuple[RecordKind, ...]:
    kinds: list[RecordKind] = []
    if collection.feedback_enabled:
        kinds.append(RecordKind.FEEDBACK)
    if collection.transcripts_enabled:
        kinds.append(RecordKind.TRANSCRIPT)
    return tuple(kinds)


@attrs.define
class Preview:
    """What :meth:`Collector.preview` found: the next archive (``None``: nothing to send) and the
    records the cycle would set aside before it."""

    archive: Archive | None = None
    set_aside: list[StoredRecord] = attrs.field(factory=list)


class _Failed(Exception):
    def __init__(self, result: UploadResult) -> None:
        super().__init__(result.message)
        self.result = result


@attrs.define(kw_only=True, eq=False)
class Collector:
    """Ships what ``storage`` holds through ``uploader``; one instance per process."""

    storage: StorageBackend
    collection: UserDataCollectionConfig
    uploader: Uploader
    metrics: CollectorMetrics | None = None
    status: CollectorStatus = attrs.field(factory=lambda: CollectorStatus(enabled=True))
    owner: str = attrs.field(factory=lambda: f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}")
    tmp_dir: str | None = None
    batch_records: int = BATCH_RECORDS
    first_batch_records: int = FIRST_BATCH_RECORDS
    _swept: bool = attrs.field(default=False, init=False)

    @property
    def kinds(self) -> tuple[RecordKind, ...]:
        return enabled_kinds(self.collection)

    async def run_once(self) -> CycleReport:
        """One cycle; never raises for storage or upload failures (see the report)."""
        started = time.monotonic()
        report = CycleReport()
        if not self._swept:  # archives of collectors killed mid-cycle, once per process
            self._swept = True
            for path in await asyncio.to_thread(remove_orphaned_archives, self.tmp_dir):
                log.warning("removed %s, the archive of a collector that no longer runs", path)
        if not self.kinds:
            report.remaining = 0
            return report
        finishing: asyncio.Future[None] | None = None
        try:
            await self._drop_excess(report)
            batch = min(self.first_batch_records, self.batch_records)
            max_bytes = self.collection.data_collector.max_payload_bytes
            was_short = False
            not_ready = await self.uploader.ready()
            if not_ready is not None:  # no upload goes out without credentials: the records stay pending
                self.record_failure(not_ready)
                report.failure = not_ready
            while not_ready is None:
                claim = await self.storage.claim(
                    owner=self.owner,
                    kinds=self.kinds,
                    max_records=batch,
                    max_bytes=max_bytes,
                    lease_seconds=self.collection.data_collector.lease_seconds,
                )
                if not claim.records:
                    break
                asked, batch = batch, min(2 * batch, self.batch_records)
                ok, finish = await self._ship_claim(claim, report)
                # The previous batch's acks (deleting its files) ran while this one was claimed,
                # packed and uploaded; at most two batches are in flight.
                if finishing is not None:
                    await finishing
                finishing = finish
                if not ok:
                    break
                # A batch short of both limits: the store had nothing more when it was claimed (or
                # the next record was too large to join it). After two such batches in a row the
                # cycle ends; what was written since waits for the next one, so that a steady
                # stream of queries cannot keep a cycle going with an upload of a few records each.
                short = len(claim.records) < asked and claim.size * 2 < max_bytes
                if short and was_short:
                    break
                was_short = short
        except StorageError as exc:
            if self.metrics is not None:
                self.metrics.storage_available.set(0)
            result = UploadResult(outcome=UploadOutcome.TRANSIENT, message=f"storage failed: {exc}")
            log.error("collection cycle stopped: %s", result.message)
            self.record_failure(result)
            report.failure = result
        finally:
            if finishing is not None:
                await finishing
        with contextlib.suppress(StorageError):
            report.remaining = await self._refresh_pending()
            if self.metrics is not None and report.failure is None:
                self.metrics.storage_available.set(1)
        report.seconds = time.monotonic() - started
        return report

    async def _refresh_pending(self) -> int:
        stats = await self.storage.pending_stats()
        if self.metrics is not None:
            for kind in RecordKind:
                self.metrics.records_pending.labels(kind=kind.value).set(stats.records.get(kind, 0))
                self.metrics.bytes_pending.labels(kind=kind.value).set(stats.bytes.get(kind, 0))
        return sum(stats.records.get(k, 0) for k in self.kinds)

    async def _drop_excess(self, report: CycleReport) -> None:
        limit = self.collection.data_collector.max_pending_bytes
        if limit is None:
            return
        stats = await self.storage.pending_stats()
        total = sum(stats.bytes.values())
        excess = total - limit
        if excess <= 0:
            return
        dropped = dropped_bytes = 0
        while excess > 0:
            claim = await self.storage.claim(
                owner=self.owner,
                kinds=tuple(RecordKind),
                max_records=self.batch_records,
                max_bytes=excess,
                lease_seconds=self.collection.data_collector.lease_seconds,
            )
            if not claim.records:
                break
            await self.storage.ack(claim, delete=True)
            for rec in claim.records:
                if self.metrics is not None:
                    self.metrics.records_dropped.labels(kind=rec.kind.value).inc()
            dropped += len(claim.records)
            dropped_bytes += claim.size
            excess -= claim.size
        report.dropped += dropped
        log.error(
            "pending data (%d bytes) exceeds max_pending_bytes (%d): deleted the %d oldest record(s) (%d bytes)"
            " without sending them",
            total,
            limit,
            dropped,
            dropped_bytes,
        )

    async def _ship_claim(self, claim: Claim, report: CycleReport) -> tuple[bool, asyncio.Future[None]]:
        """Upload the claim's records; return whether that went well, and a future that settles
        the claim (its pending acks, then the release of whatever was not delivered)."""
        acks: list[asyncio.Future[None]] = []
        ship = asyncio.ensure_future(self._ship(claim, list(claim.records), report, acks))
        renewer = asyncio.ensure_future(self._keep_renewed(claim, ship))
        try:
            await ship
            ok = True
        except _Failed as exc:
            self.record_failure(exc.result)
            report.failure = exc.result
            ok = False
        except asyncio.CancelledError:
            lost = renewer.done() and not renewer.cancelled() and isinstance(renewer.exception(), ClaimLost)
            if not lost:
                await asyncio.shield(self._settle(claim, renewer, acks))
                raise
            result = UploadResult(outcome=UploadOutcome.TRANSIENT, message=str(renewer.exception()))
            log.error("batch abandoned: %s", result.message)
            report.failure = result
            ok = False
        except BaseException:
            await asyncio.shield(self._settle(claim, renewer, acks))
            raise
        return ok, asyncio.ensure_future(self._settle(claim, renewer, acks))

    async def _settle(self, claim: Claim, renewer: asyncio.Future[None], acks: list[asyncio.Future[None]]) -> None:
        try:
            for ack in acks:
                try:
                    await ack
                except ClaimLost as exc:
                    log.error("delivered, but %s; those records will be delivered again (same record ids)", exc)
                except StorageError as exc:
                    log.error("delivered, but cannot mark it in storage: %s; may be delivered again", exc)
        finally:
            renewer.cancel()
            # (A renewal may have found the claim gone once every record was acked: no matter.)
            with contextlib.suppress(asyncio.CancelledError, StorageError):
                await renewer
            # Whatever was not delivered goes back, untouched (a no-op when everything was acked).
            with contextlib.suppress(StorageError):
                await self.storage.release(claim)

    async def _keep_renewed(self, claim: Claim, ship: asyncio.Future[None]) -> None:
        lease = self.collection.data_collector.lease_seconds
        while True:
            await asyncio.sleep(lease / 3)
            try:
                await self.storage.renew(claim, lease_seconds=lease)
            except ClaimLost:
                ship.cancel()  # another collector has these records now: do not upload them twice
                raise
            except StorageError as exc:
                log.warning("cannot renew claim %s: %s", claim.claim_id, exc)

    async def _build(self, records: Sequence[StoredRecord]) -> Archive:
        """The archive of ``records`` as it is uploaded (``ArchiveTooLarge`` past ``max_payload_bytes``)."""
        dc = self.collection.data_collector
        return await build_archive(
            self.storage, records, max_bytes=dc.max_payload_bytes, directory=self.tmp_dir, level=dc.compression_level
        )

    async def preview(self) -> Preview:
        """The archive the next cycle would upload first: the same claim (first batch size,
        ``max_payload_bytes``), the same packing and the same halving of a batch too large;
        the claim is released afterwards, so nothing changes in the store. The caller
        discards the archive."""
        dc = self.collection.data_collector
        preview = Preview()
        claim = await self.storage.claim(
            owner=self.owner,
            kinds=self.kinds,
            max_records=min(self.first_batch_records, self.batch_records),
            max_bytes=dc.max_payload_bytes,
            lease_seconds=dc.lease_seconds,
        )
        try:
            records = list(claim.records)
            while records and preview.archive is None:
                try:
                    archive = await self._build(records)
                except ArchiveTooLarge:
                    if len(records) == 1:
                        preview.set_aside.append(records.pop())
                        continue
                    records = records[: len(records) // 2]  # the first half goes first
                    continue
                if archive.records:
                    preview.archive = archive
                else:
                    archive.discard()
                    break
        finally:
            await self.storage.release(claim)
        return preview

    async def _ship(
        self, claim: Claim, records: Sequence[StoredRecord], report: CycleReport, acks: list[asyncio.Future[None]]
    ) -> None:
        dc = self.collection.data_collector
        try:
            archive = await self._build(records)
        except ArchiveTooLarge:
            if len(records) == 1:
                await self._set_aside(claim, records[0], report, "its compressed archive exceeds max_payload_bytes")
                return
            await self._split(claim, records, report, acks)
            return
        try:
            report.missing += len(archive.missing)
            if not archive.records:
                await self.storage.ack(claim, records=archive.missing, delete=True)
                return
            filename = f"lightspeed-{datetime.now(UTC):%Y%m%dT%H%M%SZ}-{uuid.uuid4().hex[:12]}.tar.gz"
            result = await self.uploader.upload(archive.path, filename=filename)
        finally:
            archive.discard()
        if self.metrics is not None:
            self.metrics.uploads.labels(outcome=result.outcome.value).inc()
        if result.outcome is UploadOutcome.SUCCESS:
            log.info(
                "uploaded %d record(s), %d bytes compressed (%d raw); ingress request_id %s",
                len(archive.records),
                archive.size,
                archive.raw_bytes,
                result.request_id,
            )
            self._succeeded(archive.records, archive.size, report)
            # Acked in the background: deleting the files overlaps with the next batch.
            delivered = archive.records + archive.missing
            acks.append(asyncio.ensure_future(self.storage.ack(claim, records=delivered, delete=dc.cleanup_after_send)))
            return
        if result.outcome is UploadOutcome.TOO_LARGE:
            log.warning("%s (%d records, %d bytes): splitting the batch", result.message, len(records), archive.size)
            if len(records) == 1:
                await self._set_aside(claim, records[0], report, f"the ingress refused it alone: {result.message}")
                return
            await self._split(claim, records, report, acks)
            return
        raise _Failed(result)

    async def _split(
        self, claim: Claim, records: Sequence[StoredRecord], report: CycleReport, acks: list[asyncio.Future[None]]
    ) -> None:
        half = len(records) // 2
        await self._ship(claim, records[:half], report, acks)
        await self._ship(claim, records[half:], report, acks)

    async def _set_aside(self, claim: Claim, record: StoredRecord, report: CycleReport, reason: str) -> None:
        log.error(
            "record %s (%d bytes) can never be uploaded (%s): moved aside, not deleted",
            record.name,
            record.size,
            reason,
        )
        await self.storage.set_aside(claim, records=[record], reason=reason)
        report.set_aside += 1
        if self.metrics is not None:
            self.metrics.records_set_aside.labels(kind=record.kind.value).inc()

    def _succeeded(self, records: Sequence[StoredRecord], size: int, report: CycleReport) -> None:
        now = time.time()
        report.uploads += 1
        report.records += len(records)
        report.bytes += size
        self.status.consecutive_failures = 0
        self.status.last_success = now
        self.status.rejected = False
        self.status.no_credentials = False
        if self.metrics is not None:
            for rec in records:
                self.metrics.records_uploaded.labels(kind=rec.kind.value).inc()
            self.metrics.bytes_uploaded.inc(size)
            self.metrics.last_success.set(now)
            self.metrics.consecutive_failures.set(0)

    def record_failure(self, result: UploadResult) -> None:
        """Count a failed attempt in the status and metrics, and log it."""
        self.status.consecutive_failures += 1
        self.status.last_failure = time.time()
        self.status.last_error = result.message
        self.status.rejected = result.outcome is UploadOutcome.REJECTED
        self.status.no_credentials = result.outcome is UploadOutcome.NO_CREDENTIALS
        if self.metrics is not None:
            self.metrics.consecutive_failures.set(self.status.consecutive_failures)
        if result.outcome is UploadOutcome.REJECTED:
            log.error(
                "UPLOAD REJECTED, check the data collector's configuration and credentials"
                " (ingress_server_url, token, ingress_content_service_name): %s; the data is kept",
                result.message,
            )
        elif result.outcome is UploadOutcome.NO_CREDENTIALS:
            log.warning("nothing uploaded: %s; the data is kept", result.message)
        else:
            log.warning("upload failed: %s; the data is kept", result.message)
