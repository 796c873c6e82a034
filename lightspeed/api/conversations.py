"""``/v1/conversations`` and ``/v2/conversations``: list, read, delete and retitle conversations.

Wire-compatible with the Lightspeed Core Stack: the same paths, bodies, status codes and
error texts. Both versions read the same store; they differ where the upstream's do:

* list items: v1 has the conversation's metadata, v2 ``conversation_id``,
  ``topic_summary`` and ``last_message_timestamp`` (Unix seconds);
* another user's conversation: v1 answers 403 unless the caller was granted the matching
  ``*_other_conversations`` action (every caller is when no access rules are configured, as
  upstream); v2 keeps to the caller's own, whatever the grants, as the upstream's v2 (its
  conversation cache is keyed by user): another user's answers as if it did not exist (404;
  ``DELETE``: ``deleted: false``), and the list holds only the caller's.

Lightspeed adds paging to the lists (``limit``, ``offset``; without them the whole list,
as the upstream; ``X-Total-Count`` gives the length of the whole list) and, for the user's
right to delete, ``DELETE`` also deletes the conversation's transcripts and feedback that
were not collected yet (``user_data_collection.delete_pending_with_conversation``), saying
how many in ``deleted_records``.
"""

from __future__ import annotations

import logging
import uuid
from datetime import datetime
from typing import Any, Final

from aiohttp import web

from lightspeed.actions import Action
from lightspeed.api.access import authorized_actions_from
from lightspeed.api.common import authenticate
from lightspeed.api.errors import ApiError, ValidationFailed, json_response
from lightspeed.api.openapi import operation
from lightspeed.api.validation import BodyChecker, read_json_body
from lightspeed.auth import AuthResult
from lightspeed.auth.routes import requires
from lightspeed.records import ConversationTurn, canonical_conversation_id, hash_user_id
from lightspeed.state import config_from, storage_from
from lightspeed.storage import (
    ConversationInfo,
    Deletion,
    StorageError,
    StorageUnreachable,
    StorageUnsupported,
)

__all__ = ["ROUTE_ACTIONS", "add_routes", "conversation_id_from_path"]

log = logging.getLogger("lightspeed.api.conversations")

#: The upstream's bound on a topic summary.
MAX_TOPIC_SUMMARY_CHARS: Final = 1000
#: Every turn of a conversation, for ``GET /{id}`` (a conversation is never near this long).
_ALL_TURNS: Final = 1_000_000


# --------------------------------------------------------------------------- helpers


def conversation_id_from_path(request: web.Request) -> str:
    """The ``{conversation_id}`` of the path in the form the store keeps it; 400 when malformed.

    Accepted as the upstream accepts them: a UUID (any form :class:`uuid.UUID` reads), 48
    hexadecimal digits (Llama Stack's ids) or ``conv_`` and 48 hexadecimal digits.
    """
    raw = request.match_info["conversation_id"]
    canonical = canonical_conversation_id(raw)
    if canonical is not None:
        return canonical
    hex_part = raw.removeprefix("conv_")
    if len(hex_part) == 48 and all(c in "0123456789abcdefABCDEF" for c in hex_part):
        return f"conv_{hex_part.lower()}"
    if not raw.startswith("conv_"):
        try:
            return str(uuid.UUID(raw))
        except ValueError:
            pass
    raise ApiError(400, "Invalid conversation ID format", f"The conversation ID {raw} has invalid format.")


def _granted(request: web.Request, action: Action, version: int) -> bool:
    """Whether the caller may use others' conversations on this version: ``action`` (one of the
    ``*_other_conversations``) on v1; never on v2, as upstream.

    Without access rules every caller has ``action``, as upstream; with them, only a rule naming it (or ``admin``).
    """
    return version == 1 and action in authorized_actions_from(request)


def _storage_error(exc: StorageError) -> ApiError:
    if isinstance(exc, StorageUnsupported):
        return ApiError(501, "Not supported by the storage backend", str(exc))
    if isinstance(exc, StorageUnreachable):
        return ApiError(503, "Unable to access conversation storage", str(exc))
    return ApiError(500, "Database query failed", str(exc))


def _not_found(conversation_id: str) -> ApiError:
    return ApiError(404, "Conversation not found", f"Conversation with ID {conversation_id} does not exist")


