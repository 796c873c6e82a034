"""``lightspeed collect``: the collector outside the HTTP service (CronJob or sidecar)."""

from __future__ import annotations

import asyncio
import logging
import shutil
import signal
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import aiohttp

from lightspeed.collector.credentials import create_provider
from lightspeed.collector.cycle import Collector
from lightspeed.collector.ingress import IngressClient, UploadResult
from lightspeed.collector.loop import CollectorTask
from lightspeed.collector.status import CollectorStatus
from lightspeed.config import Config
from lightspeed.storage import StorageBackend, StorageError, create_backend

if TYPE_CHECKING:
    from lightspeed.metrics import CollectorMetrics

__all__ = ["collector_config_problems", "run_collect", "run_dry_run"]

log = logging.getLogger("lightspeed.collector")

EXIT_INCOMPLETE = 1


def collector_config_problems(config: Config) -> list[str]:
    """What keeps ``lightspeed collect`` from uploading, whether or not ``enabled`` is set.

    (``enabled`` only starts the collector inside the service; a CronJob may run
    ``collect --once`` with it off.)
    """
    dc = config.user_data_collection.data_collector
    base = "user_data_collection.data_collector"
    problems: list[str] = []
    if not dc.ingress_server_url:
        problems.append(f"{base}.ingress_server_url: required to collect")
    if not dc.ingress_content_service_name:
        problems.append(f"{base}.ingress_content_service_name: required to collect")
    if dc.auth.mode == "manual" and not dc.ingress_server_auth_token and not dc.ingress_server_auth_token_path:
        problems.append(
            f"{base}.ingress_server_auth_token: required to collect (or ingress_server_auth_token_path,"
            " or another auth.mode)"
        )
    return problems


async def run_collect(
    config: Config,
    *,
    once: bool,
    storage: StorageBackend | None = None,
    metrics: CollectorMetrics | None = None,
    status: CollectorStatus | None = None,
    prog: str = "lightspeed collect",
) -> int:
    """One cycle (``once``: exit status 0 when everything pending was shipped), or cycles
    every ``collection_interval`` until SIGTERM/SIGINT, then a final bounded collection.

    ``storage`` replaces the configured backend (the exporter's data directory); ``metrics``
    and ``status`` are filled in when given (the exporter serves them).
    """
    udc = config.user_data_collection
    storage = storage if storage is not None else create_backend(udc)
    try:
        await storage.open()
    except StorageError as exc:
        print(f"{prog}: cannot open storage: {exc}", flush=True)
        return EXIT_INCOMPLETE
    try:
        async with aiohttp.ClientSession() as session:
            provider = create_provider(udc.data_collector, session=session, metrics=metrics)
            status = status if status is not None else CollectorStatus(enabled=True)
            status.credentials = provider.status
            collector = Collector(
                storage=storage,
                collection=udc,
                uploader=IngressClient(session=session, config=udc.data_collector, credentials=provider),
                metrics=metrics,
                status=status,
            )
            try:
                if once:
                    report = await collector.run_once()
                    print(f"{prog}: {report.summary()}", flush=True)
                    return 0 if report.ok and not report.set_aside else EXIT_INCOMPLETE
                task = CollectorTask(collector=collector, shutdown_timeout=udc.data_collector.shutdown_timeout_seconds)
                stop = asyncio.Event()
                loop = asyncio.get_running_loop()
                for sig in (signal.SIGINT, signal.SIGTERM):
                    loop.add_signal_handler(sig, stop.set)
                task.start()
                await stop.wait()
                log.info("stop requested")
                await task.stop()
                return 0
            finally:
                await provider.aclose()
    finally:
        await storage.aclose()


async def run_dry_run(
    config: Config, *, output: Path | None, storage: StorageBackend | None = None, prog: str = "lightspeed collect"
) -> int:
    """Build the archive the next cycle would upload first, and write it to ``output`` or list
    its members; nothing is uploaded, acked, deleted or marked (the claim is released)."""
    udc = config.user_data_collection
    storage = storage if storage is not None else create_backend(udc)
    try:
        await storage.open()
    except StorageError as exc:
        print(f"{prog}: cannot open storage: {exc}", flush=True)
        return EXIT_INCOMPLETE
    try:
        collector = Collector(storage=storage, collection=udc, uploader=_NoUploads())
        preview = await collector.preview()
    except StorageError as exc:
        print(f"{prog}: storage failed: {exc}", flush=True)
        return EXIT_INCOMPLETE
    finally:
        await storage.aclose()
    dc = udc.data_collector
    for record in preview.set_aside:
        print(
            f"{prog}: {record.name} ({record.size} bytes) would be set aside: its archive alone exceeds"
            f" max_payload_bytes ({dc.max_payload_bytes})",
            flush=True,
        )
    archive = preview.archive
    if archive is None:
        print(f"{prog}: nothing to upload (dry run: nothing was sent)", flush=True)
        return 0
    try:
        service = dc.ingress_content_service_name or "(ingress_content_service_name)"
        header = (
            f"# dry run: the next upload would be {archive.size} bytes (gzip tar) holding {len(archive.records)}"
            f" record(s), {archive.raw_bytes} bytes of JSON, as application/vnd.redhat.{service}.periodic+tar;"
            " nothing was sent, acked or deleted"
        )
        if output is not None:
            shutil.copyfile(archive.path, output)
            print(f"{header}\n# written to {output}", flush=True)
            return 0
        print(header)
        width = max(len(str(r.size)) for r in archive.records)
        for record in archive.records:
            print(f"{record.size:>{width}}  {record.name}")
        sys.stdout.flush()
        return 0
    finally:
        archive.discard()


class _NoUploads:
    """The uploader of a dry run: never called."""

    async def ready(self) -> UploadResult | None:
        return None

    async def upload(self, archive: Path, *, filename: str | None = None) -> UploadResult:
        raise AssertionError("a dry run never uploads")
