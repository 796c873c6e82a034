"""Authentication modules (who is calling) and authorization (what the caller may do).

Each module is an :class:`AuthModule` named by ``authentication.module``: ``noop``,
``noop-with-token``, ``k8s``, ``jwk-token``, ``api-key-token``, ``rh-identity`` and
``trusted-proxy``. :func:`create_auth` builds the configured one; the authorization pieces
are in :mod:`lightspeed.auth.authorization` and :mod:`lightspeed.api.access`. See ``docs/authentication.md``.
"""

from __future__ import annotations

from lightspeed.auth.base import (
    DEFAULT_USER_ID,
    DEFAULT_USER_NAME,
    AuthError,
    AuthModule,
    AuthResult,
    PlainAuthError,
    bearer_token,
)
from lightspeed.config import AuthenticationConfig

__all__ = [
    "DEFAULT_USER_ID",
    "DEFAULT_USER_NAME",
    "AuthError",
    "AuthModule",
    "AuthResult",
    "PlainAuthError",
    "bearer_token",
    "create_auth",
]


def create_auth(config: AuthenticationConfig) -> AuthModule:
    """The module the configuration names (validated at config load).

    For ``k8s`` and ``trusted-proxy`` this finds the Kubernetes credentials
    (:meth:`lightspeed.kube.KubeCredentials.discover`) and raises
    :class:`lightspeed.kube.KubeConfigError` when there are none; for ``api-key-token`` with
    ``api_key_path`` it reads the key (:class:`lightspeed.errors.ConfigError` when it cannot).
    """
    module = config.module
    if module == "noop":
        from lightspeed.auth.noop import NoopAuth

        return NoopAuth()
    if module == "noop-with-token":
        from lightspeed.auth.noop import NoopWithTokenAuth

        return NoopWithTokenAuth()
    if module in ("k8s", "trusted-proxy"):
        from lightspeed.kube import KubeClient, KubeConfigError, KubeCredentials

        try:
            credentials = KubeCredentials.discover(
                server=config.k8s_cluster_api,
                ca_file=config.k8s_ca_cert_path,
                verify=not config.skip_tls_verification,
            )
        except KubeConfigError as exc:
            raise KubeConfigError(
                f"authentication.module {module}: {exc}; run lightspeed in a pod with a service account, or point"
                " $KUBECONFIG at a kubeconfig whose user may create TokenReviews and SubjectAccessReviews"
                " (authentication.k8s_cluster_api and k8s_ca_cert_path then select the API server and its CA)"
            ) from None
        client = KubeClient(credentials, timeout=config.k8s_timeout_seconds)
        ttl, entries = config.k8s_cache_ttl_seconds, config.k8s_cache_max_entries
        if module == "k8s":
            from lightspeed.auth.k8s import K8sAuth

            return K8sAuth(client, cache_ttl=ttl, cache_max_entries=entries)
        from lightspeed.auth.trusted_proxy import TrustedProxyAuth
        from lightspeed.config import TrustedProxyConfig

        proxy_config = config.trusted_proxy_config or TrustedProxyConfig()
        return TrustedProxyAuth(client, proxy_config, cache_ttl=ttl, cache_max_entries=entries)
    if module == "jwk-token":
        from lightspeed.auth.jwk import JwkTokenAuth

        assert config.jwk_config is not None
        return JwkTokenAuth(config.jwk_config, verify_tls=not config.skip_tls_verification)
    if module == "api-key-token":
        from lightspeed.auth.api_key import ApiKeyTokenAuth

        assert config.api_key_config is not None
        return ApiKeyTokenAuth(config.api_key_config)
    if module == "rh-identity":
        from lightspeed.auth.rh_identity import RhIdentityAuth
        from lightspeed.config import RhIdentityConfig

        return RhIdentityAuth(config.rh_identity_config or RhIdentityConfig())
    raise ValueError(f"unknown authentication module {module!r}")
