"""The middleware that counts and times every request for the Lightspeed Core Stack's
``ls_rest_api_calls_total`` and ``ls_response_duration_seconds``.

Outermost, so it sees the status the client gets, errors included. A request is labelled
with its route's template (``/v1/conversations/{conversation_id}``), or ``<unmatched>``
when no route matched: never the raw URL, so label values stay bounded whatever clients send.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable

from aiohttp import web

from lightspeed.metrics import UNMATCHED_PATH
from lightspeed.state import metrics_from

__all__ = ["metrics_middleware", "route_template"]

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]


def route_template(request: web.Request) -> str:
    """The template of the route that matched ``request``, or :data:`UNMATCHED_PATH`."""
    resource = request.match_info.route.resource  # None for the router's own 404 and 405
    return resource.canonical if resource is not None else UNMATCHED_PATH


@web.middleware
async def metrics_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    started = time.perf_counter()
    status = 500
    try:
        response = await handler(request)
        status = response.status
        return response
    except web.HTTPException as exc:
        status = exc.status
        raise
    except asyncio.CancelledError:
        status = 499  # the client went away before the answer (nginx's convention)
        raise
    finally:
        metrics_from(request).lcs.observe_request(route_template(request), status, time.perf_counter() - started)
