"""``sso`` and ``offline-token``: an access token from Red Hat SSO (client credentials, or an
offline token), exchanged for an ingress token."""

from __future__ import annotations

import abc
import json
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import urlsplit

import aiohttp
import attrs
import jwt

from lightspeed.collector.credentials.base import CredentialProvider, Credentials, CredentialsError, log, secret
from lightspeed.collector.credentials.openshift import PULL_SECRET_REGISTRY, registry_auth
from lightspeed.config import CollectorAuthConfig, DataCollectorConfig
from lightspeed.masking import LOG_SECRETS

if TYPE_CHECKING:
    from lightspeed.metrics import CollectorMetrics

__all__ = ["OfflineTokenProvider", "SSOProvider", "sso_endpoints", "token_identity"]

#: Red Hat SSO's token endpoint and the API's access-token exchange, production and stage.
SSO_TOKEN_URLS: Final = {
    False: "https://sso.redhat.com/auth/realms/redhat-external/protocol/openid-connect/token",
    True: "https://sso.stage.redhat.com/auth/realms/redhat-external/protocol/openid-connect/token",
}
ACCESS_TOKEN_URLS: Final = {
    False: "https://api.openshift.com/api/accounts_mgmt/v1/access_token",
    True: "https://api.stage.openshift.com/api/accounts_mgmt/v1/access_token",
}
#: The client of the offline-token (``refresh_token``) grant, as Red Hat's API documentation names it.
OFFLINE_TOKEN_CLIENT_ID: Final = "rhsm-api"
#: Scope of the client-credentials grant.
SSO_SCOPE: Final = "api.console"
#: The SSO access token is replaced this long before it expires (a quarter of its life when shorter).
SSO_EXPIRY_MARGIN_SECONDS: Final = 60.0
_OAUTH_ERROR_RE: Final = re.compile(r"[a-z_]{1,64}")
_MAX_ANSWER: Final = 1024 * 1024


def sso_endpoints(auth: CollectorAuthConfig) -> tuple[str, str]:
    """The token endpoint and the access-token exchange this configuration uses."""
    return (
        auth.sso_token_url or SSO_TOKEN_URLS[auth.sso_stage],
        auth.access_token_url or ACCESS_TOKEN_URLS[auth.sso_stage],
    )


def _host(url: str) -> str:
    return urlsplit(url).hostname or "?"


def token_identity(access_token: str) -> str | None:
    """``preferred_username``, else ``sub``, of an SSO access token (a JWT read, not verified:
    it came straight from SSO over TLS, and only names the sender), as the upstream does."""
    try:
        claims = jwt.decode(access_token, options={"verify_signature": False})
    except jwt.PyJWTError:
        return None
    for claim in ("preferred_username", "sub"):
        value = claims.get(claim)
        if isinstance(value, str) and value:
            return value
    return None


@attrs.frozen
class _AccessToken:
    value: str = attrs.field(repr=False)
    #: Monotonic time after which it is no longer presented.
    use_until: float


class _Refused(Exception):
    """The exchange refused the SSO access token (401)."""


