"""``service``: where and how the HTTP service listens, and its checks."""

from __future__ import annotations

import math
from typing import Final

import attrs

__all__ = ["LOG_LEVELS", "ServiceConfig", "service_problems"]

LOG_LEVELS: Final = ("debug", "info", "warning", "error", "critical")


@attrs.frozen(kw_only=True)
class ServiceConfig:
    """``service``: where and how the HTTP service listens."""

    host: str = "localhost"
    port: int = 8080
    log_level: str = "info"
    workers: int = 1
    access_log: bool = True
    #: Largest accepted request body, in bytes; larger bodies get 413.
    max_request_body_bytes: int = 1024 * 1024
    #: Largest image attachment of a query, in bytes once decoded (the upstream's limit, 100 MiB);
    #: a larger one is a 422. The body limit above applies first.
    max_image_attachment_bytes: int = 100 * 1024 * 1024
    #: Open client connections at most (lowered to fit the open-files limit); beyond it the oldest
    #: idle connection is closed, or, when none is idle, the newcomer gets 503.
    max_connections: int = 10000
    #: An idle connection (between requests, or before its first) is closed after this many seconds.
    keepalive_timeout_seconds: float = 15
    #: A client that reads nothing of an answer waiting for it this long is cut off (a stream's
    #: truncated transcript is stored).
    write_timeout_seconds: float = 30
    #: Bytes of an answer buffered per connection: the kernel's send buffer and asyncio's, each.
    write_buffer_bytes: int = 256 * 1024


def service_problems(svc: ServiceConfig) -> list[str]:
    """Every problem of the ``service`` section."""
    problems: list[str] = []
    add = problems.append
    if not 1 <= svc.port <= 65535:
        add(f"service.port: must be between 1 and 65535, got {svc.port}")
    if svc.log_level.lower() not in LOG_LEVELS:
        add(f"service.log_level: must be one of {', '.join(LOG_LEVELS)}, got {svc.log_level!r}")
    if svc.workers < 1:
        add(f"service.workers: must be at least 1, got {svc.workers}")
    if svc.max_request_body_bytes < 1024:
        add(f"service.max_request_body_bytes: must be at least 1024, got {svc.max_request_body_bytes}")
    if svc.max_image_attachment_bytes < 0:
        add(f"service.max_image_attachment_bytes: must be 0 or more, got {svc.max_image_attachment_bytes}")
    if not svc.host:
        add("service.host: must not be empty")
    if svc.max_connections < 1:
        add(f"service.max_connections: must be at least 1, got {svc.max_connections}")
    if not (svc.write_timeout_seconds > 0 and math.isfinite(svc.write_timeout_seconds)):
        add(f"service.write_timeout_seconds: must be a finite number greater than 0, got {svc.write_timeout_seconds}")
    if not 1024 <= svc.write_buffer_bytes <= 64 * 1024 * 1024:
        add(f"service.write_buffer_bytes: must be from 1024 to 67108864, got {svc.write_buffer_bytes}")
    keepalive = svc.keepalive_timeout_seconds
    if not (keepalive > 0 and math.isfinite(keepalive)):
        add(f"service.keepalive_timeout_seconds: must be a finite number greater than 0, got {keepalive}")
    return problems
