"""The processes of ``lightspeed serve``: one worker in this process, or ``service.workers``
worker processes sharing one port (SO_REUSEPORT) under a supervisor that restarts a crashed
worker and stops them all together; and what every command shares (its log, its errors)."""

from __future__ import annotations

import logging
import multiprocessing
import multiprocessing.connection
import os
import signal
import sys
import time
from types import FrameType
from typing import Final

from lightspeed.config import Config, config_secrets
from lightspeed.errors import LightspeedError

__all__ = ["EXIT_CONFIG", "report", "run_worker", "setup_logging", "supervise"]

log = logging.getLogger("lightspeed")

#: The exit code of a configuration problem (a bad file, a port taken, a backend that cannot open).
EXIT_CONFIG: Final = 2


def setup_logging(config: Config) -> None:
    """The service's log (:mod:`lightspeed.logs`), masking every secret ``config`` holds."""
    from lightspeed.logs import setup_logging as setup

    setup(config.service.log_level, secrets=config_secrets(config))


def report(exc: LightspeedError) -> None:
    """One line on stderr, never a traceback."""
    print(f"lightspeed: error: {exc}", file=sys.stderr)


def run_worker(config: Config, *, reuse_port: bool) -> int:
    """Serve ``config`` in this process until SIGINT/SIGTERM; the exit code."""
    from lightspeed.access_log import AccessLogger
    from lightspeed.app import create_app
    from lightspeed.serving import limit_malloc_arenas, run

    limit_malloc_arenas()  # every serving process comes here before its store starts threads
    svc = config.service
    try:
        run(
            create_app(config),
            host=svc.host,
            port=svc.port,
            reuse_port=reuse_port,
            max_connections=svc.max_connections,
            keepalive_timeout=svc.keepalive_timeout_seconds,
            write_timeout=svc.write_timeout_seconds,
            write_buffer_bytes=svc.write_buffer_bytes,
            shutdown_timeout=30,
            access_log=logging.getLogger("aiohttp.access") if svc.access_log else None,
            access_log_class=AccessLogger,
        )
    except LightspeedError as exc:  # the storage cannot be opened, ...: say so, without a traceback
        report(exc)
        return EXIT_CONFIG
    return 0


def _worker_main(config: Config) -> None:
    setup_logging(config)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the supervisor turns Ctrl-C into SIGTERM
    try:
        code = run_worker(config, reuse_port=True)
    except OSError as exc:
        log.error("worker cannot listen on %s:%d: %s", config.service.host, config.service.port, exc)
        raise SystemExit(EXIT_CONFIG) from None
    if code:
        raise SystemExit(code)


def supervise(config: Config) -> int:
    """Run ``service.workers`` processes on one port (SO_REUSEPORT); restart crashed ones;
    on SIGTERM/SIGINT stop them all gracefully."""
    ctx = multiprocessing.get_context("spawn")
    n = config.service.workers
    stopping = False

    def on_signal(signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        if not stopping:
            log.info("received %s: stopping %d worker(s)", signal.Signals(signum).name, n)
        stopping = True

    signal.signal(signal.SIGTERM, on_signal)
    signal.signal(signal.SIGINT, on_signal)

    def start() -> multiprocessing.process.BaseProcess:
        p = ctx.Process(target=_worker_main, args=(config,), name="lightspeed-worker", daemon=False)
        p.start()
        return p

    workers = [start() for _ in range(n)]
    log.info("started %d workers: pids %s", n, ", ".join(str(p.pid) for p in workers))
    restarts: list[float] = []
    exit_code = 0
    while not stopping:
        multiprocessing.connection.wait([p.sentinel for p in workers], timeout=0.5)
        for i, p in enumerate(workers):
            if stopping or p.is_alive():
                continue
            log.error("worker pid %s exited with code %s", p.pid, p.exitcode)
            if p.exitcode == EXIT_CONFIG:
                stopping, exit_code = True, EXIT_CONFIG
                break
            now = time.monotonic()
            restarts = [t for t in restarts if now - t < 60] + [now]
            if len(restarts) > 5 * n:
                log.error("workers keep crashing (%d restarts in a minute): giving up", len(restarts))
                stopping, exit_code = True, 1
                break
            workers[i] = start()
            log.info("restarted worker: pid %s", workers[i].pid)
    for p in workers:
        if p.is_alive() and p.pid is not None:
            os.kill(p.pid, signal.SIGTERM)
    deadline = time.monotonic() + 40
    for p in workers:
        p.join(max(0.0, deadline - time.monotonic()))
        if p.is_alive():
            log.error("worker pid %s did not stop in time: killing it", p.pid)
            p.kill()
            p.join()
    log.info("all workers stopped")
    return exit_code
