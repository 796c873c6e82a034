"""Where the Kubernetes API is and how to talk to it: explicit settings, the pod's service
account, or a kubeconfig; and the TLS context they make."""

from __future__ import annotations

import base64
import os
import ssl
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final

import attrs
import yaml

from lightspeed.kube.errors import KubeConfigError

__all__ = ["DEFAULT_SERVICE_ACCOUNT_DIR", "KubeCredentials", "ssl_context"]

#: Where a pod's service-account credentials are mounted.
DEFAULT_SERVICE_ACCOUNT_DIR: Final = "/var/run/secrets/kubernetes.io/serviceaccount"


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


def ssl_context(creds: KubeCredentials) -> ssl.SSLContext | bool:
    """The TLS context for ``creds`` (``False`` for a plain-http server); ``KubeConfigError`` when
    the CA or the client certificate cannot be loaded."""
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
