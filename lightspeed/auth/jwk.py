"""``jwk-token``: JWTs verified with the keys published at ``jwk_config.url`` (a JWKS).

Verification is PyJWT's: the signature with the key the token's ``kid`` names (or, without a
``kid``, the first key for its ``alg``), then ``exp`` and ``nbf`` (with ``leeway_seconds``), and,
lightspeed extensions, ``iss`` against ``issuer`` and ``aud`` against ``audience`` when set.
Only asymmetric algorithms are accepted (``algorithms``), so ``alg: none`` and HMAC tokens are
refused whatever the key set holds.

The key set is fetched with aiohttp, kept ``jwks_cache_ttl_seconds`` (default one hour, as
upstream), and fetched again at once when a token names a ``kid`` it does not hold, at most
once a minute (a rotated key is picked up; a flood of made-up ``kid``s costs one fetch a
minute). When a refresh fails the keys already held are still used.

The user id is the claim ``jwt_configuration.user_id_claim`` (default ``user_id``) and the
name ``username_claim`` (default ``username``); a standard OIDC token needs ``sub`` and
``preferred_username`` configured. Role rules see the verified claims.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable
from typing import Any, Final

import aiohttp
import jwt
from aiohttp import web

from lightspeed.auth.base import AuthModule, AuthResult, bearer_token, unauthorized
from lightspeed.config import JwkConfig

__all__ = ["JwkTokenAuth", "JwksUnavailable", "KeySetCache"]

log = logging.getLogger("lightspeed.auth.jwk")

#: A token naming an unknown ``kid`` triggers at most one key-set fetch per this many seconds.
REFETCH_INTERVAL_SECONDS: Final = 60.0
#: After a failed fetch, the next attempt waits this long (requests meanwhile get a 401 at once).
FAILED_RETRY_SECONDS: Final = 5.0
MAX_JWKS_BYTES: Final = 1024 * 1024


class JwksUnavailable(Exception):
    """The key set could not be fetched (and none is held). ``cause`` is safe to show a client."""

    def __init__(self, cause: str) -> None:
        super().__init__(cause)
        self.cause = cause


class KeySetCache:
    """The JWKS at ``url``: fetched on first use, kept ``ttl`` seconds, re-fetched on unknown ``kid``s."""

    def __init__(
        self,
        url: str,
        *,
        ttl: float,
        timeout: float,
        verify_tls: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.url = url
        self.clock = clock
        self.ttl = ttl
        self.timeout = timeout
        self.verify_tls = verify_tls
        self.fetches = 0
        self._keys: list[dict[str, Any]] | None = None
        self._fetched_at = -float("inf")
        self._attempted_at = -float("inf")
        self._lock = asyncio.Lock()
        self._session: aiohttp.ClientSession | None = None

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def keys(self, *, want_kid: str | None = None) -> list[dict[str, Any]]:
        """The keys, fetched when expired, or when ``want_kid`` is missing and a minute has passed."""
        async with self._lock:
            now = self.clock()
            since_attempt = now - self._attempted_at
            expired = self._keys is None or now - self._fetched_at >= self.ttl
            if expired and since_attempt >= FAILED_RETRY_SECONDS:
                await self._refresh(now)
            elif (
                self._keys is not None
                and want_kid is not None
                and since_attempt >= REFETCH_INTERVAL_SECONDS
                and not any(k.get("kid") == want_kid for k in self._keys)
            ):
                log.info("a token names the unknown key id %r: fetching the key set again", want_kid[:64])
                await self._refresh(now)
            if self._keys is None:
                raise JwksUnavailable("Unable to reach authentication key server")
            return self._keys

    async def _refresh(self, now: float) -> None:
        self._attempted_at = now
        try:
            keys = await self._fetch()
        except JwksUnavailable as exc:
            if self._keys is None:
                raise
            log.warning("could not refresh the JWKS from %s (%s); keeping the keys held", self.url, exc.cause)
            return
        self._keys = keys
        self._fetched_at = now
        self.fetches += 1
        log.info("fetched %d signing key(s) from %s", len(keys), self.url)

    async def _fetch(self) -> list[dict[str, Any]]:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self.verify_tls),
                timeout=aiohttp.ClientTimeout(total=self.timeout),
                headers={"Accept": "application/json"},
            )
        try:
            async with self._session.get(self.url) as resp:
                if resp.status != 200:
                    log.error("the JWKS endpoint %s answered %d", self.url, resp.status)
                    raise JwksUnavailable("Unable to reach authentication key server")
                raw = await resp.content.read(MAX_JWKS_BYTES + 1)
        except (aiohttp.ClientError, TimeoutError) as exc:
            log.error("cannot fetch the JWKS from %s: %s", self.url, type(exc).__name__)
            raise JwksUnavailable("Unable to reach authentication key server") from None
        if len(raw) > MAX_JWKS_BYTES:
            log.error("the JWKS at %s is larger than %d bytes", self.url, MAX_JWKS_BYTES)
            raise JwksUnavailable("Authentication key server returned invalid data")
        try:
            data = json.loads(raw)
        except ValueError:
            log.error("the JWKS at %s is not JSON", self.url)
            raise JwksUnavailable("Authentication key server returned invalid data") from None
        keys = data.get("keys") if isinstance(data, dict) else None
        if not isinstance(keys, list) or not all(isinstance(k, dict) for k in keys):
            log.error("the JWKS at %s has no list of keys", self.url)
            raise JwksUnavailable("Authentication keys are malformed")
        return keys


class JwkTokenAuth(AuthModule):
    name = "jwk-token"

    def __init__(self, config: JwkConfig, *, verify_tls: bool = True) -> None:
        self.config = config
        self.key_set = KeySetCache(
            config.url, ttl=config.jwks_cache_ttl_seconds, timeout=config.timeout_seconds, verify_tls=verify_tls
        )

    async def aclose(self) -> None:
        await self.key_set.aclose()

    async def authenticate(self, request: web.Request) -> AuthResult:
        token = bearer_token(request)
        claims = await self.verify(token)
        jwt_cfg = self.config.jwt_configuration
        user_id = _claim(claims, jwt_cfg.user_id_claim)
        username = _claim(claims, jwt_cfg.username_claim)
        log.debug("authenticated user %s by JWT", username)
        return AuthResult(user_id=user_id, username=username, token=token, claims=claims)

    async def verify(self, token: str) -> dict[str, Any]:
        """The token's claims when its signature and times (and issuer, audience) check out; else a 401."""
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise unauthorized("Token could not be decoded") from None
        alg = header.get("alg")
        if not isinstance(alg, str) or alg not in self.config.algorithms:
            raise unauthorized("Token signed by unknown key")
        kid = header.get("kid")
        if kid is not None and not isinstance(kid, str):
            raise unauthorized("Token could not be decoded")
        try:
            keys = await self.key_set.keys(want_kid=kid)
        except JwksUnavailable as exc:
            raise unauthorized(exc.cause) from None
        jwk_dict = _select_key(keys, kid, alg)
        if jwk_dict is None:
            raise unauthorized("Token signed by unknown key")
        try:
            key = jwt.PyJWK(jwk_dict, algorithm=alg)
        except jwt.PyJWTError:
            raise unauthorized("Token signed by unknown key") from None
        audience = list(self.config.audience) if self.config.audience else None
        try:
            claims: dict[str, Any] = jwt.decode(
                token,
                key=key,
                algorithms=[alg],
                audience=audience,
                issuer=self.config.issuer,
                leeway=self.config.leeway_seconds,
                options={"verify_aud": audience is not None, "verify_iss": self.config.issuer is not None},
            )
        except jwt.ExpiredSignatureError:
            raise unauthorized("Token has expired") from None
        except jwt.InvalidSignatureError:
            raise unauthorized("Invalid token signature") from None
        except jwt.InvalidIssuerError:
            raise unauthorized("Token issuer is not accepted") from None
        except jwt.InvalidAudienceError:
            raise unauthorized("Token audience is not accepted") from None
        except jwt.MissingRequiredClaimError as exc:
            raise unauthorized(f"Token missing claim: {exc.claim}") from None
        except jwt.DecodeError:
            raise unauthorized("Token could not be decoded") from None
        except jwt.PyJWTError:
            raise unauthorized("Token validation failed") from None
        return claims


def _select_key(keys: list[dict[str, Any]], kid: str | None, alg: str) -> dict[str, Any] | None:
    """The key for a token: by ``kid`` (its ``alg``, when it states one, must be the token's), else by ``alg``."""

    def usable(k: dict[str, Any]) -> bool:
        return k.get("use") in (None, "sig") and k.get("alg") in (None, alg)

    if kid is not None:
        named = [k for k in keys if k.get("kid") == kid]
        if len(named) != 1:  # none, or an ambiguous set
            return None
        return named[0] if usable(named[0]) else None
    return next((k for k in keys if k.get("alg") == alg and k.get("use") in (None, "sig")), None)


def _claim(claims: dict[str, Any], name: str) -> str:
    value = claims.get(name)
    if value is None:
        raise unauthorized(f"Token missing claim: {name}")
    if isinstance(value, bool) or not isinstance(value, str | int):
        raise unauthorized(f"Token claim {name} is not a string")
    text = str(value)
    if not text:
        raise unauthorized(f"Token missing claim: {name}")
    return text