class _SSOBase(CredentialProvider):
    """An SSO access token (cached until shortly before it expires), exchanged for an ingress token."""

    #: What the grant trades, for messages.
    grant_subject: ClassVar[str] = ""

    def __init__(
        self,
        *,
        config: DataCollectorConfig,
        session: aiohttp.ClientSession,
        metrics: CollectorMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config=config, metrics=metrics, clock=clock)
        self.session = session
        self.token_url, self.exchange_url = sso_endpoints(config.auth)
        self._access: _AccessToken | None = None

    @abc.abstractmethod
    async def grant(self) -> dict[str, str]:
        """The form of the token request."""

    def refused_hint(self) -> str:
        return ""

    async def fetch(self) -> Credentials:
        access = await self._access_token()
        try:
            token = await self._exchange(access.value)
        except _Refused:
            # An access token SSO just issued may still be refused (revoked, clock skew): once more, fresh.
            self._access = None
            access = await self._access_token()
            try:
                token = await self._exchange(access.value)
            except _Refused:
                raise CredentialsError(
                    f"the access-token exchange at {_host(self.exchange_url)} refused a fresh SSO access token"
                    " (HTTP 401)"
                ) from None
        identity = self.config.identity_id or token_identity(access.value) or "unknown"
        return Credentials(token=token, identity_id=identity)

    async def _post(self, url: str, what: str, **kwargs: Any) -> tuple[int, Any]:
        timeout = aiohttp.ClientTimeout(total=self.auth.timeout_seconds)
        try:
            async with self.session.post(url, timeout=timeout, allow_redirects=False, **kwargs) as resp:
                body = await resp.content.read(_MAX_ANSWER)
                status = resp.status
        except TimeoutError:
            raise CredentialsError(
                f"no answer from {what} at {_host(url)} within {self.auth.timeout_seconds:g} s"
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise CredentialsError(f"cannot reach {what} at {_host(url)}: {type(exc).__name__}") from None
        try:
            parsed = json.loads(body) if body else None
        except ValueError:
            parsed = None
        return status, parsed

    async def _access_token(self) -> _AccessToken:
        now = self.clock()
        if self._access is not None and now < self._access.use_until:
            return self._access
        status, answer = await self._post(self.token_url, "Red Hat SSO", data=await self.grant())
        if status != 200:
            code = answer.get("error") if isinstance(answer, dict) else None
            detail = f", {code}" if isinstance(code, str) and _OAUTH_ERROR_RE.fullmatch(code) else ""
            if status in (400, 401, 403):
                raise CredentialsError(
                    f"Red Hat SSO at {_host(self.token_url)} refused the {self.grant_subject}"
                    f" (HTTP {status}{detail}){self.refused_hint()}"
                )
            raise CredentialsError(f"Red Hat SSO at {_host(self.token_url)} answered HTTP {status}{detail}")
        value = answer.get("access_token") if isinstance(answer, dict) else None
        if not isinstance(value, str) or not value:
            raise CredentialsError(f"Red Hat SSO at {_host(self.token_url)} answered without an access_token")
        expires_in = answer.get("expires_in") if isinstance(answer, dict) else None
        lifetime = float(expires_in) if isinstance(expires_in, int | float) and expires_in > 0 else 300.0
        margin = min(SSO_EXPIRY_MARGIN_SECONDS, lifetime / 4)
        LOG_SECRETS.add(value)
        self._access = _AccessToken(value=value, use_until=now + lifetime - margin)
        log.debug("SSO access token obtained, valid for %.0f s", lifetime)
        return self._access

    async def _exchange(self, access_token: str) -> str:
        what = "the access-token exchange"
        status, answer = await self._post(self.exchange_url, what, headers={"Authorization": f"Bearer {access_token}"})
        if status == 401:
            raise _Refused
        if status != 200:
            hint = (
                ": the account may not be allowed to send data (check its roles in the Red Hat console)"
                if status == 403
                else ""
            )
            raise CredentialsError(f"{what} at {_host(self.exchange_url)} answered HTTP {status}{hint}")
        token = registry_auth(answer)
        if token is None:
            raise CredentialsError(
                f"{what} at {_host(self.exchange_url)} answered without auths[{PULL_SECRET_REGISTRY!r}].auth"
            )
        return token


class SSOProvider(_SSOBase):
    """A service account's client id and secret (client-credentials grant, scope ``api.console``)."""

    mode = "sso"
    grant_subject = "service account's client credentials"

    def refused_hint(self) -> str:
        return ": check client_id and client_secret"

    async def grant(self) -> dict[str, str]:
        auth = self.auth
        return {
            "grant_type": "client_credentials",
            "client_id": await secret(auth.client_id, auth.client_id_path, "the SSO client id (client_id)"),
            "client_secret": await secret(
                auth.client_secret, auth.client_secret_path, "the SSO client secret (client_secret)"
            ),
            "scope": SSO_SCOPE,
        }


class OfflineTokenProvider(_SSOBase):
    """An offline token from the Red Hat customer portal (``refresh_token`` grant, client ``rhsm-api``)."""

    mode = "offline-token"
    grant_subject = "offline token"

    def refused_hint(self) -> str:
        return ": it may have expired (unused for 30 days) or been revoked; generate a new one"

    async def grant(self) -> dict[str, str]:
        auth = self.auth
        return {
            "grant_type": "refresh_token",
            "client_id": OFFLINE_TOKEN_CLIENT_ID,
            "refresh_token": await secret(auth.offline_token, auth.offline_token_path, "the offline token"),
        }
