"""``k8s``: the caller's bearer token checked with a TokenReview, access with a SubjectAccessReview.

The user id is the token's ``user.uid`` (``kube:admin``, which has none, gets the cluster id as
the upstream does), the name ``user.username``, and its groups become roles ``group:<name>``.
Access requires ``get`` on the non-resource URL ``/ls-access``. Outcomes are cached by the
token's SHA-256 (``authentication.k8s_cache_ttl_seconds``, ``k8s_cache_max_entries``).

An unreachable or failing Kubernetes API is a 503 (``Unable to connect to Kubernetes API``);
the API refusing lightspeed's own credentials is a 500; neither ever lets a request through.
"""

from __future__ import annotations

import logging
from typing import Final

import attrs
from aiohttp import web

from lightspeed.auth.base import AuthError, AuthModule, AuthResult, bearer_token, unauthorized
from lightspeed.auth.cache import TokenCache
from lightspeed.kube import KubeClient, KubeError, KubeUnavailable, KubeUser

__all__ = ["CLUSTER_ID_LOCAL", "K8sAuth", "KUBE_ADMIN", "VIRTUAL_PATH", "kube_failure"]

log = logging.getLogger("lightspeed.auth.k8s")

VIRTUAL_PATH: Final = "/ls-access"
KUBE_ADMIN: Final = "kube:admin"
#: The cluster id given to ``kube:admin`` when lightspeed does not run in a cluster.
CLUSTER_ID_LOCAL: Final = "local"


def kube_failure(exc: KubeError, during: str) -> AuthError:
    """The answer for a Kubernetes API failure: 503 when it may pass, 500 when it is configuration."""
    log.error("Kubernetes API failure during %s: %s", during, exc)
    if isinstance(exc, KubeUnavailable):
        cause = (
            f"Kubernetes API unavailable (status {exc.status})"
            if exc.status is not None
            else "Failed to connect to Kubernetes API"
        )
        return AuthError(503, "Unable to connect to Kubernetes API", cause)
    status = f" (status {exc.status})" if exc.status is not None else ""
    return AuthError(500, "Internal server error", f"Kubernetes API request failed{status}")


def forbidden_endpoint(user_id: str) -> AuthError:
    """The upstream's 403 for a caller that may not use the endpoint."""
    return AuthError(
        403,
        "User does not have permission to access this endpoint",
        f"User {user_id} is not authorized to access this endpoint.",
    )


@attrs.frozen
class _Outcome:
    user: KubeUser | None  # None: the token is not valid
    allowed: bool = False


class K8sAuth(AuthModule):
    """See the module docstring. ``client`` is owned (closed by :meth:`aclose`)."""

    name = "k8s"

    def __init__(
        self,
        client: KubeClient,
        *,
        cache_ttl: float = 30,
        cache_max_entries: int = 1024,
        virtual_path: str = VIRTUAL_PATH,
    ) -> None:
        self.client = client
        self.virtual_path = virtual_path
        self.cache: TokenCache[_Outcome] = TokenCache(ttl=cache_ttl, max_entries=cache_max_entries)
        self._cluster_id: str | None = None

    async def aclose(self) -> None:
        await self.client.aclose()

    async def authenticate(self, request: web.Request) -> AuthResult:
        token = bearer_token(request)
        outcome = await self.cache.get(token, lambda: self._review(token))
        if outcome.user is None:
            raise unauthorized("Invalid or expired Kubernetes token")
        user = outcome.user
        user_id = await self._cluster_identity() if user.username == KUBE_ADMIN else user.uid
        if not outcome.allowed:
            raise forbidden_endpoint(user_id)
        return AuthResult(user_id=user_id, username=user.username, token=token, groups=user.groups)

    async def _review(self, token: str) -> _Outcome:
        try:
            review = await self.client.token_review(token)
        except KubeError as exc:
            raise kube_failure(exc, "TokenReview") from None
        if not review.authenticated or review.user is None:
            return _Outcome(user=None)
        try:
            allowed = await self.client.subject_access_review(review.user, path=self.virtual_path, verb="get")
        except KubeError as exc:
            raise kube_failure(exc, "SubjectAccessReview") from None
        if not review.user.uid and review.user.username != KUBE_ADMIN:
            log.warning("TokenReview gave user %r no uid; using the username as the user id", review.user.username)
            return _Outcome(user=attrs.evolve(review.user, uid=review.user.username), allowed=allowed)
        return _Outcome(user=review.user, allowed=allowed)

    async def _cluster_identity(self) -> str:
        """The cluster id for ``kube:admin``: the ClusterVersion's in a cluster, else ``local`` (as upstream)."""
        if self._cluster_id is None:
            if not self.client.in_cluster:
                self._cluster_id = CLUSTER_ID_LOCAL
            else:
                try:
                    self._cluster_id = await self.client.cluster_id()
                except KubeError as exc:
                    raise kube_failure(exc, "reading the ClusterVersion") from None
        return self._cluster_id
