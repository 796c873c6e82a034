"""Finding a conversation and telling whether the caller may act on it, with the upstream's
errors for each case."""

from __future__ import annotations

import uuid

from aiohttp import web

from lightspeed.actions import Action
from lightspeed.api.access import authorized_actions_from
from lightspeed.api.errors import ApiError
from lightspeed.auth import AuthResult
from lightspeed.records import canonical_conversation_id, hash_user_id
from lightspeed.state import storage_from
from lightspeed.storage import ConversationInfo, StorageError, StorageUnreachable, StorageUnsupported

__all__ = ["accessible", "conversation_id_from_path", "find", "forbidden", "granted", "not_found", "storage_error"]


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


def granted(request: web.Request, action: Action, version: int) -> bool:
    """Whether the caller may use others' conversations on this version: ``action`` (one of the
    ``*_other_conversations``) on v1; never on v2, as upstream.

    Without access rules every caller has ``action``, as upstream; with them, only a rule naming it (or ``admin``).
    """
    return version == 1 and action in authorized_actions_from(request)


def storage_error(exc: StorageError) -> ApiError:
    """The upstream's answer to a store that failed: 501 unsupported, 503 unreachable, else 500."""
    if isinstance(exc, StorageUnsupported):
        return ApiError(501, "Not supported by the storage backend", str(exc))
    if isinstance(exc, StorageUnreachable):
        return ApiError(503, "Unable to access conversation storage", str(exc))
    return ApiError(500, "Database query failed", str(exc))


def not_found(conversation_id: str) -> ApiError:
    """404, in the upstream's words."""
    return ApiError(404, "Conversation not found", f"Conversation with ID {conversation_id} does not exist")


def forbidden(user: AuthResult, action: str, conversation_id: str) -> ApiError:
    """403 (v1, another user's conversation), in the upstream's words."""
    return ApiError(
        403,
        "User does not have permission to perform this action",
        f"User {user.user_id} does not have permission to {action} conversation with ID {conversation_id}",
    )


async def find(request: web.Request, conversation_id: str) -> ConversationInfo | None:
    """The conversation's metadata, ``None`` when unknown; a store failure is the upstream's error."""
    try:
        return await storage_from(request).get_conversation(conversation_id)
    except StorageError as exc:
        raise storage_error(exc) from exc


async def accessible(
    request: web.Request, user: AuthResult, conversation_id: str, *, version: int, verb: str, others: Action
) -> ConversationInfo:
    """The conversation when the caller may ``verb`` it: 404 when unknown; another user's is
    403 on v1 (unless the caller was granted ``others``) and 404 on v2."""
    info = await find(request, conversation_id)
    if info is None:
        raise not_found(conversation_id)
    if info.owner != hash_user_id(user.user_id) and not granted(request, others, version):
        if version == 1:
            raise forbidden(user, verb, conversation_id)
        raise not_found(conversation_id)
    return info
