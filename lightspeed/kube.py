"""A small async client of the Kubernetes API: the few calls lightspeed makes.

* ``TokenReview`` (who does this bearer token belong to),
* ``SubjectAccessReview`` on a non-resource path (may this user ``get`` ``/ls-access``),
* the OpenShift ``ClusterVersion`` named ``version`` (the cluster id),
* one ``Secret`` (the pull secret ``openshift-config/pull-secret``).

Credentials come from, in this order of preference, what the caller names explicitly
(server URL, CA file, token), the pod's service account (``KUBERNETES_SERVICE_HOST`` /
``KUBERNETES_SERVICE_PORT`` and ``/var/run/secrets/kubernetes.io/serviceaccount/``), or a
kubeconfig (``$KUBECONFIG``, else ``~/.kube/config``; its current context: bearer token,
client certificate, CA data or file). See :meth:`KubeCredentials.discover`.

Every failure is one of three exceptions, so callers can answer the right status:

* :class:`KubeUnavailable`: the API could not be reached, timed out, or answered 5xx/429;
  worth retrying later (an HTTP service answers 503);
* :class:`KubeRejected`: the API refused *our* credentials (401) or permissions (403);
  a configuration problem, not the caller's;
* :class:`KubeNotFound`: the object does not exist (404).

All derive from :class:`KubeError`. Messages never carry a token, and never the API's own
response text (which may echo request data); the status code and the ``reason`` field of a
Kubernetes ``Status`` object (a fixed CamelCase word such as ``NotFound``) are kept.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import os
import ssl
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import attrs
import yaml

from lightspeed.errors import LightspeedError

__all__ = [
    "DEFAULT_SERVICE_ACCOUNT_DIR",
    "KubeClient",
    "KubeConfigError",
    "KubeCredentials",
    "KubeError",
    "KubeNotFound",
    "KubeRejected",
    "KubeUnavailable",
    "KubeUser",
    "TokenReviewResult",
]

log = logging.getLogger("lightspeed.kube")

#: Where a pod's service-account credentials are mounted.
DEFAULT_SERVICE_ACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"
#: A projected service-account token is rotated by the kubelet; re-read it this often.
TOKEN_FILE_REREAD_SECONDS: Final = 60.0
_REASON_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


class KubeError(LightspeedError):
    """A Kubernetes API call failed. ``status`` is the HTTP status, ``None`` when there was none."""

    def __init__(self, message: str, *, status: int | None = None, reason: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class KubeUnavailable(KubeError):
    """The API cannot be reached, timed out, or answered 5xx or 429: retry later."""


class KubeRejected(KubeError):
    """The API refused our credentials (401) or our permissions (403), or rejected the request (4xx)."""


class KubeNotFound(KubeError):
    """The object asked for does not exist (404)."""


class KubeConfigError(LightspeedError):
    """No usable credentials: no in-cluster service account, no readable kubeconfig, or a broken one."""


@attrs.frozen(kw_only=True)
class KubeUser:
    """A user as the API describes it (``TokenReview`` ``status.user``)."""

    username: str
    uid: str = ""
    groups: tuple[str, ...] = ()
    extra: Mapping[str, tuple[str, ...]] = attrs.field(factory=dict)


@attrs.frozen(kw_only=True)
class TokenReviewResult:
    """``authenticated`` and, when true, the user. ``audiences`` as the API returned them."""

    authenticated: bool
    user: KubeUser | None = None
    audiences: tuple[str, ...] = ()


@attrs.frozen(kw_only=True)
class KubeCredentials:
    """Where the API is and how to talk to it.

    ``token`` is a fixed bearer token; ``token_file`` a file holding one, re-read every minute
    (service-account tokens are rotated). ``ca_file`` / ``ca_data`` (PEM) replace the system
    trust store; ``client_cert_file``/``client_key_file`` or their ``_data`` twins authenticate
    with a client certificate. ``verify`` false skips TLS verification (development only).
    ``in_cluster`` tells that these are a pod's own credentials.
    """

    server: str
    token: str | None = attrs.field(default=None, repr=False)
    token_file: str | None = None
    ca_file: str | None = None
    ca_data: bytes | None = attrs.field(default=None, repr=False)
    client_cert_file: str | None = None
    client_key_file: str | None = None
    client_cert_data: bytes | None = attrs.field(default=None, repr=False)
    client_key_data: bytes | None = attrs.field(default=None, repr=False)
    verify: bool = True
    in_cluster: bool = False

    @classmethod
    def in_cluster_config(
        cls, *, env: Mapping[str, str] | None = None, service_account_dir: str | os.PathLike[str] | None = None
    ) -> KubeCredentials:
        """The pod's own service account; :class:`KubeConfigError` when not running in a pod."""
        env = os.environ if env is None else env
        host, port = env.get("KUBERNETES_SERVICE_HOST"), env.get("KUBERNETES_SERVICE_PORT")
        if not host or not port:
            raise KubeConfigError("not running in a cluster (KUBERNETES_SERVICE_HOST/PORT are not set)")
        sa_dir = Path(service_account_dir if service_account_dir is not None else DEFAULT_SERVICE_ACCOUNT_DIR)
        token_file, ca_file = sa_dir / "token", sa_dir / "ca.crt"
        if not token_file.is_file():
            raise KubeConfigError(f"service-account token file {str(token_file)!r} does not exist")
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"  # an IPv6 address
        return cls(
            server=f"https://{host}:{port}",
            token_file=str(token_file),
            ca_file=str(ca_file) if ca_file.is_file() else None,
            in_cluster=True,
        )

    @classmethod
    def from_kubeconfig(
        cls, path: str | os.PathLike[str] | None = None, *, env: Mapping[str, str] | None = None
    ) -> KubeCredentials:
        """The current context of a kubeconfig (``path``, else ``$KUBECONFIG``, else ``~/.kube/config``).

        ``$KUBECONFIG`` may list several files (``:``-separated); contexts, clusters and users are
        looked up across all of them, the first definition of a name winning, as ``kubectl`` does.
        Bearer tokens (``token``, ``tokenFile``) and client certificates are supported; ``exec``
        and ``auth-provider`` plugins are not (a :class:`KubeConfigError` says so).
        """
        env = os.environ if env is None else env
        if path is not None:
            paths = [Path(path)]
        elif env.get("KUBECONFIG"):
            paths = [Path(p) for p in env["KUBECONFIG"].split(os.pathsep) if p]
        else:
            paths = [Path(env.get("HOME", str(Path.home()))) / ".kube" / "config"]
        docs: list[tuple[Path, dict[str, Any]]] = []
        for p in paths:
            if not p.is_file():
                continue
            try:
                data = yaml.safe_load(p.read_text(encoding="utf-8"))
            except (OSError, UnicodeDecodeError, yaml.YAMLError) as exc:
                raise KubeConfigError(f"cannot read kubeconfig {str(p)!r}: {type(exc).__name__}") from None
            if isinstance(data, dict):
                docs.append((p, data))
        if not docs:
            raise KubeConfigError(f"no kubeconfig found (looked at {', '.join(repr(str(p)) for p in paths)})")
        return _credentials_from_kubeconfig(docs)

    @classmethod
    def discover(
        cls,
        *,
        server: str | None = None,
        ca_file: str | None = None,
        token: str | None = None,
        verify: bool = True,
        env: Mapping[str, str] | None = None,
        service_account_dir: str | os.PathLike[str] | None = None,
        kubeconfig: str | os.PathLike[str] | None = None,
    ) -> KubeCredentials:
        """Credentials as the Lightspeed Core Stack finds them: in-cluster, else the kubeconfig;
        then ``server`` and ``ca_file``, when given, replace what was found.

        With ``server`` and ``token`` both given nothing is looked up.
        """
        if server is not None and token is not None:
            return cls(server=server, token=token, ca_file=ca_file, verify=verify)
        found: KubeCredentials | None = None
        problems: list[str] = []
        try:
            found = cls.in_cluster_config(env=env, service_account_dir=service_account_dir)
        except KubeConfigError as exc:
            problems.append(str(exc))
            try:
                found = cls.from_kubeconfig(kubeconfig, env=env)
            except KubeConfigError as exc2:
                problems.append(str(exc2))
        if found is None:
            if server is None:
                raise KubeConfigError("no Kubernetes credentials: " + "; ".join(problems))
            found = cls(server=server)
        changes: dict[str, Any] = {"verify": verify and found.verify}
        if server is not None:
            changes["server"] = server
        if token is not None:
            changes.update(token=token, token_file=None)
        if ca_file is not None:
            changes.update(ca_file=ca_file, ca_data=None)
        return attrs.evolve(found, **changes)


