"""The ``lightspeed-exporter`` command (also ``lightspeed exporter``)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import sys
from collections.abc import AsyncIterator, Sequence
from typing import TYPE_CHECKING

from lightspeed.collector.status import CollectorStatus
from lightspeed.errors import ConfigError
from lightspeed.exporter.directory import DirectorySource
from lightspeed.exporter.settings import ExporterSettings, parse_exporter_args

if TYPE_CHECKING:
    from lightspeed.metrics import Metrics

__all__ = ["main", "run_exporter"]

log = logging.getLogger("lightspeed.exporter")

EXIT_CONFIG = 2


def source_for(settings: ExporterSettings) -> DirectorySource:
    return DirectorySource(
        data_dir=settings.data_dir,
        collection=settings.config.user_data_collection,
        allowed_subdirs=settings.allowed_subdirs,
        settle_seconds=settings.settle_seconds,
        state_dir=settings.state_dir,
    )


@contextlib.asynccontextmanager
async def _probes(
    settings: ExporterSettings, source: DirectorySource, status: CollectorStatus, metrics: Metrics
) -> AsyncIterator[None]:
    """``/metrics``, ``/liveness`` and ``/readiness`` on ``metrics_port``, while the collector runs."""
    from aiohttp import web

    from lightspeed.exporter.probes import make_probe_app

    if settings.metrics_port is None:
        yield
        return
    runner = web.AppRunner(make_probe_app(source=source, status=status, metrics=metrics), access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, settings.metrics_host, settings.metrics_port)
    await site.start()
    log.info("metrics and probes on %s:%d", settings.metrics_host, settings.metrics_port)
    try:
        yield
    finally:
        await runner.cleanup()


async def run_exporter(settings: ExporterSettings) -> int:
    """Collect once (``collection_interval`` 0) or until SIGTERM; the exit status."""
    from lightspeed.collector.run import run_collect
    from lightspeed.metrics import Metrics

    source = source_for(settings)
    status = CollectorStatus(enabled=True)
    metrics = Metrics()
    async with _probes(settings, source, status, metrics):
        return await run_collect(
            settings.config,
            once=settings.one_shot,
            storage=source,
            metrics=metrics.collector,
            status=status,
            prog="lightspeed-exporter",
        )


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``lightspeed-exporter`` console script."""
    try:
        settings, print_and_exit = parse_exporter_args(sys.argv[1:] if argv is None else argv)
    except ConfigError as exc:
        print(f"lightspeed-exporter: error: {exc}", file=sys.stderr)
        return EXIT_CONFIG
    if print_and_exit:
        print(settings.dumps())
        return 0
    from lightspeed.config import config_secrets
    from lightspeed.logs import setup_logging

    setup_logging(settings.log_level, secrets=config_secrets(settings.config))
    log.info(
        "lightspeed-exporter starting (mode %s): %s every %s, to %s",
        settings.mode,
        settings.data_dir,
        "once" if settings.one_shot else f"{settings.collection_interval} s",
        settings.ingress_server_url,
    )
    return asyncio.run(run_exporter(settings))
