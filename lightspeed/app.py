"""``create_app(config)``: the fully wired, unstarted :class:`aiohttp.web.Application`.

Wiring only: routes, middlewares, typed state and one cleanup context per resource
(storage, the HTTP client session, then the data collector task), torn down in reverse order.
"""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from lightspeed import __version__, metrics
from lightspeed.api import feedback, health, query
from lightspeed.api.errors import error_middleware, request_id_middleware
from lightspeed.auth import create_auth
from lightspeed.collector import Collector, CollectorStatus, CollectorTask, IngressClient
from lightspeed.config import Config
from lightspeed.llm import LLMRegistry
from lightspeed.metrics import Metrics
from lightspeed.state import AUTH, COLLECTOR_STATUS, CONFIG, HTTP, LLM, METRICS, STORAGE
from lightspeed.storage import StorageBackend, create_backend

__all__ = ["create_app"]

log = logging.getLogger("lightspeed.app")

#: The seed's unprefixed paths are served beside ``/v1``.
API_PREFIXES = ("/v1", "")


def create_app(config: Config, *, storage: StorageBackend | None = None) -> web.Application:
    """Build the service as an unstarted application, mountable with ``add_subapp``.

    ``storage`` replaces the backend the configuration selects (it must not be open yet;
    the application opens and closes it). Raises
    :class:`~lightspeed.storage.UnknownBackendError`,
    :class:`~lightspeed.storage.PluginLoadError` or
    :class:`~lightspeed.storage.StorageConfigError` when the backend cannot be had.
    """
    app = web.Application(
        middlewares=[request_id_middleware, error_middleware],
        client_max_size=config.service.max_request_body_bytes,
    )
    app[CONFIG] = config
    app[STORAGE] = storage if storage is not None else create_backend(config.user_data_collection)
    app[AUTH] = create_auth(config.authentication)
    app[LLM] = LLMRegistry.from_config(config, session=lambda: app[HTTP])

    app[METRICS] = Metrics()
    app[COLLECTOR_STATUS] = CollectorStatus(enabled=config.user_data_collection.data_collector.enabled)

    app.cleanup_ctx.append(_storage_ctx)
    app.cleanup_ctx.append(_http_ctx)
    app.cleanup_ctx.append(_collector_ctx)

    health.add_routes(app)
    metrics.add_routes(app, app[METRICS])
    feedback.add_routes(app, API_PREFIXES)
    query.add_routes(app, API_PREFIXES)
    return app


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    storage = app[STORAGE]
    udc = app[CONFIG].user_data_collection
    await storage.open()
    log.info(
        "storage backend %r open (feedback %s, transcripts %s)",
        storage.name,
        "on" if udc.feedback_enabled else "off",
        "on" if udc.transcripts_enabled else "off",
    )
    try:
        yield
    finally:
        await storage.aclose()
        log.info("storage backend %r closed", storage.name)


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    session = aiohttp.ClientSession(headers={"User-Agent": f"lightspeed/{__version__}"})
    app[HTTP] = session
    try:
        yield
    finally:
        await session.close()


async def _collector_ctx(app: web.Application) -> AsyncIterator[None]:
    udc = app[CONFIG].user_data_collection
    if not udc.data_collector.enabled:
        yield
        return
    collector = Collector(
        storage=app[STORAGE],
        collection=udc,
        uploader=IngressClient(session=app[HTTP], config=udc.data_collector),
        metrics=app[METRICS].collector,
        status=app[COLLECTOR_STATUS],
    )
    task = CollectorTask(collector=collector, shutdown_timeout=udc.data_collector.shutdown_timeout_seconds)
    task.start()
    try:
        yield
    finally:
        await task.stop()