def _named(docs: list[tuple[Path, dict[str, Any]]], section: str, name: str) -> tuple[Path, dict[str, Any]] | None:
    for path, data in docs:
        for entry in data.get(section) or ():
            if isinstance(entry, dict) and entry.get("name") == name:
                inner = entry.get(section[:-1])  # clusters -> cluster, users -> user, contexts -> context
                return path, inner if isinstance(inner, dict) else {}
    return None


def _credentials_from_kubeconfig(docs: list[tuple[Path, dict[str, Any]]]) -> KubeCredentials:
    current = next((d.get("current-context") for _, d in docs if d.get("current-context")), None)
    if not current:
        raise KubeConfigError("the kubeconfig has no current-context")
    ctx = _named(docs, "contexts", str(current))
    if ctx is None:
        raise KubeConfigError(f"the kubeconfig's current-context {current!r} is not defined")
    _, context = ctx
    cluster_entry = _named(docs, "clusters", str(context.get("cluster", "")))
    if cluster_entry is None:
        raise KubeConfigError(f"context {current!r}: cluster {context.get('cluster')!r} is not defined")
    cluster_path, cluster = cluster_entry
    server = cluster.get("server")
    if not isinstance(server, str) or not server:
        raise KubeConfigError(f"context {current!r}: the cluster has no server")

    def relative(base: Path, value: Any) -> str | None:
        if not isinstance(value, str) or not value:
            return None
        p = Path(value).expanduser()
        return str(p if p.is_absolute() else base.parent / p)

    def data(value: Any, what: str) -> bytes | None:
        if value is None:
            return None
        try:
            return base64.b64decode(str(value), validate=True)
        except ValueError:
            raise KubeConfigError(f"context {current!r}: {what} is not valid base64") from None

    fields: dict[str, Any] = {
        "server": server,
        "verify": not bool(cluster.get("insecure-skip-tls-verify", False)),
        "ca_file": relative(cluster_path, cluster.get("certificate-authority")),
        "ca_data": data(cluster.get("certificate-authority-data"), "certificate-authority-data"),
    }
    user_name = context.get("user")
    if user_name:
        user_entry = _named(docs, "users", str(user_name))
        if user_entry is None:
            raise KubeConfigError(f"context {current!r}: user {user_name!r} is not defined")
        user_path, user = user_entry
        if "exec" in user or "auth-provider" in user:
            raise KubeConfigError(
                f"context {current!r}: user {user_name!r} uses an exec or auth-provider plugin, which is not"
                " supported; give a token or a client certificate"
            )
        fields.update(
            token=user.get("token") if isinstance(user.get("token"), str) else None,
            token_file=relative(user_path, user.get("tokenFile")),
            client_cert_file=relative(user_path, user.get("client-certificate")),
            client_key_file=relative(user_path, user.get("client-key")),
            client_cert_data=data(user.get("client-certificate-data"), "client-certificate-data"),
            client_key_data=data(user.get("client-key-data"), "client-key-data"),
        )
    return KubeCredentials(**fields)


