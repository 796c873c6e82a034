"""Running the application for ``lightspeed serve``: file limits, a connection cap, the event loop.

* :func:`raise_open_files_limit` lifts the soft ``RLIMIT_NOFILE`` to the hard limit at start
  (container runtimes often leave the soft limit at 1,024).
* :func:`limit_malloc_arenas` caps glibc's malloc arenas at two per process (decision
  ops-01-malloc-arenas): with one arena per thread the store's threads left the resident
  memory creeping up for the first half hour.
* :class:`ConnectionGate` caps the open client connections at ``service.max_connections``
  (and below the open-files limit). A connection beyond the cap first makes room by closing
  the oldest *idle* connection (one with no request in progress: a keep-alive connection
  between requests, or one that has not finished sending its request); when every connection
  is busy, the newcomer gets ``503`` and is closed. So a flood of idle connections can neither
  exhaust the file descriptors nor starve ``/liveness`` and ``/readiness``.
* Every connection's write buffers are bounded (``service.write_buffer_bytes``, for the
  kernel's send buffer and for asyncio's above it; beyond them the writer waits), and a
  connection whose client reads nothing for ``service.write_timeout_seconds`` while data
  waits is aborted. A stalled reader of a stream (or of a large answer) thus holds its memory
  that long at most: the handler's write fails as if the client had gone, a stream's
  truncated transcript is stored, and everything is freed.
* :func:`run` serves an application until SIGINT/SIGTERM, as :func:`aiohttp.web.run_app`
  does, with the gate in front of aiohttp's protocol and ``service.keepalive_timeout_seconds``
  as the idle timeout (aiohttp's default is an hour), on uvloop's event loop when uvloop is
  installed (a dependency on Linux and macOS; decision ``query-02``), else on asyncio's.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import ctypes
import gc
import logging
import os
import resource
import socket
import time
from collections.abc import Callable
from typing import Any, Final, cast

from aiohttp import web
from aiohttp.abc import AbstractAccessLogger

__all__ = [
    "ConnectionGate",
    "connection_limit",
    "limit_malloc_arenas",
    "new_event_loop",
    "raise_open_files_limit",
    "run",
]

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


#: glibc's ``M_ARENA_MAX`` parameter of ``mallopt`` (``<malloc.h>``).
_M_ARENA_MAX: Final = -8
#: The malloc arenas a serving process keeps (glibc's default is eight per core).
MALLOC_ARENAS: Final = 2


def limit_malloc_arenas(arenas: int = MALLOC_ARENAS) -> bool:
    """Cap glibc's malloc arenas at ``arenas``, before the process starts its threads.

    glibc gives threads their own arenas, up to eight per core, and memory freed in one is
    rarely returned to the system, so a process with many mostly idle threads (the store's
    lanes) grows its resident memory for a long time. Returns whether the cap was set: not
    when ``MALLOC_ARENA_MAX`` is in the environment (glibc applied the operator's value
    already) nor with another C library.
    """
    if "MALLOC_ARENA_MAX" in os.environ:
        return False
    try:
        libc = ctypes.CDLL(None)
        libc.gnu_get_libc_version  # noqa: B018 - present in glibc only
        mallopt = libc.mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes, mallopt.restype = [ctypes.c_int, ctypes.c_int], ctypes.c_int
    return bool(mallopt(_M_ARENA_MAX, arenas))


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
        stream = cast(asyncio.Transport, transport)  # a TCP transport (uvloop's do not subclass asyncio's)
        stream.write(_REFUSAL)
        stream.close()


class _Tracked(asyncio.Protocol):
    """aiohttp's protocol for one connection, forwarded to, with the gate told when it ends."""

    __slots__ = ("doomed", "gate", "inner", "stall", "transport")

    def __init__(self, gate: ConnectionGate, inner: Any) -> None:
        self.gate = gate
        self.inner = inner
        #: A TCP transport, asyncio's or uvloop's (which do not subclass asyncio's classes).
        self.transport: asyncio.Transport | None = None
        #: Evicted before it was made: closed as soon as it is.
        self.doomed = False
        #: While the write buffer is full: the abort due when the client reads nothing.
        self.stall: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = stream = cast(asyncio.Transport, transport)
        # Bounded twice: the kernel's send buffer (no autotuning to megabytes per connection)
        # and the event loop's buffer above it (the handler waits beyond it).
        sock = stream.get_extra_info("socket")
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, self.gate.write_buffer_bytes)
        stream.set_write_buffer_limits(high=self.gate.write_buffer_bytes)
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
        if self.stall is not None:
            self.stall.cancel()
        self.inner.connection_lost(exc)

    def data_received(self, data: bytes) -> None:
        self.inner.data_received(data)

    def eof_received(self) -> bool | None:
        result: bool | None = self.inner.eof_received()
        return result

    def pause_writing(self) -> None:
        # The buffer is full: the client has this long to read some of it.
        self.stall = asyncio.get_running_loop().call_later(self.gate.write_timeout, self._stalled)
        self.inner.pause_writing()

    def resume_writing(self) -> None:
        if self.stall is not None:
            self.stall.cancel()
            self.stall = None
        self.inner.resume_writing()

    def _stalled(self) -> None:
        self.stall = None
        self.gate.stalled += 1
        peer = self.transport.get_extra_info("peername") if self.transport is not None else None
        log.warning(
            "connection from %s read nothing for %g s (service.write_timeout_seconds): aborted",
            peer[0] if isinstance(peer, tuple) else "?",
            self.gate.write_timeout,
        )
        if self.transport is not None:
            self.transport.abort()  # the handler's pending write fails as if the client had gone

    @property
    def idle(self) -> bool:
        # aiohttp's handler says whether a request is being handled; when it cannot tell, busy.
        return not getattr(self.inner, "_request_in_progress", True)


