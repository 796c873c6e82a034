"""Running the application for ``lightspeed serve``: file limits, a connection cap, the event loop.

* :func:`raise_open_files_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard limit at start
  (container runtimes often leave the soft limit at 1,024).
* :class:`ConnectionGate` caps the open client connections at ``service.max_connections``
  (and below the open-files limit). A connection beyond the cap first makes room by closing
  the oldest *idle* connection (one with no request in progress: a keep-alive connection
  between requests, or one that has not finished sending its request); when every connection
  is busy, the newcomer gets ``503`` and is closed. So a flood of idle connections can neither
  exhaust the file descriptors nor starve ``/liveness`` and ``/readiness``.
* :func:`run` serves an application until SIGINT/SIGTERM, as :func:`aiohttp.web.run_app`
  does, with the gate in front of aiohttp's protocol and ``service.keepalive_timeout_seconds``
  as the idle timeout (aiohttp's default is an hour).
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import resource
import time
from collections.abc import Callable
from typing import Any, Final

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

__all__ = ["ConnectionGate", "connection_limit", "raise_open_files_limit", "run"]

log = logging.getLogger("lightspeed.serving")

#: File descriptors kept for everything but client connections (storage, the collector, logs...).
FD_RESERVE: Final = 64
_REFUSAL_BODY: Final = (
    b'{"detail": {"response": "Service Unavailable", "cause": "Too many open connections'
    b' (service.max_connections); try again shortly."}}'
)
_REFUSAL: Final = (
    b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nRetry-After: 1\r\n"
    b"Connection: close\r\nContent-Length: %d\r\n\r\n%s" % (len(_REFUSAL_BODY), _REFUSAL_BODY)
)
_WARN_EVERY: Final = 10.0


def raise_open_files_limit() -> tuple[int, int]:
    """Raise the soft open-files limit to the hard one; returns (soft before, soft now)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    target = hard if hard != resource.RLIM_INFINITY else max(soft, 1 << 20)
    if soft == resource.RLIM_INFINITY or soft >= target:
        return soft, soft
    try:
        resource.setrlimit(resource.RLIMIT_NOFILE, (target, hard))
    except (ValueError, OSError) as exc:
        log.warning("cannot raise the open-files limit from %d to %d: %s", soft, target, exc)
        return soft, soft
    return soft, target


