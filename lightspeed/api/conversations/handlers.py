"""The handlers of ``/v1/conversations`` and ``/v2/conversations`` and their routes."""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web

from lightspeed.actions import Action
from lightspeed.api.common import authenticate
from lightspeed.api.conversations.bodies import PAGE_PARAMETERS, chat_turn, deleted_body, item, page_params
from lightspeed.api.conversations.lookup import (
    accessible,
    conversation_id_from_path,
    find,
    forbidden,
    granted,
    not_found,
    storage_error,
)
from lightspeed.api.errors import json_response
from lightspeed.api.openapi import operation
from lightspeed.api.validation import BodyChecker, read_json_body
from lightspeed.auth.routes import requires
from lightspeed.records import hash_user_id
from lightspeed.state import config_from, storage_from
from lightspeed.storage import StorageError

__all__ = ["ROUTE_ACTIONS", "add_routes"]

log = logging.getLogger("lightspeed.api.conversations")

#: The upstream's bound on a topic summary.
MAX_TOPIC_SUMMARY_CHARS: Final = 1000
#: Every turn of a conversation, for ``GET /{id}`` (a conversation is never near this long).
_ALL_TURNS: Final = 1_000_000


async def _list(request: web.Request, version: int) -> web.Response:
    user = await authenticate(request)
    limit, offset = page_params(request)
    owner = None if granted(request, Action.LIST_OTHERS_CONVERSATIONS, version) else hash_user_id(user.user_id)
    try:
        page = await storage_from(request).list_conversations(owner, limit=limit, offset=offset)
    except StorageError as exc:
        raise storage_error(exc) from exc
    return json_response(
        {"conversations": [item(info, version) for info in page.conversations]},
        headers={"X-Total-Count": str(page.total)},
    )


async def _get(request: web.Request, version: int) -> web.Response:
    user = await authenticate(request)
    conversation_id = conversation_id_from_path(request)
    await accessible(
        request, user, conversation_id, version=version, verb="read", others=Action.READ_OTHERS_CONVERSATIONS
    )
    try:
        turns = await storage_from(request).get_turns(conversation_id, limit=_ALL_TURNS)
    except StorageError as exc:
        raise storage_error(exc) from exc
    return json_response({"conversation_id": conversation_id, "chat_history": [chat_turn(t) for t in turns]})


async def _delete(request: web.Request, version: int) -> web.Response:
    user = await authenticate(request)
    conversation_id = conversation_id_from_path(request)
    info = await find(request, conversation_id)
    if info is None:
        return json_response(deleted_body(conversation_id, False, None))
    if info.owner != hash_user_id(user.user_id) and not granted(request, Action.DELETE_OTHERS_CONVERSATIONS, version):
        if version == 1:
            raise forbidden(user, "delete", conversation_id)
        return json_response(deleted_body(conversation_id, False, None))
    with_records = config_from(request).user_data_collection.delete_pending_with_conversation
    try:
        deletion = await storage_from(request).delete_conversation(conversation_id, records=with_records)
    except StorageError as exc:
        raise storage_error(exc) from exc
    uploading = ", ".join(deletion.in_flight)
    log.info(
        "conversation %s deleted by %s: %d turn(s), %d transcript(s), %d feedback record(s)%s",
        conversation_id,
        user.user_id,
        deletion.turns,
        deletion.transcripts,
        deletion.feedback,
        f"; {len(deletion.in_flight)} were being uploaded: {uploading}" if deletion.in_flight else "",
    )
    return json_response(deleted_body(conversation_id, deletion.conversations > 0, deletion if with_records else None))


async def _update(request: web.Request, version: int) -> web.Response:
    user = await authenticate(request)
    body = await read_json_body(request, limit=config_from(request).service.max_request_body_bytes)
    c = BodyChecker(body, allowed=("topic_summary",))
    topic_summary = c.string("topic_summary", required=True, min_length=1, max_length=MAX_TOPIC_SUMMARY_CHARS)
    c.raise_if_errors()
    assert topic_summary is not None
    conversation_id = conversation_id_from_path(request)
    await accessible(
        request, user, conversation_id, version=version, verb="update", others=Action.QUERY_OTHERS_CONVERSATIONS
    )
    try:
        found = await storage_from(request).set_topic_summary(conversation_id, topic_summary=topic_summary)
    except StorageError as exc:
        raise storage_error(exc) from exc
    if not found:  # deleted meanwhile
        raise not_found(conversation_id)
    return json_response(
        {"conversation_id": conversation_id, "success": True, "message": "Topic summary updated successfully"}
    )