def _ssl_context(creds: KubeCredentials) -> ssl.SSLContext | bool:
    if not creds.server.startswith("https://"):
        return False  # plain http (a local proxy such as `kubectl proxy`)
    try:
        if not creds.verify:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
        elif creds.ca_data is not None:
            ctx = ssl.create_default_context(cadata=creds.ca_data.decode("ascii"))
        elif creds.ca_file is not None:
            ctx = ssl.create_default_context(cafile=creds.ca_file)
        else:
            ctx = ssl.create_default_context()
    except (OSError, ssl.SSLError, UnicodeDecodeError, ValueError) as exc:
        raise KubeConfigError(f"cannot load the Kubernetes API's CA certificate: {exc}") from None
    _load_client_cert(ctx, creds)
    return ctx


def _load_client_cert(ctx: ssl.SSLContext, creds: KubeCredentials) -> None:
    cert_file, key_file = creds.client_cert_file, creds.client_key_file
    if creds.client_cert_data is None and cert_file is None:
        return
    try:
        if creds.client_cert_data is None and creds.client_key_data is None:
            ctx.load_cert_chain(str(cert_file), key_file)
            return
        # ssl wants files: write the PEM data to a private temporary directory, load, delete.
        with tempfile.TemporaryDirectory(prefix="lightspeed-kube-") as tmp:
            cert_path, key_path = Path(tmp) / "cert.pem", Path(tmp) / "key.pem"
            cert_path.write_bytes(creds.client_cert_data or Path(str(cert_file)).read_bytes())
            if creds.client_key_data is not None:
                fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
                with os.fdopen(fd, "wb") as f:
                    f.write(creds.client_key_data)
                ctx.load_cert_chain(str(cert_path), str(key_path))
            else:
                ctx.load_cert_chain(str(cert_path), key_file)
    except (OSError, ssl.SSLError) as exc:
        raise KubeConfigError(f"cannot load the Kubernetes client certificate: {type(exc).__name__}") from None