def _forbidden(user: AuthResult, action: str, conversation_id: str) -> ApiError:
    return ApiError(
        403,
        "User does not have permission to perform this action",
        f"User {user.user_id} does not have permission to {action} conversation with ID {conversation_id}",
    )


async def _find(request: web.Request, conversation_id: str) -> ConversationInfo | None:
    try:
        return await storage_from(request).get_conversation(conversation_id)
    except StorageError as exc:
        raise _storage_error(exc) from exc


async def _accessible(
    request: web.Request, user: AuthResult, conversation_id: str, *, version: int, verb: str, others: Action
) -> ConversationInfo:
    """The conversation when the caller may ``verb`` it: 404 when unknown; another user's is
    403 on v1 (unless the caller was granted ``others``) and 404 on v2."""
    info = await _find(request, conversation_id)
    if info is None:
        raise _not_found(conversation_id)
    if info.owner != hash_user_id(user.user_id) and not _granted(request, others, version):
        if version == 1:
            raise _forbidden(user, verb, conversation_id)
        raise _not_found(conversation_id)
    return info


#: The largest ``limit`` or ``offset`` (a signed 64-bit integer, as SQL stores hold them).
MAX_PAGE_PARAM: Final = 2**63 - 1


#: ``limit`` and ``offset`` as /openapi.json describes them.
_PAGE_PARAMETERS: Final = [
    {
        "name": "limit",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 1, "maximum": MAX_PAGE_PARAM},
    },
    {
        "name": "offset",
        "in": "query",
        "required": False,
        "schema": {"type": "integer", "minimum": 0, "maximum": MAX_PAGE_PARAM},
    },
]


def _page_params(request: web.Request) -> tuple[int | None, int]:
    """``limit`` (at least 1, optional) and ``offset`` (at least 0, default 0); 422 as pydantic words it."""
    errors: list[dict[str, Any]] = []
    values: dict[str, int | None] = {"limit": None, "offset": 0}
    for name, minimum in (("limit", 1), ("offset", 0)):
        raw = request.query.get(name)
        if raw is None:
            continue
        try:
            value = int(raw.strip())
        except ValueError:
            errors.append(
                {
                    "type": "int_parsing",
                    "loc": ["query", name],
                    "msg": "Input should be a valid integer, unable to parse string as an integer",
                    "input": raw,
                }
            )
            continue
        if value < minimum:
            errors.append(
                {
                    "type": "greater_than_equal",
                    "loc": ["query", name],
                    "msg": f"Input should be greater than or equal to {minimum}",
                    "input": raw,
                    "ctx": {"ge": minimum},
                }
            )
            continue
        if value > MAX_PAGE_PARAM:  # beyond what a store's integers hold
            errors.append(
                {
                    "type": "less_than_equal",
                    "loc": ["query", name],
                    "msg": f"Input should be less than or equal to {MAX_PAGE_PARAM}",
                    "input": raw,
                    "ctx": {"le": MAX_PAGE_PARAM},
                }
            )
            continue
        values[name] = value
    if errors:
        raise ValidationFailed(errors)
    offset = values["offset"]
    assert offset is not None
    return values["limit"], offset


def _timestamp(value: str | None) -> float:
    if not value:
        return 0.0
    try:
        return datetime.fromisoformat(value).timestamp()
    except ValueError:
        return 0.0


def _item(info: ConversationInfo, version: int) -> dict[str, Any]:
    if version == 2:
        return {
            "conversation_id": info.conversation_id,
            "topic_summary": info.topic_summary,
            "last_message_timestamp": _timestamp(info.last_message_at or info.created_at),
        }
    return {
        "conversation_id": info.conversation_id,
        "created_at": info.created_at,
        "last_message_at": info.last_message_at,
        "message_count": info.message_count,
        "last_used_model": info.last_used_model,
        "last_used_provider": info.last_used_provider,
        "topic_summary": info.topic_summary,
    }


def _chat_turn(turn: ConversationTurn) -> dict[str, Any]:
    return {
        "messages": [
            {"content": turn.query, "type": "user", "referenced_documents": None},
            {"content": turn.response, "type": "assistant", "referenced_documents": None},
        ],
        "tool_calls": [],
        "tool_results": [],
        "provider": turn.provider or "",
        "model": turn.model or "",
        "started_at": turn.started_at or turn.timestamp,
        "completed_at": turn.timestamp,
    }


