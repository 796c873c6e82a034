"""Probes and service information: ``/liveness``, ``/readiness``, ``/v1/info``."""

from __future__ import annotations

import asyncio
import logging
from typing import Final

from aiohttp import web

from lightspeed import __version__
from lightspeed.actions import Action
from lightspeed.api.errors import json_response
from lightspeed.api.openapi import Response, operation
from lightspeed.auth.routes import requires
from lightspeed.health import Impact, ReadinessCheck
from lightspeed.state import (
    collector_status_from,
    config_from,
    llm_from,
    metrics_from,
    readiness_checks_from,
    storage_from,
)
from lightspeed.storage import StorageError, backend_info

__all__ = ["ALL_HEALTHY", "add_readiness_check", "add_routes"]

log = logging.getLogger("lightspeed.api.health")

PING_TIMEOUT_SECONDS = 2.0


@operation(summary="Liveness probe: the process answers", tags=["service"], responses={200: "LivenessResponse"})
@requires(Action.INFO)
async def liveness(request: web.Request) -> web.Response:
    return json_response({"alive": True})


@operation(
    summary="Readiness probe: the store, the LLM providers and what else reports in",
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
    checks = readiness_checks_from(request)
    found = await asyncio.gather(*(check(request.app) for check in checks))
    impacts = [impact for group in found for impact in group]
    unhealthy = [i for i in impacts if i.status == "unhealthy"]
    degraded = [i for i in impacts if i.status == "degraded"]
    providers = [i.provider for i in impacts if i.provider is not None]
    if unhealthy:
        status, ready, overall, reason = 503, False, "unhealthy", _reason(unhealthy)
    elif degraded:
        status, ready, overall, reason = 200, True, "degraded", _reason(degraded)
    else:
        status, ready, overall, reason = 200, True, "healthy", ALL_HEALTHY
    body: dict[str, object] = {
        "ready": ready,
        "reason": reason,
        "overall_status": overall,
        # The upstream's impacts are sentences; which part said what is in ``checks``, our addition.
        "impacts": [i.reason for i in [*unhealthy, *degraded]] or None,
        "providers": providers,
    }
    if unhealthy or degraded:
        body["checks"] = [
            {"component": i.component, "status": i.status, "reason": i.reason, "impact": i.impact}
            for i in [*unhealthy, *degraded]
        ]
    collector = collector_status_from(request)
    if collector.enabled:
        body["data_collector"] = collector.to_dict()
    return json_response(body, status=status)


#: The upstream's reason when everything is well.
ALL_HEALTHY: Final = "All providers are healthy"


def _reason(impacts: list[Impact]) -> str:
    """The upstream's words for unhealthy providers; otherwise the first impact's reason."""
    providers = [i.provider["provider_id"] for i in impacts if i.provider is not None]
    if providers and len(providers) == len(impacts):
        return f"Providers not healthy: {', '.join(providers)}"
    return impacts[0].reason


async def _storage_check(app: web.Application) -> list[Impact]:
    storage = storage_from(app)
    available = metrics_from(app).collector.storage_available
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
        return [
            Impact(
                component="storage",
                status="unhealthy",
                reason=f"Storage backend {storage.name!r} is not available: {cause}",
                impact="Feedback, transcripts and conversations cannot be stored",
            )
        ]
    return []


async def _providers_check(app: web.Application) -> list[Impact]:
    """Providers whose recent calls failed: unhealthy when it is the default one, else degraded."""
    registry = llm_from(app)
    default = registry.default[0] if registry.default else None
    out = []
    for provider in list(registry.providers.values()):
        if provider.health.status() != "error":
            continue
        message = provider.health.message or "its last call failed"
        out.append(
            Impact(
                component="llm",
                status="unhealthy" if provider.name == default else "degraded",
                reason=f"Provider {provider.name}: {message}",
                impact=f"Provider {provider.name}: {message}",
                provider={"provider_id": provider.name, "status": "error", "message": message},
            )
        )
    return out


async def _collector_check(app: web.Application) -> list[Impact]:
    """What the data collector reports (records wait; the service stays ready)."""
    collector = collector_status_from(app)
    return [
        Impact(
            component=i.get("component", "data_collector"),
            status="unhealthy" if i.get("status") == "unhealthy" else "degraded",
            reason=i.get("reason", ""),
            impact=i.get("reason", ""),
        )
        for i in (collector.impacts() if collector.enabled else [])
    ]


def add_readiness_check(app: web.Application, check: ReadinessCheck) -> None:
    """Have ``/readiness`` ask ``check`` too (call while building the app)."""
    readiness_checks_from(app).append(check)


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
    for check in (_storage_check, _providers_check, _collector_check):
        add_readiness_check(app, check)
    for prefix in ("", "/v1"):
        app.router.add_get(f"{prefix}/liveness", liveness)
        app.router.add_get(f"{prefix}/readiness", readiness)
    app.router.add_get("/v1/info", info)
