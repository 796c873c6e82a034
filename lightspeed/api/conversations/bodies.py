"""The lists' paging parameters and the bodies of the answers, in the upstream's shapes."""

from __future__ import annotations

from datetime import datetime
from typing import Any, Final

from aiohttp import web

from lightspeed.api.errors import ValidationFailed
from lightspeed.records import ConversationTurn
from lightspeed.storage import ConversationInfo, Deletion

__all__ = ["MAX_PAGE_PARAM", "PAGE_PARAMETERS", "chat_turn", "deleted_body", "item", "page_params"]


#: The largest ``limit`` or ``offset`` (a signed 64-bit integer, as SQL stores hold them).
MAX_PAGE_PARAM: Final = 2**63 - 1


#: ``limit`` and ``offset`` as /openapi.json describes them.
PAGE_PARAMETERS: Final = [
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


def page_params(request: web.Request) -> tuple[int | None, int]:
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


def item(info: ConversationInfo, version: int) -> dict[str, Any]:
    """One entry of a list: v1 the metadata, v2 id, topic summary and last message time."""
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


def chat_turn(turn: ConversationTurn) -> dict[str, Any]:
    """One turn of ``chat_history``."""
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


def deleted_body(conversation_id: str, deleted: bool, records: Deletion | None) -> dict[str, Any]:
    """The answer to ``DELETE``; ``deleted_records`` only when records were deleted."""
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
