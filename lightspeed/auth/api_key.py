"""``api-key-token``: the bearer token must equal the configured API key (compared in constant time).

The key is ``api_key_config.api_key`` (write ``${env.NAME}`` to keep it out of the file) or,
a lightspeed extension, the content of ``api_key_config.api_key_path`` (surrounding whitespace
stripped), re-read when the file changes, so a rotated Kubernetes Secret is picked up.
Every caller is the same user, ``00000000-0000-0000-0000-000`` / ``lightspeed-user``.
"""

from __future__ import annotations

import hmac
import logging
import os
import time
from typing import Final

from aiohttp import web

from lightspeed.auth.base import (
    DEFAULT_USER_ID,
    DEFAULT_USER_NAME,
    AuthModule,
    AuthResult,
    PlainAuthError,
    bearer_token,
)
from lightspeed.config import ApiKeyConfig
from lightspeed.errors import ConfigError

__all__ = ["ApiKeyTokenAuth"]

log = logging.getLogger("lightspeed.auth.api_key")

#: How often the key file's modification time is looked at.
KEY_FILE_CHECK_SECONDS: Final = 5.0


class ApiKeyTokenAuth(AuthModule):
    name = "api-key-token"

    def __init__(self, config: ApiKeyConfig) -> None:
        self.path = config.api_key_path
        self._checked_at = time.monotonic()
        self._stamp: tuple[int, int] | None = None
        if config.api_key is not None:
            self._key = config.api_key.encode()
        else:
            self._key = self._read_key(required=True) or b""

    def _read_key(self, *, required: bool) -> bytes | None:
        assert self.path is not None
        try:
            st = os.stat(self.path)
            with open(self.path, "rb") as f:
                key = f.read().strip()
        except OSError as exc:
            if required:
                raise ConfigError([f"authentication.api_key_config.api_key_path: cannot read: {exc}"]) from None
            log.warning("cannot re-read the API key file %s (%s); keeping the key held", self.path, exc)
            return None
        if not key:
            if required:
                raise ConfigError(["authentication.api_key_config.api_key_path: the file is empty"])
            log.warning("the API key file %s is empty; keeping the key held", self.path)
            return None
        self._stamp = (st.st_mtime_ns, st.st_size)
        return key

    def _current_key(self) -> bytes:
        if self.path is not None and time.monotonic() - self._checked_at >= KEY_FILE_CHECK_SECONDS:
            self._checked_at = time.monotonic()
            try:
                st = os.stat(self.path)
                changed = (st.st_mtime_ns, st.st_size) != self._stamp
            except OSError:
                changed = True
            if changed:
                key = self._read_key(required=False)
                if key is not None:
                    self._key = key
                    log.info("the API key file %s changed; using its new key", self.path)
        return self._key

    async def authenticate(self, request: web.Request) -> AuthResult:
        token = bearer_token(request)
        if not hmac.compare_digest(token.encode("utf-8", "surrogatepass"), self._current_key()):
            raise PlainAuthError(401, "Invalid API Key")
        return AuthResult(user_id=DEFAULT_USER_ID, username=DEFAULT_USER_NAME, token=token, skip_userid_check=True)
