"""Where the collector's ingress token and identity come from: the credential providers.

``data_collector.auth.mode`` picks one:

============== ===============================================================================
``manual``     ``ingress_server_auth_token``, or the file ``ingress_server_auth_token_path``
               (read again before every upload); ``identity_id`` as configured.
``openshift``  the cluster's pull secret (``openshift-config/pull-secret``,
               ``.dockerconfigjson`` → ``auths["cloud.openshift.com"].auth``) as the token and
               the cluster id (``clusterversions/version`` ``spec.clusterID``) as the identity,
               from the Kubernetes API (in-cluster service account, or a kubeconfig).
``sso``        a service account's client id and secret traded at Red Hat SSO for an access
               token (client-credentials grant, scope ``api.console``), which is then exchanged
               for an ingress token at ``api.openshift.com``.
``offline-token`` an offline token traded for access tokens (``refresh_token`` grant, client
               ``rhsm-api``), then exchanged likewise.
============== ===============================================================================

Unlike the upstream exporter, which fetches credentials once at start-up, every provider
here re-reads them: on a schedule (``auth.refresh_seconds``), at once after the ingress
answered 401 to the token (:meth:`CredentialProvider.invalidate`), and, for the SSO access
token, before it expires. A provider that cannot get credentials raises
:class:`CredentialsError` with a message an operator can act on (never a secret, never an
upstream's text), counts the failure in the metrics and reports it in its
:class:`CredentialsStatus`; the collector then uploads nothing and the records stay pending.
When a scheduled refresh fails but the token in hand was never refused, the provider keeps
using it (and says so), trying again at most once a minute.

``base.py`` holds what every provider shares (the refresh, the status, secret files); one
module per source: ``manual.py``, ``openshift.py``, ``sso.py`` (``sso`` and ``offline-token``).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import aiohttp

from lightspeed.collector.credentials.base import (
    DEFAULT_IDENTITY,
    CredentialProvider,
    Credentials,
    CredentialsError,
    CredentialsStatus,
    read_secret_file,
)
from lightspeed.collector.credentials.manual import ManualProvider
from lightspeed.collector.credentials.openshift import OpenShiftProvider
from lightspeed.collector.credentials.sso import OfflineTokenProvider, SSOProvider, sso_endpoints
from lightspeed.config import DataCollectorConfig
from lightspeed.kube import KubeClient

if TYPE_CHECKING:
    from lightspeed.metrics import CollectorMetrics

__all__ = [
    "DEFAULT_IDENTITY",
    "CredentialProvider",
    "Credentials",
    "CredentialsError",
    "CredentialsStatus",
    "ManualProvider",
    "OfflineTokenProvider",
    "OpenShiftProvider",
    "SSOProvider",
    "create_provider",
    "read_secret_file",
    "sso_endpoints",
]


def create_provider(
    config: DataCollectorConfig,
    *,
    session: aiohttp.ClientSession,
    metrics: CollectorMetrics | None = None,
    kube: KubeClient | None = None,
) -> CredentialProvider:
    """The provider ``config.auth.mode`` names; ``kube`` replaces the Kubernetes API client
    ``openshift`` mode would make (tests, or an embedder that has one)."""
    mode = config.auth.mode
    if mode == "manual":
        return ManualProvider(config=config, metrics=metrics)
    if mode == "sso":
        return SSOProvider(config=config, session=session, metrics=metrics)
    if mode == "offline-token":
        return OfflineTokenProvider(config=config, session=session, metrics=metrics)
    if mode == "openshift":
        return OpenShiftProvider(config=config, kube=kube, metrics=metrics)
    raise CredentialsError(f"unknown credential mode {mode!r}")
