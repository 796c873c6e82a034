"""Errors as the Lightspeed Core Stack's JSON bodies, and the middleware that renders them.

* ``{"detail": {"response": ..., "cause": ...}}`` for every error but validation;
* ``{"detail": [{"type", "loc", "msg", "input"}, ...]}`` with 422 for validation.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
import time
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from lightspeed.api.observe import route_template
from lightspeed.errors import HttpError, LightspeedError
from lightspeed.state import metrics_from, set_request_id

__all__ = ["ApiError", "ValidationFailed", "error_response", "front_middleware", "json_response"]

log = logging.getLogger("lightspeed.api")

REQUEST_ID_HEADER: Final = "X-Request-ID"

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


class ApiError(HttpError):
    """An HTTP error with the upstream's ``{"detail": {"response", "cause"}}`` body."""


class ValidationFailed(LightspeedError):
    """A 422 listing every problem with the request, in pydantic's error shape."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__(f"{len(errors)} validation error(s)")
        self.errors = errors


def json_response(body: Any, *, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    return web.json_response(body, status=status, headers=headers)


class _RequestIds:
    """Request ids unique per process without a syscall each: a random prefix and a counter
    (decision ``ids-01``)."""

    def __init__(self) -> None:
        self.reset()
        os.register_at_fork(after_in_child=self.reset)

    def reset(self) -> None:
        self._prefix = os.urandom(8).hex()
        self._counter = itertools.count(1)

    def next(self) -> str:
        return f"{self._prefix}{next(self._counter):016x}"


_request_ids = _RequestIds()

# FastAPI's bodies for the errors the router itself raises.
_PLAIN_DETAIL: Final = {404: "Not Found", 405: "Method Not Allowed"}


def assign_request_id(request: web.Request) -> str:
    """The request's id (the client's ``X-Request-ID`` when it is sane, else a new one), set on it."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    rid = given if 0 < len(given) <= 128 and given.isascii() and given.isprintable() else _request_ids.next()
    set_request_id(request, rid)
    return rid


def error_response(request: web.Request, rid: str, exc: Exception) -> web.Response:
    """The upstream's JSON error body for ``exc``; re-raises an ``HTTPException`` below 400 (a redirect)."""
    if isinstance(exc, HttpError):
        if exc.status >= 500:
            log.error("request %s %s %s failed: %s", rid, request.method, request.path, exc)
        response = json_response(exc.body(), status=exc.status, headers=exc.headers)
        if exc.headers.get("Connection", "").lower() == "close":
            response.force_close()  # e.g. a request body that cannot be read to its end
        return response
    if isinstance(exc, ValidationFailed):
        return json_response({"detail": exc.errors}, status=422)
    if isinstance(exc, web.HTTPException):
        if exc.status < 400:
            raise exc
        if exc.status == 413:
            body: Any = {
                "detail": {
                    "response": "Request body too large",
                    "cause": exc.text or "The request body exceeds the configured limit.",
                }
            }
        elif exc.status in _PLAIN_DETAIL:
            body = {"detail": _PLAIN_DETAIL[exc.status]}
        else:
            body = {"detail": {"response": exc.reason, "cause": exc.text or exc.reason}}
        headers = {k: v for k, v in exc.headers.items() if k.lower() in ("allow", "retry-after")}
        return json_response(body, status=exc.status, headers=headers)
    if isinstance(exc, ConnectionResetError):
        # The client went away mid-request: nothing to tell it, and nothing for an operator to fix.
        log.debug("request %s %s %s: the client disconnected", rid, request.method, request.path)
        return json_response(
            {"detail": {"response": "Client disconnected", "cause": "The connection was closed by the client."}},
            status=400,
        )
    log.error("request %s %s %s failed with an unexpected error", rid, request.method, request.path, exc_info=exc)
    return json_response(
        {
            "detail": {
                "response": "Internal server error",
                "cause": f"An unexpected error occurred while handling the request (request id {rid}).",
            }
        },
        status=500,
    )


@web.middleware
async def front_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The outermost middleware: gives each request an id (echoed in ``X-Request-ID``), turns
    every exception into the upstream's JSON error body (never a traceback), and counts and
    times the request for ``ls_rest_api_calls_total`` and ``ls_response_duration_seconds``
    with the status the client gets, errors included (499 when the client went away first).

    One middleware rather than three: each is a coroutine frame and an ``await`` more on
    every request (decision ``query-03``).
    """
    started = time.perf_counter()
    rid = assign_request_id(request)
    status = 500
    try:
        try:
            response: web.StreamResponse = await handler(request)
        except asyncio.CancelledError:
            status = 499  # the client went away before the answer (nginx's convention)
            raise
        except Exception as exc:  # noqa: BLE001 - rendered as the upstream's error body
            response = error_response(request, rid, exc)
        status = response.status
        if not response.prepared:
            response.headers[REQUEST_ID_HEADER] = rid
        return response
    except web.HTTPException as exc:  # a redirect, re-raised for aiohttp to send
        status = exc.status
        raise
    finally:
        metrics_from(request).lcs.observe_request(route_template(request), status, time.perf_counter() - started)
