"""``openshift``: the cluster's pull secret and cluster id, from the Kubernetes API."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Final

from lightspeed.collector.credentials.base import CredentialProvider, Credentials, CredentialsError
from lightspeed.config import DataCollectorConfig
from lightspeed.kube import KubeClient, KubeConfigError, KubeCredentials, KubeError, KubeRejected

if TYPE_CHECKING:
    from lightspeed.metrics import CollectorMetrics

__all__ = ["PULL_SECRET_REGISTRY", "OpenShiftProvider", "pull_secret_token", "registry_auth"]

#: The registry whose pull-secret entry is the ingress token.
PULL_SECRET_REGISTRY: Final = "cloud.openshift.com"


class OpenShiftProvider(CredentialProvider):
    """The pull secret's ``cloud.openshift.com`` entry and the cluster id, from the Kubernetes API.

    ``kube`` is the API client to use; by default one is made on first use from
    ``auth.kubeconfig`` when set, else from the pod's service account (else the usual
    kubeconfig), so that a missing credential is a reported failure, not a crash.
    """

    mode = "openshift"

    def __init__(
        self,
        *,
        config: DataCollectorConfig,
        kube: KubeClient | None = None,
        metrics: CollectorMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        super().__init__(config=config, metrics=metrics, clock=clock)
        self.kube = kube
        self._own_kube = kube is None

    def _client(self) -> KubeClient:
        if self.kube is None:
            try:
                if self.auth.kubeconfig:
                    creds = KubeCredentials.from_kubeconfig(self.auth.kubeconfig)
                else:
                    creds = KubeCredentials.discover()
                self.kube = KubeClient(creds, timeout=self.auth.timeout_seconds)
            except KubeConfigError as exc:
                raise CredentialsError(f"no Kubernetes API credentials: {exc}") from None
        return self.kube

    async def fetch(self) -> Credentials:
        ns, name = self.auth.pull_secret_namespace, self.auth.pull_secret_name
        kube = self._client()
        try:
            secret = await kube.get_secret(ns, name)
            token = pull_secret_token(secret.get(".dockerconfigjson"), f"{ns}/{name}")
            cluster_id = await kube.cluster_id()
        except KubeRejected as exc:
            hint = (
                f": the service account needs get on secrets/{name} in {ns} and on"
                " clusterversions.config.openshift.io (see examples/kubernetes/rbac-openshift.yaml)"
                if exc.status == 403
                else ""
            )
            raise CredentialsError(f"{exc}{hint}") from None
        except KubeError as exc:
            raise CredentialsError(str(exc)) from None
        return Credentials(token=token, identity_id=cluster_id)

    async def aclose(self) -> None:
        if self.kube is not None and self._own_kube:
            await self.kube.aclose()
            self.kube = None


def pull_secret_token(dockerconfigjson: bytes | None, where: str) -> str:
    """The ``cloud.openshift.com`` auth of a pull secret's decoded ``.dockerconfigjson``."""
    if dockerconfigjson is None:
        raise CredentialsError(f"the secret {where} has no .dockerconfigjson")
    try:
        config = json.loads(dockerconfigjson)
    except ValueError:
        raise CredentialsError(f"the secret {where}: .dockerconfigjson is not JSON") from None
    token = registry_auth(config)
    if token is None:
        raise CredentialsError(
            f"the secret {where} has no auths[{PULL_SECRET_REGISTRY!r}].auth (is the cluster registered"
            " with Red Hat, and remote health reporting on?)"
        )
    return token


def registry_auth(config: Any) -> str | None:
    """``auths["cloud.openshift.com"].auth`` of a pull secret's (or the access-token exchange's)
    parsed JSON; ``None`` when it is missing or empty."""
    auths = config.get("auths") if isinstance(config, dict) else None
    entry = auths.get(PULL_SECRET_REGISTRY) if isinstance(auths, dict) else None
    token = entry.get("auth") if isinstance(entry, dict) else None
    return token if isinstance(token, str) and token else None
