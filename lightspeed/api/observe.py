"""The route label of the Lightspeed Core Stack's ``ls_rest_api_calls_total`` and
``ls_response_duration_seconds``, which ``api.errors.front_middleware`` counts and times. A request is labelled
with its route's template (``/v1/conversations/{conversation_id}``), or ``<unmatched>``
when no route matched: never the raw URL, so label values stay bounded whatever clients send.
"""

from __future__ import annotations

from aiohttp import web

from lightspeed.metrics import UNMATCHED_PATH

__all__ = ["route_template"]


def route_template(request: web.Request) -> str:
    """The template of the route that matched ``request``, or :data:`UNMATCHED_PATH`."""
    resource = request.match_info.route.resource  # None for the router's own 404 and 405
    return resource.canonical if resource is not None else UNMATCHED_PATH