class ConnectionGate:
    """The protocol factory of the listening socket: at most ``limit`` open client connections."""

    def __init__(
        self,
        factory: Callable[[], Any],
        *,
        limit: int,
        write_timeout: float = 30.0,
        write_buffer_bytes: int = 256 * 1024,
    ) -> None:
        self.factory = factory
        self.limit = limit
        self.write_timeout = write_timeout
        self.write_buffer_bytes = write_buffer_bytes
        self.stalled = 0
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

    def __init__(
        self, runner: web.BaseRunner, host: str, port: int, *, gate: Callable[[Any], ConnectionGate], reuse_port: bool
    ) -> None:
        super().__init__(runner)
        self.host = host
        self.port = port
        self.reuse_port = reuse_port
        assert runner.server is not None
        self.gate = gate(runner.server)

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
    write_timeout: float,
    write_buffer_bytes: int,
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
    # What starting made (modules, configuration, routes, the OpenAPI document, the store) lives
    # as long as the process: frozen out of the cyclic collector's sight, so that a full
    # collection under load walks what requests made, not ~25 ms of start-up objects with every
    # request waiting (docs/decisions/serve-01-gc-freeze-after-start.md).
    gc.collect()
    gc.freeze()
    try:
        limit = connection_limit(max_connections)
        site = GatedSite(
            runner,
            host,
            port,
            reuse_port=reuse_port,
            gate=lambda server: ConnectionGate(
                server, limit=limit, write_timeout=write_timeout, write_buffer_bytes=write_buffer_bytes
            ),
        )
        await site.start()
        log.info(
            "listening on http://%s:%d (%s event loop): at most %d client connections%s, idle ones closed"
            " after %g s, a client that reads nothing for %g s cut off",
            host,
            site.port,
            type(asyncio.get_running_loop()).__module__.partition(".")[0],
            limit,
            ""
            if limit == max_connections
            else f" (service.max_connections {max_connections}, lowered to fit the open-files limit)",
            keepalive_timeout,
            write_timeout,
        )
        await asyncio.Event().wait()  # until SIGINT/SIGTERM raise GracefulExit
    finally:
        await runner.cleanup()


def new_event_loop() -> asyncio.AbstractEventLoop:
    """uvloop's event loop when uvloop is installed, else asyncio's (decision ``query-02``:
    the same queries for a sixth less CPU)."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


def run(app: web.Application, **options: Any) -> None:
    """Serve ``app`` until SIGINT or SIGTERM, then shut down gracefully (see :func:`_serve` for options).

    Exceptions raised while starting (the storage cannot be opened...) propagate.
    """
    loop = new_event_loop()
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