# --------------------------------------------------------------------------- handlers


async def _list(request: web.Request, version: int) -> web.Response:
    user = await authenticate(request)
    limit, offset = _page_params(request)
    owner = None if _granted(request, Action.LIST_OTHERS_CONVERSATIONS, version) else hash_user_id(user.user_id)
    try:
        page = await storage_from(request).list_conversations(owner, limit=limit, offset=offset)
    except StorageError as exc:
        raise _storage_error(exc) from exc
    return json_response(
        {"conversations": [_item(info, version) for info in page.conversations]},
        headers={"X-Total-Count": str(page.total)},
    )


async def _get(request: web.Request, version: int) -> web.Response:
    user = await authenticate(request)
    conversation_id = conversation_id_from_path(request)
    await _accessible(
        request, user, conversation_id, version=version, verb="read", others=Action.READ_OTHERS_CONVERSATIONS
    )
    try:
        turns = await storage_from(request).get_turns(conversation_id, limit=_ALL_TURNS)
    except StorageError as exc:
        raise _storage_error(exc) from exc
    return json_response({"conversation_id": conversation_id, "chat_history": [_chat_turn(t) for t in turns]})


def _deleted_body(conversation_id: str, deleted: bool, records: Deletion | None) -> dict[str, Any]:
    body: dict[str, Any] = {
        "conversation_id": conversation_id,
        "success": True,
        "response": "Conversation deleted successfully" if deleted else "Conversation not found",
        "deleted": deleted,
    }
    if records is not None:  # only when records were deleted: otherwise the upstream's body, exactly
        body["deleted_records"] = {
            "transcripts": records.transcripts,
            "feedback": records.feedback,
            "in_flight": len(records.in_flight),
        }
    return body


async def _delete(request: web.Request, version: int) -> web.Response:
    user = await authenticate(request)
    conversation_id = conversation_id_from_path(request)
    info = await _find(request, conversation_id)
    if info is None:
        return json_response(_deleted_body(conversation_id, False, None))
    if info.owner != hash_user_id(user.user_id) and not _granted(request, Action.DELETE_OTHERS_CONVERSATIONS, version):
        if version == 1:
            raise _forbidden(user, "delete", conversation_id)
        return json_response(_deleted_body(conversation_id, False, None))
    with_records = config_from(request).user_data_collection.delete_pending_with_conversation
    try:
        deletion = await storage_from(request).delete_conversation(conversation_id, records=with_records)
    except StorageError as exc:
        raise _storage_error(exc) from exc
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
    return json_response(_deleted_body(conversation_id, deletion.conversations > 0, deletion if with_records else None))


async def _update(request: web.Request, version: int) -> web.Response:
    user = await authenticate(request)
    body = await read_json_body(request, limit=config_from(request).service.max_request_body_bytes)
    c = BodyChecker(body, allowed=("topic_summary",))
    topic_summary = c.string("topic_summary", required=True, min_length=1, max_length=MAX_TOPIC_SUMMARY_CHARS)
    c.raise_if_errors()
    assert topic_summary is not None
    conversation_id = conversation_id_from_path(request)
    await _accessible(
        request, user, conversation_id, version=version, verb="update", others=Action.QUERY_OTHERS_CONVERSATIONS
    )
    try:
        found = await storage_from(request).set_topic_summary(conversation_id, topic_summary=topic_summary)
    except StorageError as exc:
        raise _storage_error(exc) from exc
    if not found:  # deleted meanwhile
        raise _not_found(conversation_id)
    return json_response(
        {"conversation_id": conversation_id, "success": True, "message": "Topic summary updated successfully"}
    )


@operation(
    summary="The caller's conversations (v1; limit and offset page them)",
    tags=["conversations"],
    responses={200: "ConversationsListResponse"},
    parameters=_PAGE_PARAMETERS,
    errors=[401, 403, 422, 500, 501, 503],
)
async def list_conversations_v1(request: web.Request) -> web.Response:
    return await _list(request, 1)


@operation(
    summary="The caller's conversations (v2; limit and offset page them)",
    tags=["conversations"],
    responses={200: "ConversationsListResponseV2"},
    parameters=_PAGE_PARAMETERS,
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
    for method, path, handler, action in ROUTE_ACTIONS:
        app.router.add_route(method, path, requires(Action(action))(handler))
