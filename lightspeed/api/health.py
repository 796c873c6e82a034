"""Probes and service information: ``/liveness``, ``/readiness``, ``/v1/info``."""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from lightspeed import __version__
from lightspeed.actions import Action
from lightspeed.api.errors import json_response
from lightspeed.api.openapi import Response, operation
from lightspeed.auth.routes import requires
from lightspeed.state import collector_status_from, config_from, metrics_from, storage_from
from lightspeed.storage import StorageError, backend_info

__all__ = ["add_routes"]

log = logging.getLogger("lightspeed.api.health")

PING_TIMEOUT_SECONDS = 2.0


@operation(summary="Liveness probe: the process answers", tags=["service"], responses={200: "LivenessResponse"})
@requires(Action.INFO)
async def liveness(request: web.Request) -> web.Response:
    return json_response({"alive": True})


@operation(
    summary="Readiness probe: the store and the LLM providers",
    tags=["service"],
    responses={
        200: "ReadinessResponse",
        503: Response(
            description="Not ready", content={"application/json": {"$ref": "#/components/schemas/ReadinessResponse"}}
        ),
    },
)
@requires(Action.INFO)
async def readiness(request: web.Request) -> web.Response:
    storage = storage_from(request)
    available = metrics_from(request).collector.storage_available
    try:
        await asyncio.wait_for(storage.ping(), PING_TIMEOUT_SECONDS)
        available.set(1)
    except Exception as exc:  # a probe answers 503, never 500 (logged, not swallowed)
        available.set(0)
        if isinstance(exc, StorageError | TimeoutError):
            cause = str(exc) or f"no answer within {PING_TIMEOUT_SECONDS} s"
            log.warning("readiness: storage backend %s is not available: %s", storage.name, cause)
        else:  # the backend broke its contract (only StorageError): keep the traceback for its author
            cause = f"unexpected {type(exc).__name__}: {exc}"
            log.exception("readiness: storage backend %s failed its ping", storage.name)
        return json_response(
            {
                "ready": False,
                "reason": f"Storage backend {storage.name!r} is not available: {cause}",
                "providers": [],
            },
            status=503,
        )
    body: dict[str, object] = {"ready": True, "reason": "Service is ready", "providers": []}
    collector = collector_status_from(request)
    if collector.enabled:
        # Upload problems (such as a rejected token) are reported, but do not make the service unready.
        body["data_collector"] = collector.to_dict()
        impacts = collector.impacts()
        if impacts:
            body["impacts"] = impacts
    return json_response(body)


@operation(summary="Service name and version", tags=["service"], responses={200: "InfoResponse"}, errors=[401, 403])
@requires(Action.INFO)
async def info(request: web.Request) -> web.Response:
    storage = storage_from(request)
    meta = backend_info(storage.name)
    return json_response(
        {
            "name": config_from(request).name,
            "service_version": __version__,
            "storage": {
                "backend": storage.name,
                "distribution": meta.distribution if meta else None,
                "version": meta.version if meta else None,
            },
        }
    )


def add_routes(app: web.Application) -> None:
    for prefix in ("", "/v1"):
        app.router.add_get(f"{prefix}/liveness", liveness)
        app.router.add_get(f"{prefix}/readiness", readiness)
    app.router.add_get("/v1/info", info)
