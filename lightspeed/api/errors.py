"""Errors as the Lightspeed Core Stack's JSON bodies, and the middleware that renders them.

* ``{"detail": {"response": ..., "cause": ...}}`` for every error but validation;
* ``{"detail": [{"type", "loc", "msg", "input"}, ...]}`` with 422 for validation.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, Final

from aiohttp import web

from lightspeed.errors import HttpError, LightspeedError
from lightspeed.state import request_id_from, set_request_id

__all__ = ["ApiError", "ValidationFailed", "error_middleware", "request_id_middleware", "json_response"]

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


@web.middleware
async def request_id_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give each request an id (the client's ``X-Request-ID`` when it is sane) and echo it back."""
    given = request.headers.get(REQUEST_ID_HEADER, "")
    rid = given if 0 < len(given) <= 128 and given.isascii() and given.isprintable() else _request_ids.next()
    set_request_id(request, rid)
    response = await handler(request)
    if not response.prepared:
        response.headers[REQUEST_ID_HEADER] = rid
    return response


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn every exception into the upstream's JSON error bodies; never leak a traceback."""
    rid = request_id_from(request)
    try:
        return await handler(request)
    except HttpError as exc:
        if exc.status >= 500:
            log.error("request %s %s %s failed: %s", rid, request.method, request.path, exc)
        response = json_response(exc.body(), status=exc.status, headers=exc.headers)
        if exc.headers.get("Connection", "").lower() == "close":
            response.force_close()  # e.g. a request body that cannot be read to its end
        return response
    except ValidationFailed as exc:
        return json_response({"detail": exc.errors}, status=422)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
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
    except asyncio.CancelledError:
        raise
    except ConnectionResetError:
        # The client went away mid-request: nothing to tell it, and nothing for an operator to fix.
        log.debug("request %s %s %s: the client disconnected", rid, request.method, request.path)
        return json_response(
            {"detail": {"response": "Client disconnected", "cause": "The connection was closed by the client."}},
            status=400,
        )
    except Exception:
        log.exception("request %s %s %s failed with an unexpected error", rid, request.method, request.path)
        return json_response(
            {
                "detail": {
                    "response": "Internal server error",
                    "cause": f"An unexpected error occurred while handling the request (request id {rid}).",
                }
            },
            status=500,
        )
