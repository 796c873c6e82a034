"""Authentication modules: who is calling.

A module turns a request into an :class:`AuthResult` or raises an
:class:`~lightspeed.api.errors.ApiError`-compatible :class:`AuthError`.
"""

from __future__ import annotations

import abc
from typing import Final

import attrs
from aiohttp import web

from lightspeed.config import AuthenticationConfig
from lightspeed.errors import HttpError

__all__ = ["AuthError", "AuthModule", "AuthResult", "DEFAULT_USER_ID", "DEFAULT_USER_NAME", "create_auth"]

DEFAULT_USER_ID: Final = "00000000-0000-0000-0000-000"
DEFAULT_USER_NAME: Final = "lightspeed-user"


@attrs.frozen(kw_only=True)
class AuthResult:
    """The caller: its user id (raw; stored only as a SHA-256 hash), name and token."""

    user_id: str
    username: str
    token: str | None = None


class AuthError(HttpError):
    """Authentication failed; rendered as ``{"detail": {"response", "cause"}}``."""


class AuthModule(abc.ABC):
    """An authentication module."""

    @abc.abstractmethod
    async def authenticate(self, request: web.Request) -> AuthResult:
        """Who is calling; raises :class:`AuthError` when that cannot be established."""


def _user_id_from_query(request: web.Request) -> str:
    if "user_id" not in request.query:
        return DEFAULT_USER_ID
    user_id = request.query["user_id"]
    if user_id == "":
        raise AuthError(400, "Invalid user ID", "The user_id query parameter must not be empty")
    return user_id


class NoopAuth(AuthModule):
    """``noop``: no authentication; the user id comes from the ``user_id`` query parameter."""

    async def authenticate(self, request: web.Request) -> AuthResult:
        return AuthResult(user_id=_user_id_from_query(request), username=DEFAULT_USER_NAME)


class NoopWithTokenAuth(AuthModule):
    """``noop-with-token``: like ``noop``, but a ``Authorization: Bearer`` header is required."""

    async def authenticate(self, request: web.Request) -> AuthResult:
        header = request.headers.get("Authorization")
        if header is None:
            raise AuthError(401, "Missing or invalid credentials provided by client", "No Authorization header found")
        scheme, _, token = header.partition(" ")
        token = token.strip()
        if scheme.lower() != "bearer" or not token:
            raise AuthError(
                401, "Missing or invalid credentials provided by client", "No token found in Authorization header"
            )
        return AuthResult(user_id=_user_id_from_query(request), username=DEFAULT_USER_NAME, token=token)


_MODULES: Final[dict[str, type[AuthModule]]] = {"noop": NoopAuth, "noop-with-token": NoopWithTokenAuth}


def create_auth(config: AuthenticationConfig) -> AuthModule:
    """The module the configuration names (validated at config load)."""
    return _MODULES[config.module]()
