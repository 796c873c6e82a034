"""The authentication interface: :class:`AuthModule`, :class:`AuthResult`, and the errors modules raise."""

from __future__ import annotations

import abc
from collections.abc import Mapping
from typing import Any, ClassVar, Final

import attrs
from aiohttp import web

from lightspeed.errors import HttpError

__all__ = [
    "DEFAULT_USER_ID",
    "DEFAULT_USER_NAME",
    "UNAUTHORIZED",
    "AuthError",
    "AuthModule",
    "AuthResult",
    "PlainAuthError",
    "bearer_token",
    "unauthorized",
]

DEFAULT_USER_ID: Final = "00000000-0000-0000-0000-000"
DEFAULT_USER_NAME: Final = "lightspeed-user"
#: The ``response`` of every 401 with a ``{"response", "cause"}`` body, as the upstream words it.
UNAUTHORIZED: Final = "Missing or invalid credentials provided by client"


@attrs.frozen(kw_only=True)
class AuthResult:
    """The caller, as its authentication module established it.

    ``user_id`` is what transcripts hash and conversations are owned by; ``username`` is for
    display and logs. ``token`` is the caller's own credential when the module has one (never
    printed: it is left out of ``repr``). ``groups`` become the roles ``group:<name>`` and
    ``claims`` (a verified JWT's payload) feed JWT role rules. ``skip_userid_check`` is the
    upstream's flag, reported by ``POST /authorized``.
    """

    user_id: str
    username: str
    token: str | None = attrs.field(default=None, repr=False)
    skip_userid_check: bool = False
    groups: tuple[str, ...] = ()
    claims: Mapping[str, Any] | None = attrs.field(default=None, repr=False)


class AuthError(HttpError):
    """Authentication failed; rendered as ``{"detail": {"response", "cause"}}``."""


class PlainAuthError(AuthError):
    """An authentication error whose body is ``{"detail": "<text>"}``, as several upstream modules answer."""

    def __init__(self, status: int, detail: str) -> None:
        super().__init__(status, detail, detail)
        self.detail = detail

    def body(self) -> dict[str, object]:
        return {"detail": self.detail}


def unauthorized(cause: str) -> AuthError:
    """The upstream's 401: ``Missing or invalid credentials provided by client`` and a cause."""
    return AuthError(401, UNAUTHORIZED, cause)


def bearer_token(request: web.Request) -> str:
    """The token of ``Authorization: Bearer <token>``, or the upstream's 401."""
    header = request.headers.get("Authorization")
    if not header:
        raise unauthorized("No Authorization header found")
    parts = header.strip().split()
    if len(parts) != 2 or parts[0].lower() != "bearer":
        raise unauthorized("No token found in Authorization header")
    return parts[1]


class AuthModule(abc.ABC):
    """An authentication module: turns a request into an :class:`AuthResult` or raises :class:`AuthError`.

    Subclasses set ``name`` (the ``authentication.module`` value). ``credentials_header`` is the
    header that carries the caller's credentials; a request without it may skip authentication
    on the probes and ``/metrics`` when ``skip_for_health_probes``/``skip_for_metrics`` say so.
    """

    name: ClassVar[str]
    credentials_header: ClassVar[str | None] = "Authorization"

    @abc.abstractmethod
    async def authenticate(self, request: web.Request) -> AuthResult:
        """Who is calling; raises :class:`AuthError` when that cannot be established."""

    def presents_credentials(self, request: web.Request) -> bool:
        """Whether the request carries this module's credentials at all."""
        return self.credentials_header is not None and bool(request.headers.get(self.credentials_header))

    async def aclose(self) -> None:  # noqa: B027 - an optional hook, empty by default
        """Release what the module holds (HTTP sessions); called once when the application stops."""
