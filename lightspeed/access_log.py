"""The access log of ``lightspeed serve``: one line per request, no raw user id, nothing forged.

A line reads::

    127.0.0.1 "GET /v1/conversations?user_id=sha256:9f86d0... HTTP/1.1" 200 1234 0.004s rid=ab12... "curl/8.5"

The ``user_id`` query parameter (the ``noop`` modules' way to name a user) is replaced by the
SHA-256 of its value, as transcripts store it, so an operator can still match a line to a
user's transcripts without the log holding the id. Every value taken from the request (path,
query, user agent) is escaped for control characters and shortened, so a request can neither
forge a second line nor flood the log.
"""

from __future__ import annotations

import logging
from typing import Final
from urllib.parse import unquote_plus

from aiohttp.abc import AbstractAccessLogger
from aiohttp.web_request import BaseRequest
from aiohttp.web_response import StreamResponse

from lightspeed.masking import escape_controls
from lightspeed.records import hash_user_id
from lightspeed.state import request_id_from

__all__ = ["AccessLogger", "loggable_target"]

#: Query parameters whose values are user ids: logged as their SHA-256.
USER_ID_PARAMETERS: Final = frozenset({"user_id"})
_MAX_TARGET: Final = 1024
_MAX_AGENT: Final = 256


def loggable_target(raw_path: str, raw_query: str) -> str:
    """The request target as the access log shows it: user ids hashed, controls escaped, shortened."""
    if raw_query:
        pairs = []
        for pair in raw_query.split("&"):
            key, eq, value = pair.partition("=")
            if eq and unquote_plus(key) in USER_ID_PARAMETERS:
                value = "sha256:" + hash_user_id(unquote_plus(value))
            pairs.append(f"{key}{eq}{value}")
        raw_path = f"{raw_path}?{'&'.join(pairs)}"
    return escape_controls(raw_path, limit=_MAX_TARGET)


class AccessLogger(AbstractAccessLogger):
    """aiohttp's access logger for ``lightspeed serve`` (see the module documentation)."""

    def log(self, request: BaseRequest, response: StreamResponse, time: float) -> None:
        url = request.rel_url
        target = loggable_target(url.raw_path, url.raw_query_string)
        version = f"HTTP/{request.version.major}.{request.version.minor}"
        method = escape_controls(request.method, limit=32)
        agent = escape_controls(request.headers.get("User-Agent", "-"), limit=_MAX_AGENT).replace('"', '\\"')
        rid = escape_controls(request_id_from(request), limit=128)  # type: ignore[arg-type]
        self.logger.info(
            '%s "%s %s %s" %d %d %.3fs rid=%s "%s"',
            request.remote or "-",
            method,
            target.replace('"', "%22"),
            version,
            response.status,
            response.body_length,
            time,
            rid,
            agent,
        )

    @property
    def enabled(self) -> bool:
        return self.logger.isEnabledFor(logging.INFO)
