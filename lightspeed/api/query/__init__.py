"""``POST /v1/query`` and ``/v1/streaming_query``, wire-compatible with the Lightspeed Core Stack.

* :mod:`~lightspeed.api.query.request`: the request body, validated as the upstream does;
* :mod:`~lightspeed.api.query.handlers`: the two handlers, from the request to the answer;
* :mod:`~lightspeed.api.query.sse`: the streaming answer's events on the wire;
* :mod:`~lightspeed.api.query.recording`: storing the history turn and the transcript.
"""

from lightspeed.api.query.handlers import add_routes
from lightspeed.api.query.request import (
    ATTACHMENT_CONTENT_TYPES,
    ATTACHMENT_TYPES,
    DEFAULT_SYSTEM_PROMPT,
    Attachment,
    QueryRequest,
    parse_query_request,
)

__all__ = [
    "ATTACHMENT_CONTENT_TYPES",
    "ATTACHMENT_TYPES",
    "DEFAULT_SYSTEM_PROMPT",
    "Attachment",
    "QueryRequest",
    "add_routes",
    "parse_query_request",
]