def connection_limit(max_connections: int) -> int:
    """``max_connections``, lowered to what the open-files limit allows: each client connection
    may need a second descriptor (its connection to the LLM), and :data:`FD_RESERVE` stay free."""
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        return max_connections
    return max(1, min(max_connections, (soft - FD_RESERVE) // 2))


class _Refused(asyncio.Protocol):
    """Answers 503 and closes: the cap is reached and no connection is idle."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        transport.write(_REFUSAL)
        transport.close()


class _Tracked(asyncio.Protocol):
    """aiohttp's protocol for one connection, forwarded to, with the gate told when it ends."""

    __slots__ = ("doomed", "gate", "inner", "transport")

    def __init__(self, gate: ConnectionGate, inner: Any) -> None:
        self.gate = gate
        self.inner = inner
        self.transport: asyncio.BaseTransport | None = None
        #: Evicted before it was made: closed as soon as it is.
        self.doomed = False

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport
        self.inner.connection_made(transport)
        if self.doomed:
            transport.close()

    def close(self) -> None:
        if self.transport is None:
            self.doomed = True
        else:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.gate._open.pop(self, None)
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self.inner.eof_received()
        return result

    def pause_writing(self) -> None:
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        self.inner.resume_writing()

    @property
    def idle(self) -> bool:
        # aiohttp's handler says whether a request is being handled; when it cannot tell, busy.
        return not getattr(self.inner, "_request_in_progress", True)


class ConnectionGate:
    """The protocol factory of the listening socket: at most ``limit`` open client connections."""

    def __init__(self, factory: Callable[[], Any], *, limit: int) -> None:
        self.factory = factory
        self.limit = limit
        self._open: collections.OrderedDict[_Tracked, None] = collections.OrderedDict()
        self.evicted = 0
        self.refused = 0
        self._warned = 0.0

    @property
    def open(self) -> int:
        return len(self._open)

    def __call__(self) -> asyncio.Protocol:
        if len(self._open) >= self.limit and not self._evict_one():
            self.refused += 1
            self._warn("all %d connections are busy: refusing new ones with 503", self.limit)
            return _Refused()
        # Counted from now: the event loop accepts a batch of connections before any is "made".
        conn = _Tracked(self, self.factory())
        self._open[conn] = None
        return conn

    def _evict_one(self) -> bool:
        for conn in self._open:  # oldest first (one accepted but not yet made counts as idle)
            if conn.idle:
                del self._open[conn]
                self.evicted += 1
                self._warn("%d connections open (service.max_connections): closing the oldest idle ones", self.limit)
                conn.close()
                return True
        return False

    def _warn(self, message: str, *args: Any) -> None:
        now = time.monotonic()
        if now - self._warned >= _WARN_EVERY:
            self._warned = now
            log.warning(message + " (evicted %d, refused %d so far)", *args, self.evicted, self.refused)


class GatedSite(web.BaseSite):
    """A TCP site whose connections pass a :class:`ConnectionGate`."""

    def __init__(self, runner: web.BaseRunner, host: str, port: int, *, limit: int, reuse_port: bool) -> None:
        super().__init__(runner)
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        assert runner.server is not None
        self.gate = ConnectionGate(runner.server, limit=limit)

    @property
    def name(self) -> str:
        return f"http://{self.host}:{self.port}"

    async def start(self) -> None:
        await super().start()
        loop = asyncio.get_running_loop()
        self._server = await loop.create_server(
            self.gate, self.host, self.port, reuse_port=self.reuse_port or None, backlog=self._backlog
        )
        if self.port == 0 and self._server.sockets:
            self.port = self._server.sockets[0].getsockname()[1]


async def _serve(
    app: web.Application,
    *,
    host: str,
    port: int,
    reuse_port: bool,
    max_connections: int,
    keepalive_timeout: float,
    shutdown_timeout: float,
    access_log: logging.Logger | None,
    access_log_class: type[AbstractAccessLogger],
) -> None:
    runner = web.AppRunner(
        app,
        handle_signals=True,
        access_log=access_log,
        access_log_class=access_log_class,
        keepalive_timeout=keepalive_timeout,
        shutdown_timeout=shutdown_timeout,
    )
    await runner.setup()
    try:
        limit = connection_limit(max_connections)
        site = GatedSite(runner, host, port, limit=limit, reuse_port=reuse_port)
        await site.start()
        log.info(
            "listening on http://%s:%d: at most %d client connections%s, idle ones closed after %g s",
            host,
            site.port,
            limit,
            ""
            if limit == max_connections
            else f" (service.max_connections {max_connections}, lowered to fit the open-files limit)",
            keepalive_timeout,
        )
        await asyncio.Event().wait()  # until SIGINT/SIGTERM raise GracefulExit
    finally:
        await runner.cleanup()


def run(app: web.Application, **options: Any) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then shut down gracefully (see :func:`_serve` for options).

    Exceptions raised while starting (the storage cannot be opened...) propagate.
    """
    loop = asyncio.new_event_loop()
    main = loop.create_task(_serve(app, **options))
    try:
        asyncio.set_event_loop(loop)
        loop.run_until_complete(main)
    except (web.GracefulExit, KeyboardInterrupt):
        pass
    finally:
        try:
            if not main.done():
                main.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    loop.run_until_complete(main)
        finally:
            rest = [t for t in asyncio.all_tasks(loop) if not t.done()]
            for task in rest:
                task.cancel()
            if rest:
                loop.run_until_complete(asyncio.gather(*rest, return_exceptions=True))
            loop.run_until_complete(loop.shutdown_asyncgens())
            loop.run_until_complete(loop.shutdown_default_executor())
            asyncio.set_event_loop(None)
            loop.close()
