"""``rh-identity``: the caller as Red Hat's gateway describes it in the base64 JSON ``x-rh-identity`` header.

``User`` identities give ``user.user_id`` / ``user.username``; ``ServiceAccount`` ones
``service_account.client_id`` / ``service_account.username``; ``System`` ones ``system.cn`` and,
as the name, ``account_number`` when set, else ``system.cn``. Every name in
``rh_identity_config.required_entitlements`` must be entitled. The answers are the upstream's
plain-string bodies: 401 ``Missing x-rh-identity header``, 400 for an oversized, undecodable or
incomplete header (``Invalid identity data``), 403 ``Insufficient entitlements``.
"""

from __future__ import annotations

import base64
import binascii
import json
import logging
from typing import Any, ClassVar, Final

from aiohttp import web

from lightspeed.auth.base import AuthModule, AuthResult, PlainAuthError
from lightspeed.config import RhIdentityConfig

__all__ = ["HEADER", "RhIdentityAuth", "parse_identity"]

log = logging.getLogger("lightspeed.auth.rh_identity")

HEADER: Final = "x-rh-identity"
MAX_FIELD_LENGTH: Final = 256


def _invalid(why: str) -> PlainAuthError:
    log.warning("x-rh-identity rejected: %s", why)
    return PlainAuthError(400, "Invalid identity data")


def _text(container: Any, field: str) -> str:
    value = container.get(field) if isinstance(container, dict) else None
    if not isinstance(value, str):
        raise _invalid(f"{field} is missing or not a string")
    if not value.strip() or len(value) > MAX_FIELD_LENGTH or any(ord(c) < 32 or ord(c) == 127 for c in value):
        raise _invalid(f"{field} is empty, too long or holds control characters")
    return value


def parse_identity(data: Any) -> tuple[str, str, dict[str, Any]]:
    """``(user_id, username, identity)`` from the decoded header; :class:`PlainAuthError` 400 when incomplete."""
    identity = data.get("identity") if isinstance(data, dict) else None
    if not isinstance(identity, dict):
        raise _invalid("no identity object")
    kind = identity.get("type")
    if kind == "User":
        user = identity.get("user")
        user_id, username = _text(user, "user_id"), _text(user, "username")
    elif kind == "ServiceAccount":
        sa = identity.get("service_account")
        user_id, username = _text(sa, "client_id"), _text(sa, "username")
    elif kind == "System":
        user_id = _text(identity.get("system"), "cn")
        if identity.get("org_id") in (None, ""):
            raise _invalid("a System identity without org_id")
        account = identity.get("account_number")
        username = _text(identity, "account_number") if account not in (None, "") else user_id
    else:
        raise _invalid("missing or unsupported identity type")
    if identity.get("org_id") not in (None, ""):
        _text(identity, "org_id")
    return user_id, username, identity


class RhIdentityAuth(AuthModule):
    name = "rh-identity"
    credentials_header: ClassVar[str | None] = HEADER

    def __init__(self, config: RhIdentityConfig) -> None:
        self.required = tuple(config.required_entitlements or ())
        self.max_header_size = config.max_header_size

    async def authenticate(self, request: web.Request) -> AuthResult:
        header = request.headers.get(HEADER)
        if not header:
            raise PlainAuthError(401, "Missing x-rh-identity header")
        if len(header) > self.max_header_size:
            log.warning("x-rh-identity of %d bytes exceeds max_header_size %d", len(header), self.max_header_size)
            raise PlainAuthError(400, "x-rh-identity header exceeds maximum allowed size")
        try:
            text = base64.b64decode(header, validate=True).decode("utf-8")
        except (binascii.Error, ValueError):
            raise PlainAuthError(400, "Invalid base64 encoding in x-rh-identity header") from None
        try:
            data = json.loads(text)
        except ValueError:
            raise PlainAuthError(400, "Invalid JSON in x-rh-identity header") from None
        user_id, username, identity = parse_identity(data)
        if self.required:
            entitlements = data.get("entitlements")
            entitlements = entitlements if isinstance(entitlements, dict) else {}
            missing = [
                name
                for name in self.required
                if not (isinstance(entitlements.get(name), dict) and entitlements[name].get("is_entitled") is True)
            ]
            if missing:
                log.warning("x-rh-identity lacks required entitlements: %s", ", ".join(missing))
                raise PlainAuthError(403, "Insufficient entitlements")
        log.info("rh-identity: %s identity of org %s", identity.get("type"), identity.get("org_id") or "-")
        return AuthResult(user_id=user_id, username=username)
