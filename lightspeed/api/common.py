"""Helpers shared by the endpoint families."""

from __future__ import annotations

from aiohttp import web

from lightspeed.actions import Action
from lightspeed.api.access import auth_result_from, authorized_actions_from
from lightspeed.api.errors import ApiError
from lightspeed.auth import AuthResult
from lightspeed.records import hash_user_id
from lightspeed.state import auth_from, storage_from
from lightspeed.storage import StorageUnavailable, StorageUnreachable

__all__ = ["authenticate", "check_conversation_access", "storage_failure"]


def storage_failure(exc: StorageUnavailable, response: str) -> ApiError:
    """The API error for a store that failed: 503 when it cannot be reached (retry later), else 500."""
    return ApiError(503 if isinstance(exc, StorageUnreachable) else 500, response, str(exc))


async def authenticate(request: web.Request) -> AuthResult:
    """Who is calling: what the authentication middleware established, else the module's answer (400/401)."""
    known = auth_result_from(request)
    if known is not None:
        return known
    return await auth_from(request).authenticate(request)


async def check_conversation_access(
    request: web.Request, conversation_id: str, user: AuthResult, *, action: str, others_action: Action | None = None
) -> None:
    """404 when the conversation is unknown, 403 when it belongs to someone else.

    A caller granted ``others_action`` (``query_other_conversations``, ...) may use anyone's: every caller
    when no access rules are configured, as upstream. Without ``others_action`` (feedback) only the owner may.
    """
    try:
        owner = await storage_from(request).get_conversation_owner(conversation_id)
    except StorageUnavailable as exc:
        raise ApiError(503, "Unable to access conversation storage", str(exc)) from exc
    if owner is None:
        raise ApiError(404, "Conversation not found", f"Conversation with ID {conversation_id} does not exist")
    if owner != hash_user_id(user.user_id):
        if others_action is not None and others_action in authorized_actions_from(request):
            return
        raise ApiError(
            403,
            "User does not have permission to perform this action",
            f"User {user.user_id} does not have permission to {action} conversation with ID {conversation_id}",
        )