class KubeClient:
    """The calls lightspeed makes to the Kubernetes API, each bounded by ``timeout`` seconds.

    Create it anywhere; its HTTP session is opened on first use in the running event loop and
    closed by :meth:`aclose`. Safe to share between concurrent tasks.
    """

    def __init__(self, credentials: KubeCredentials, *, timeout: float = 5.0) -> None:
        if not credentials.server.startswith(("https://", "http://")):
            raise KubeConfigError(f"the Kubernetes API server must be an https:// URL, got {credentials.server!r}")
        self.credentials = credentials
        self.timeout = timeout
        self._ssl = _ssl_context(credentials)  # fail at start, not at the first request
        self._session: aiohttp.ClientSession | None = None
        self._file_token: str | None = None
        self._file_token_read = -math.inf

    @property
    def server(self) -> str:
        return self.credentials.server.rstrip("/")

    @property
    def in_cluster(self) -> bool:
        return self.credentials.in_cluster

    async def aclose(self) -> None:
        if self._session is not None:
            await self._session.close()
            self._session = None

    async def __aenter__(self) -> KubeClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ the calls

    async def token_review(self, token: str, *, audiences: tuple[str, ...] = ()) -> TokenReviewResult:
        """Ask the API who ``token`` belongs to (``authentication.k8s.io/v1`` ``TokenReview``)."""
        spec: dict[str, Any] = {"token": token}
        if audiences:
            spec["audiences"] = list(audiences)
        body = {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec}
        answer = await self._request("POST", "/apis/authentication.k8s.io/v1/tokenreviews", body, what="TokenReview")
        status = answer.get("status")
        if not isinstance(status, dict) or status.get("authenticated") is not True:
            return TokenReviewResult(authenticated=False)
        user = status.get("user")
        if not isinstance(user, dict) or not isinstance(user.get("username"), str) or not user["username"]:
            return TokenReviewResult(authenticated=False)  # nothing to identify the caller by
        extra_raw = user.get("extra")
        extra = {}
        if isinstance(extra_raw, dict):
            extra = {str(k): tuple(str(x) for x in v) for k, v in extra_raw.items() if isinstance(v, list)}
        groups = user.get("groups")
        groups = groups if isinstance(groups, list) else []
        audiences_out = status.get("audiences")
        audiences_out = audiences_out if isinstance(audiences_out, list) else []
        return TokenReviewResult(
            authenticated=True,
            user=KubeUser(
                username=user["username"],
                uid=str(user.get("uid") or ""),
                groups=tuple(str(g) for g in groups),
                extra=extra,
            ),
            audiences=tuple(str(a) for a in audiences_out),
        )

    async def subject_access_review(self, user: KubeUser, *, path: str, verb: str = "get") -> bool:
        """May ``user`` do ``verb`` on the non-resource URL ``path``? (``SubjectAccessReview``)

        The user's uid, groups and extra (OpenShift token scopes live there) are all passed, so
        a scoped token is judged by its scopes.
        """
        spec: dict[str, Any] = {
            "user": user.username,
            "groups": list(user.groups),
            "nonResourceAttributes": {"path": path, "verb": verb},
        }
        if user.uid:
            spec["uid"] = user.uid
        if user.extra:
            spec["extra"] = {k: list(v) for k, v in user.extra.items()}
        body = {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec}
        answer = await self._request(
            "POST", "/apis/authorization.k8s.io/v1/subjectaccessreviews", body, what="SubjectAccessReview"
        )
        status = answer.get("status")
        return isinstance(status, dict) and status.get("allowed") is True

    async def cluster_version(self) -> dict[str, Any]:
        """The OpenShift ``ClusterVersion`` named ``version`` (``config.openshift.io/v1``)."""
        return await self._request(
            "GET", "/apis/config.openshift.io/v1/clusterversions/version", None, what="ClusterVersion"
        )

    async def cluster_id(self) -> str:
        """``spec.clusterID`` of the cluster version; :class:`KubeError` when it is missing."""
        version = await self.cluster_version()
        spec = version.get("spec")
        cluster_id = spec.get("clusterID") if isinstance(spec, dict) else None
        if not isinstance(cluster_id, str) or not cluster_id.strip():
            raise KubeError("the ClusterVersion 'version' has no spec.clusterID")
        return cluster_id

    async def get_secret(self, namespace: str, name: str) -> dict[str, bytes]:
        """The decoded ``data`` of a ``Secret`` (keys to bytes)."""
        path = f"/api/v1/namespaces/{quote(namespace, safe='')}/secrets/{quote(name, safe='')}"
        answer = await self._request("GET", path, None, what=f"Secret {namespace}/{name}")
        raw = answer.get("data") or {}
        if not isinstance(raw, dict):
            raise KubeError(f"Secret {namespace}/{name}: data is not a mapping")
        out: dict[str, bytes] = {}
        for key, value in raw.items():
            try:
                out[str(key)] = base64.b64decode(str(value), validate=True)
            except ValueError:
                raise KubeError(f"Secret {namespace}/{name}: key {key!r} is not valid base64") from None
        return out

    # ------------------------------------------------------------------ plumbing

    def _session_for_loop(self) -> aiohttp.ClientSession:
        if self._session is None or self._session.closed:
            self._session = aiohttp.ClientSession(
                connector=aiohttp.TCPConnector(ssl=self._ssl, limit=32),
                timeout=aiohttp.ClientTimeout(total=self.timeout, connect=min(self.timeout, 5.0)),
                headers={"Accept": "application/json"},
                trust_env=False,
            )
        return self._session

    async def _bearer(self) -> str | None:
        creds = self.credentials
        if creds.token is not None:
            return creds.token
        if creds.token_file is None:
            return None
        now = time.monotonic()
        if self._file_token is None or now - self._file_token_read >= TOKEN_FILE_REREAD_SECONDS:
            try:
                text = await asyncio.to_thread(Path(creds.token_file).read_text, encoding="utf-8")
            except (OSError, UnicodeDecodeError) as exc:
                if self._file_token is None:
                    raise KubeRejected(
                        f"cannot read the token file {creds.token_file!r}: {type(exc).__name__}"
                    ) from None
                log.warning("cannot re-read the token file %s (%s); keeping the last token", creds.token_file, exc)
            else:
                self._file_token = text.strip()
            self._file_token_read = now
        return self._file_token

    async def _request(self, method: str, path: str, body: Any, *, what: str) -> dict[str, Any]:
        headers: dict[str, str] = {}
        bearer = await self._bearer()
        if bearer:
            headers["Authorization"] = f"Bearer {bearer}"
        url = self.server + path
        try:
            async with self._session_for_loop().request(method, url, json=body, headers=headers) as resp:
                status = resp.status
                try:
                    answer = await resp.json(content_type=None)
                except (ValueError, aiohttp.ContentTypeError):
                    answer = None
        except TimeoutError:
            raise KubeUnavailable(f"{what}: the Kubernetes API did not answer within {self.timeout:g}s") from None
        except aiohttp.ClientSSLError as exc:
            raise KubeUnavailable(f"{what}: TLS with the Kubernetes API failed ({type(exc).__name__})") from None
        except aiohttp.ClientError as exc:
            raise KubeUnavailable(f"{what}: cannot reach the Kubernetes API ({type(exc).__name__})") from None
        if 200 <= status < 300:
            if not isinstance(answer, dict):
                raise KubeUnavailable(
                    f"{what}: the Kubernetes API answered {status} without a JSON object", status=status
                )
            return answer
        reason = _status_reason(answer)
        detail = f"{what}: the Kubernetes API answered {status}" + (f" {reason}" if reason else "")
        if status >= 500 or status == 429:
            raise KubeUnavailable(detail, status=status, reason=reason)
        if status == 404:
            raise KubeNotFound(detail, status=status, reason=reason)
        raise KubeRejected(detail, status=status, reason=reason)


def _status_reason(answer: Any) -> str | None:
    """The ``reason`` of a Kubernetes ``Status`` body when it is a plain CamelCase word."""
    if isinstance(answer, dict):
        reason = answer.get("reason")
        if isinstance(reason, str) and 0 < len(reason) <= 64 and set(reason) <= _REASON_CHARS:
            return reason
    return None