@operation(
    summary="The caller's conversations (v1; limit and offset page them)",
    tags=["conversations"],
    responses={200: "ConversationsListResponse"},
    parameters=PAGE_PARAMETERS,
    errors=[401, 403, 422, 500, 501, 503],
)
async def list_conversations_v1(request: web.Request) -> web.Response:
    return await _list(request, 1)


@operation(
    summary="The caller's conversations (v2; limit and offset page them)",
    tags=["conversations"],
    responses={200: "ConversationsListResponseV2"},
    parameters=PAGE_PARAMETERS,
    errors=[401, 403, 422, 500, 501, 503],
)
async def list_conversations_v2(request: web.Request) -> web.Response:
    return await _list(request, 2)


@operation(
    summary="One conversation's chat history (v1)",
    tags=["conversations"],
    responses={200: "ConversationResponse"},
    errors=[400, 401, 403, 404, 500, 501, 503],
)
async def get_conversation_v1(request: web.Request) -> web.Response:
    return await _get(request, 1)


@operation(
    summary="One conversation's chat history (v2)",
    tags=["conversations"],
    responses={200: "ConversationResponse"},
    errors=[400, 401, 403, 404, 500, 501, 503],
)
async def get_conversation_v2(request: web.Request) -> web.Response:
    return await _get(request, 2)


@operation(
    summary="Delete a conversation and its records not collected yet (v1)",
    tags=["conversations"],
    responses={200: "ConversationDeleteResponse"},
    errors=[400, 401, 403, 404, 500, 501, 503],
)
async def delete_conversation_v1(request: web.Request) -> web.Response:
    return await _delete(request, 1)


@operation(
    summary="Delete a conversation and its records not collected yet (v2)",
    tags=["conversations"],
    responses={200: "ConversationDeleteResponse"},
    errors=[400, 401, 403, 404, 500, 501, 503],
)
async def delete_conversation_v2(request: web.Request) -> web.Response:
    return await _delete(request, 2)


@operation(
    summary="Set a conversation's topic summary (v1)",
    tags=["conversations"],
    request="ConversationUpdateRequest",
    responses={200: "ConversationUpdateResponse"},
    errors=[400, 401, 403, 404, 413, 422, 500, 501, 503],
)
async def update_conversation_v1(request: web.Request) -> web.Response:
    return await _update(request, 1)


@operation(
    summary="Set a conversation's topic summary (v2)",
    tags=["conversations"],
    request="ConversationUpdateRequest",
    responses={200: "ConversationUpdateResponse"},
    errors=[400, 401, 403, 404, 413, 422, 500, 501, 503],
)
async def update_conversation_v2(request: web.Request) -> web.Response:
    return await _update(request, 2)


#: Every route of this module: method, path, handler and the action it requires.
ROUTE_ACTIONS: Final = (
    ("GET", "/v1/conversations", list_conversations_v1, "list_conversations"),
    ("GET", "/v1/conversations/{conversation_id}", get_conversation_v1, "get_conversation"),
    ("DELETE", "/v1/conversations/{conversation_id}", delete_conversation_v1, "delete_conversation"),
    ("PUT", "/v1/conversations/{conversation_id}", update_conversation_v1, "update_conversation"),
    ("GET", "/v2/conversations", list_conversations_v2, "list_conversations"),
    ("GET", "/v2/conversations/{conversation_id}", get_conversation_v2, "get_conversation"),
    ("DELETE", "/v2/conversations/{conversation_id}", delete_conversation_v2, "delete_conversation"),
    ("PUT", "/v2/conversations/{conversation_id}", update_conversation_v2, "update_conversation"),
)


def add_routes(app: web.Application) -> None:
    """Add every route of :data:`ROUTE_ACTIONS`, each requiring its action."""
    for method, path, handler, action in ROUTE_ACTIONS:
        app.router.add_route(method, path, requires(Action(action))(handler))
