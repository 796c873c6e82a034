"""The exporter's small HTTP side: ``/metrics``, ``/liveness``, ``/readiness`` (the upstream has none)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from lightspeed import metrics as metrics_routes
from lightspeed.api.errors import json_response
from lightspeed.collector.status import CollectorStatus
from lightspeed.exporter.directory import DirectorySource
from lightspeed.metrics import Metrics
from lightspeed.storage import StorageError

__all__ = ["make_probe_app"]

PING_TIMEOUT_SECONDS = 2.0


def make_probe_app(*, source: DirectorySource, status: CollectorStatus, metrics: Metrics) -> web.Application:
    """Ready while the data directory can be read; collection problems (credentials, uploads)
    are reported in the body, as the service does, and do not make the exporter unready."""

    async def liveness(request: web.Request) -> web.Response:
        return json_response({"alive": True})

    async def readiness(request: web.Request) -> web.Response:
        try:
            await asyncio.wait_for(source.ping(), PING_TIMEOUT_SECONDS)
            metrics.collector.storage_available.set(1)
        except (StorageError, TimeoutError) as exc:
            metrics.collector.storage_available.set(0)
            reason = f"the data directory is not available: {exc or 'no answer in time'}"
            return json_response({"ready": False, "reason": reason, "data_collector": status.to_dict()}, status=503)
        body: dict[str, object] = {"ready": True, "reason": "Exporter is ready", "data_collector": status.to_dict()}
        impacts = status.impacts()
        if impacts:
            body["impacts"] = impacts
        return json_response(body)

    app = web.Application()
    app.router.add_get("/liveness", liveness)
    app.router.add_get("/readiness", readiness)
    metrics_routes.add_routes(app, metrics)
    return app
