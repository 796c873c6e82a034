"""``create_app(config)``: the fully wired, unstarted :class:`aiohttp.web.Application`.

Wiring only: routes, middlewares, typed state (:mod:`lightspeed.state`) and one cleanup
context per resource, every one appended here, in this order (torn down in reverse):

1. ``storage``: opens the backend, closes it last;
2. ``records``: at shutdown, waits for the query records still being stored (by handlers
   the shutdown cancelled, or streams whose client went away), while the backend is open;
3. ``http``: the client session (LLM providers and the collector's uploads);
4. ``llm discovery``: asks the providers that list their models (a Llama Stack), in the background;
5. ``collector``: the data collector's task (one final bounded collection when stopped);
6. ``streams``: stops the poller that looks for interrupts of this worker's streams;
7. ``auth``: says what access control is in force; closes the module's HTTP sessions first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator

import aiohttp
from aiohttp import web

from lightspeed import __version__, metrics
from lightspeed.api import authorized, conversations, feedback, health, interrupt, models, openapi, query
from lightspeed.api.access import auth_middleware
from lightspeed.api.errors import front_middleware
from lightspeed.api.interrupt import StreamRegistry
from lightspeed.api.query.recording import PendingStores
from lightspeed.auth import AuthModule, create_auth
from lightspeed.auth.authorization import Authorizer, authorization_warnings
from lightspeed.collector import Collector, CollectorStatus, CollectorTask, IngressClient
from lightspeed.collector.credentials import create_provider
from lightspeed.config import Config
from lightspeed.llm import LLMRegistry
from lightspeed.metrics import Metrics
from lightspeed.redaction import Redactor
from lightspeed.state import (
    auth_from,
    collector_status_from,
    config_from,
    http_from,
    init_state,
    llm_from,
    metrics_from,
    pending_stores_from,
    set_http,
    set_streams,
    storage_from,
    streams_from,
)
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
    auth = create_auth(config.authentication)
    app = web.Application(
        middlewares=[
            front_middleware,
            auth_middleware(auth, Authorizer.from_config(config), config.authentication),
        ],
        client_max_size=config.service.max_request_body_bytes,
    )
    backend = storage if storage is not None else create_backend(config.user_data_collection)
    app_metrics = Metrics()
    llm = LLMRegistry.from_config(config, session=lambda: http_from(app))
    app_metrics.expose_provider_models(llm.models)
    init_state(
        app,
        config=config,
        storage=backend,
        auth=auth,
        llm=llm,
        metrics=app_metrics,
        collector_status=CollectorStatus(enabled=config.user_data_collection.data_collector.enabled),
        redactor=Redactor(config.query_filters),
        pending_stores=PendingStores(),
    )

    app.cleanup_ctx.append(_storage_ctx)
    app.cleanup_ctx.append(_records_ctx)
    app.cleanup_ctx.append(_http_ctx)
    app.cleanup_ctx.append(_llm_discovery_ctx)
    app.cleanup_ctx.append(_collector_ctx)
    set_streams(app, StreamRegistry(backend))
    app.cleanup_ctx.append(_streams_ctx)
    app.cleanup_ctx.append(_auth_ctx)

    health.add_routes(app)
    metrics.add_routes(app, app_metrics)
    openapi.add_routes(app)
    models.add_routes(app)
    feedback.add_routes(app, API_PREFIXES)
    query.add_routes(app, API_PREFIXES)
    conversations.add_routes(app)
    interrupt.add_routes(app)
    authorized.add_routes(app)
    return app


async def _storage_ctx(app: web.Application) -> AsyncIterator[None]:
    storage = storage_from(app)
    udc = config_from(app).user_data_collection
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


async def _streams_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    await streams_from(app).aclose()


async def _records_ctx(app: web.Application) -> AsyncIterator[None]:
    yield
    pending = pending_stores_from(app)
    if pending.pending:
        log.info("storing the records of %d answer(s) before shutdown", pending.pending)
    await pending.drain()


async def _http_ctx(app: web.Application) -> AsyncIterator[None]:
    # No cap on pooled connections (aiohttp's default is 100 for all hosts): each client
    # connection has at most one call to the LLM under way, and service.max_connections
    # caps those; with a cap of 100, the 101st concurrent stream waited for a free slot.
    session = aiohttp.ClientSession(
        headers={"User-Agent": f"lightspeed/{__version__}"}, connector=aiohttp.TCPConnector(limit=0)
    )
    set_http(app, session)
    try:
        yield
    finally:
        await session.close()


async def _llm_discovery_ctx(app: web.Application) -> AsyncIterator[None]:
    """Ask the providers that list their models (a Llama Stack) in the background: start-up
    never waits for them, and a query naming a model not known yet asks again."""
    registry = llm_from(app)
    if not registry.discovers:
        yield
        return
    task = asyncio.create_task(registry.discover())
    try:
        yield
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def _auth_ctx(app: web.Application) -> AsyncIterator[None]:
    for warning in authorization_warnings(config_from(app)):
        log.warning("%s", warning)
    module: AuthModule = auth_from(app)
    log.info("authentication module %r", module.name)
    try:
        yield
    finally:
        await module.aclose()


async def _collector_ctx(app: web.Application) -> AsyncIterator[None]:
    udc = config_from(app).user_data_collection
    if not udc.data_collector.enabled:
        yield
        return
    session = http_from(app)
    provider = create_provider(udc.data_collector, session=session, metrics=metrics_from(app).collector)
    status = collector_status_from(app)
    status.credentials = provider.status
    collector = Collector(
        storage=storage_from(app),
        collection=udc,
        uploader=IngressClient(session=session, config=udc.data_collector, credentials=provider),
        metrics=metrics_from(app).collector,
        status=status,
    )
    task = CollectorTask(collector=collector, shutdown_timeout=udc.data_collector.shutdown_timeout_seconds)
    task.start()
    try:
        yield
    finally:
        try:
            await task.stop()
        finally:
            await provider.aclose()
