"""``trusted-proxy``: a proxy in front of lightspeed vouches for the user.

The proxy authenticates with its own service-account token (checked by TokenReview, and
against ``allowed_service_accounts`` when that lists any); the user is the value of
``user_header`` (default ``X-Forwarded-User``), and, a lightspeed extension, the user's groups
are the comma-separated ``groups_header`` when one is configured (roles ``group:<name>``).
"""

from __future__ import annotations

import logging
from typing import Final

from aiohttp import web

from lightspeed.auth.base import AuthModule, AuthResult, bearer_token, unauthorized
from lightspeed.auth.cache import TokenCache
from lightspeed.auth.k8s import forbidden_endpoint, kube_failure
from lightspeed.config import TrustedProxyConfig
from lightspeed.kube import KubeClient, KubeError, KubeUser

__all__ = ["SERVICE_ACCOUNT_PREFIX", "TrustedProxyAuth"]

log = logging.getLogger("lightspeed.auth.trusted_proxy")

SERVICE_ACCOUNT_PREFIX: Final = "system:serviceaccount:"
MAX_FORWARDED_LENGTH: Final = 256


class TrustedProxyAuth(AuthModule):
    name = "trusted-proxy"

    def __init__(
        self, client: KubeClient, config: TrustedProxyConfig, *, cache_ttl: float = 30, cache_max_entries: int = 1024
    ) -> None:
        self.client = client
        self.config = config
        self.allowed = {
            f"{SERVICE_ACCOUNT_PREFIX}{sa.namespace}:{sa.name}" for sa in config.allowed_service_accounts or ()
        }
        self.cache: TokenCache[KubeUser | None] = TokenCache(ttl=cache_ttl, max_entries=cache_max_entries)

    async def aclose(self) -> None:
        await self.client.aclose()

    async def authenticate(self, request: web.Request) -> AuthResult:
        if not request.headers.get("Authorization"):
            raise unauthorized("Missing Authorization header")
        token = bearer_token(request)
        proxy = await self.cache.get(token, lambda: self._review(token))
        if proxy is None:
            raise unauthorized("Invalid or expired proxy service account token")
        if not proxy.username.startswith(SERVICE_ACCOUNT_PREFIX):
            log.warning("trusted-proxy: %r is not a service account; refused", proxy.username)
            raise forbidden_endpoint(proxy.username)
        if self.allowed and proxy.username not in self.allowed:
            log.warning("trusted-proxy: service account %r is not in allowed_service_accounts", proxy.username)
            raise forbidden_endpoint(proxy.username)
        header = self.config.user_header
        user = (request.headers.get(header) or "").strip()
        if not user:
            raise unauthorized(f"Missing required header '{header}'")
        if len(user) > MAX_FORWARDED_LENGTH or not user.isprintable():
            raise unauthorized(f"Invalid value in header '{header}'")
        groups: tuple[str, ...] = ()
        if self.config.groups_header is not None:
            raw = request.headers.get(self.config.groups_header) or ""
            groups = tuple(g.strip() for g in raw.split(",") if g.strip())
        log.debug("trusted-proxy: request forwarded by %s", proxy.username)
        return AuthResult(user_id=user, username=user, skip_userid_check=True, groups=groups)

    async def _review(self, token: str) -> KubeUser | None:
        try:
            review = await self.client.token_review(token)
        except KubeError as exc:
            raise kube_failure(exc, "TokenReview of the proxy") from None
        return review.user if review.authenticated else None
