"""``noop`` and ``noop-with-token``: no authentication; the user id is the ``user_id`` query parameter."""

from __future__ import annotations

from typing import ClassVar

from aiohttp import web

from lightspeed.auth.base import (
    DEFAULT_USER_ID,
    DEFAULT_USER_NAME,
    AuthModule,
    AuthResult,
    PlainAuthError,
    bearer_token,
)

__all__ = ["NoopAuth", "NoopWithTokenAuth"]


def _user_id_from_query(request: web.Request) -> str:
    user_id = request.query.get("user_id", DEFAULT_USER_ID)
    if not user_id:
        raise PlainAuthError(400, "user_id cannot be empty")
    return user_id


class NoopAuth(AuthModule):
    """``noop``: every caller is accepted; ``?user_id=`` names the user (default ``00000000-0000-0000-0000-000``)."""

    name = "noop"
    credentials_header: ClassVar[str | None] = None

    async def authenticate(self, request: web.Request) -> AuthResult:
        return AuthResult(user_id=_user_id_from_query(request), username=DEFAULT_USER_NAME, skip_userid_check=True)


class NoopWithTokenAuth(AuthModule):
    """``noop-with-token``: like ``noop``, but an ``Authorization: Bearer`` header (any token) is required."""

    name = "noop-with-token"

    async def authenticate(self, request: web.Request) -> AuthResult:
        token = bearer_token(request)
        return AuthResult(
            user_id=_user_id_from_query(request), username=DEFAULT_USER_NAME, token=token, skip_userid_check=True
        )
