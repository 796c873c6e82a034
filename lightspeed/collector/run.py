"""``lightspeed collect``: the collector outside the HTTP service (CronJob or sidecar)."""

from __future__ import annotations

import asyncio
import logging
import signal

import aiohttp

from lightspeed.collector.cycle import Collector
from lightspeed.collector.ingress import IngressClient
from lightspeed.collector.loop import CollectorTask
from lightspeed.config import Config
from lightspeed.storage import StorageError, create_backend

__all__ = ["collector_config_problems", "run_collect"]

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
    if not dc.ingress_server_auth_token and not dc.ingress_server_auth_token_path:
        problems.append(f"{base}.ingress_server_auth_token: required to collect (or ingress_server_auth_token_path)")
    return problems


async def run_collect(config: Config, *, once: bool) -> int:
    """One cycle (``once``: exit status 0 when everything pending was shipped), or cycles
    every ``collection_interval`` until SIGTERM/SIGINT, then a final bounded collection."""
    udc = config.user_data_collection
    storage = create_backend(udc)
    try:
        await storage.open()
    except StorageError as exc:
        print(f"lightspeed collect: cannot open storage: {exc}", flush=True)
        return EXIT_INCOMPLETE
    try:
        async with aiohttp.ClientSession() as session:
            collector = Collector(
                storage=storage, collection=udc, uploader=IngressClient(session=session, config=udc.data_collector)
            )
            if once:
                report = await collector.run_once()
                print(f"lightspeed collect: {report.summary()}", flush=True)
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
        await storage.aclose()
