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
"""

from __future__ import annotations

import abc
import asyncio
import json
import logging
import re
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final
from urllib.parse import urlsplit

import aiofiles
import aiohttp
import attrs
import jwt

from lightspeed.config import CollectorAuthConfig, DataCollectorConfig
from lightspeed.errors import LightspeedError
from lightspeed.kube import KubeClient, KubeConfigError, KubeCredentials, KubeError, KubeRejected
from lightspeed.masking import LOG_SECRETS

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
    "sso_endpoints",
]

log = logging.getLogger("lightspeed.collector.credentials")

#: The identity when nothing else gives one (the upstream exporter's default).
DEFAULT_IDENTITY: Final = "lightspeed-exporter"
#: The registry whose pull-secret entry is the ingress token.
PULL_SECRET_REGISTRY: Final = "cloud.openshift.com"
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
#: After a failed refresh, how long to keep using a token that was never refused before trying again.
RETRY_HOLD_SECONDS: Final = 60.0
#: The SSO access token is replaced this long before it expires (a quarter of its life when shorter).
SSO_EXPIRY_MARGIN_SECONDS: Final = 60.0
_OAUTH_ERROR_RE: Final = re.compile(r"[a-z_]{1,64}")
_MAX_ANSWER: Final = 1024 * 1024


class CredentialsError(LightspeedError):
    """No credentials could be had; the message says why and what to check (never a secret)."""


@attrs.frozen(kw_only=True)
class Credentials:
    """An ingress token and the identity that goes into the User-Agent."""

    token: str = attrs.field(repr=False)
    identity_id: str


def _iso(ts: float | None) -> str | None:
    if ts is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))


@attrs.define(kw_only=True)
class CredentialsStatus:
    """What the provider last managed; shown in ``/readiness``."""

    mode: str
    #: ``None`` until the first attempt; then whether usable credentials are in hand.
    available: bool | None = None
    last_success: float | None = None
    last_failure: float | None = None
    #: Our own words on the last failure (no upstream text, no secret); ``None`` after a success.
    last_error: str | None = None
    consecutive_failures: int = 0
    #: A refresh failed, but a token that was never refused is still used.
    stale: bool = False

    @property
    def state(self) -> str:
        if self.available is None:
            return "unknown"
        if not self.available:
            return "failing"
        return "stale" if self.stale else "ok"

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "status": self.state,
            "consecutive_failures": self.consecutive_failures,
            "last_success": _iso(self.last_success),
            "last_failure": _iso(self.last_failure),
            "last_error": self.last_error,
        }


class CredentialProvider(abc.ABC):
    """Gives the collector an ingress token and an identity; see the module's docstring.

    One instance per collector, used from one event loop; :meth:`get` may be called
    concurrently and then shares one fetch.
    """

    mode: ClassVar[str] = ""

    def __init__(
        self,
        *,
        config: DataCollectorConfig,
        metrics: CollectorMetrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.config = config
        self.auth = config.auth
        self.metrics = metrics
        self.clock = clock
        self.status = CredentialsStatus(mode=self.mode)
        self._lock = asyncio.Lock()
        self._current: Credentials | None = None
        self._refused = False
        self._refresh_at = 0.0
        if metrics is not None:
            metrics.credentials_refreshes.labels(mode=self.mode, outcome="success")
            metrics.credentials_refreshes.labels(mode=self.mode, outcome="failure")
            metrics.credentials_available.labels(mode=self.mode).set(0)

    @abc.abstractmethod
    async def fetch(self) -> Credentials:
        """Get fresh credentials from the source; raise :class:`CredentialsError` when that fails."""

    def refresh_interval(self) -> float:
        """Seconds a fetched token is used before it is fetched again (a 401 cuts it short)."""
        return self.auth.refresh_seconds

    async def get(self) -> Credentials:
        """The credentials to upload with, fetched first when none are in hand, when the last
        ones were refused, or when they are due for a refresh.

        Raises :class:`CredentialsError` when no usable credentials can be had.
        """
        async with self._lock:
            now = self.clock()
            current = self._current
            if current is not None and not self._refused and now < self._refresh_at:
                return current
            try:
                fresh = await self.fetch()
                LOG_SECRETS.add(fresh.token)  # never in a log line, whoever would write it
            except CredentialsError as exc:
                self._failed(str(exc))
                if current is not None and not self._refused:
                    self._refresh_at = now + min(RETRY_HOLD_SECONDS, self.refresh_interval())
                    self.status.stale = True
                    self.status.available = True
                    self._set_available(True)
                    log.warning(
                        "%s credentials: refresh failed (%s); still using the current token, which the ingress"
                        " has not refused",
                        self.mode,
                        exc,
                    )
                    return current
                raise
            if current is not None and fresh.token != current.token:
                log.info("%s credentials: a new ingress token is in use (identity %s)", self.mode, fresh.identity_id)
            elif current is None:
                log.info("%s credentials: ingress token obtained (identity %s)", self.mode, fresh.identity_id)
            self._current = fresh
            self._refused = False
            self._refresh_at = self.clock() + self.refresh_interval()
            self._succeeded()
            return fresh

    def invalidate(self, token: str) -> None:
        """The ingress refused ``token`` (401): the next :meth:`get` fetches anew.

        A no-op when ``token`` is no longer the current one (another upload already
        caused a refresh).
        """
        if self._current is not None and self._current.token == token and not self._refused:
            log.warning("%s credentials: the ingress refused the token (401); fetching new credentials", self.mode)
            self._refused = True

    async def aclose(self) -> None:  # noqa: B027 - most providers hold nothing to release
        """Release what the provider holds (connections); idempotent."""

    # ------------------------------------------------------------------ bookkeeping

    def _set_available(self, value: bool) -> None:
        if self.metrics is not None:
            self.metrics.credentials_available.labels(mode=self.mode).set(1 if value else 0)

    def _succeeded(self) -> None:
        now = time.time()
        st = self.status
        st.available, st.stale, st.last_success, st.last_error, st.consecutive_failures = True, False, now, None, 0
        self._set_available(True)
        if self.metrics is not None:
            self.metrics.credentials_refreshes.labels(mode=self.mode, outcome="success").inc()
            self.metrics.credentials_last_success.labels(mode=self.mode).set(now)

    def _failed(self, message: str) -> None:
        st = self.status
        st.available = False
        st.last_failure = time.time()
        st.last_error = message
        st.consecutive_failures += 1
        self._set_available(False)
        if self.metrics is not None:
            self.metrics.credentials_refreshes.labels(mode=self.mode, outcome="failure").inc()
        log.error("%s credentials: cannot get an ingress token: %s; records stay pending", self.mode, message)

    def __repr__(self) -> str:
        return f"<{type(self).__name__} mode={self.mode} status={self.status.state}>"


async def read_secret_file(path: str, what: str) -> str:
    """The stripped content of a mounted secret file, read off the event loop (decision ``io-01``)."""

    try:
        async with aiofiles.open(path, encoding="utf-8") as fh:
            value = (await fh.read()).strip()
    except (OSError, UnicodeDecodeError) as exc:
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else type(exc).__name__
        raise CredentialsError(f"cannot read {what} from {path!r}: {reason}") from None
    if not value:
        raise CredentialsError(f"{what} file {path!r} is empty")
    LOG_SECRETS.add(value)
    return value


async def _secret(value: str | None, path: str | None, what: str) -> str:
    if path:
        return await read_secret_file(path, what)
    if not value:
        raise CredentialsError(f"{what} is not configured")
    return value


class ManualProvider(CredentialProvider):
    """``ingress_server_auth_token``, or its file read again before every upload (rotation works)."""

    mode = "manual"

    def refresh_interval(self) -> float:
        # A file is cheap to read: read it for every upload, so a rotated secret is used at once.
        return 0.0 if self.config.ingress_server_auth_token_path else float("inf")

    async def fetch(self) -> Credentials:
        token = await _secret(
            self.config.ingress_server_auth_token,
            self.config.ingress_server_auth_token_path,
            "the ingress token (ingress_server_auth_token_path)"
            if self.config.ingress_server_auth_token_path
            else "the ingress token (ingress_server_auth_token)",
        )
        return Credentials(token=token, identity_id=self.config.identity_id or DEFAULT_IDENTITY)


# --------------------------------------------------------------------------- openshift


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
    auths = config.get("auths") if isinstance(config, dict) else None
    entry = auths.get(PULL_SECRET_REGISTRY) if isinstance(auths, dict) else None
    token = entry.get("auth") if isinstance(entry, dict) else None
    if not isinstance(token, str) or not token:
        raise CredentialsError(
            f"the secret {where} has no auths[{PULL_SECRET_REGISTRY!r}].auth (is the cluster registered"
            " with Red Hat, and remote health reporting on?)"
        )
    return token


# --------------------------------------------------------------------------- SSO


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
        auths = answer.get("auths") if isinstance(answer, dict) else None
        entry = auths.get(PULL_SECRET_REGISTRY) if isinstance(auths, dict) else None
        token = entry.get("auth") if isinstance(entry, dict) else None
        if not isinstance(token, str) or not token:
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
            "client_id": await _secret(auth.client_id, auth.client_id_path, "the SSO client id (client_id)"),
            "client_secret": await _secret(
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
            "refresh_token": await _secret(auth.offline_token, auth.offline_token_path, "the offline token"),
        }


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
