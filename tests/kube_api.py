"""A Kubernetes API stand-in for tests: a real HTTPS server on 127.0.0.1 with a CA made per test.

No Kubernetes API server can be installed from the package registries, so this speaks the
few parts of its wire protocol lightspeed uses, TLS included:

* ``POST /apis/authentication.k8s.io/v1/tokenreviews`` (``TokenReview``),
* ``POST /apis/authorization.k8s.io/v1/subjectaccessreviews`` (``SubjectAccessReview``,
  non-resource attributes),
* ``GET /apis/config.openshift.io/v1/clusterversions/version`` (the OpenShift cluster version),
* ``GET /api/v1/namespaces/{namespace}/secrets/{name}`` (e.g. ``openshift-config/pull-secret``).

Errors are Kubernetes ``Status`` objects. Every client must present a bearer token listed in
``client_tokens`` (401 otherwise), as the real server requires of lightspeed's service account.

Use the ``kube_api`` fixture (``tests/conftest.py``), or::

    async with KubeApiStandIn(tmp_path) as api:
        api.add_user("alice-token", username="alice", uid="uid-alice", groups=["devs"])
        api.allow("alice")                      # SubjectAccessReview: get /ls-access
        creds = api.credentials()               # explicit server + CA + client token
        env, sa_dir = api.in_cluster(tmp_path)  # KUBERNETES_SERVICE_* and a service-account dir
        kubeconfig = api.kubeconfig(tmp_path)   # a kubeconfig file with a current context
        ...
        assert api.calls_to("tokenreviews") == 1

Fault modes (``api.fault = ...``): ``"error"`` answers 500 to everything, ``"hang"`` never
answers (until the server closes), ``"reject"`` answers 401 to every client token,
``"forbid"`` answers 403. ``fault_paths`` limits a fault to paths containing one of its strings.
"""

from __future__ import annotations

import asyncio
import base64
import json
import ssl
from pathlib import Path
from typing import Any

import attrs
import trustme
import yaml
from aiohttp import web

from lightspeed.kube import KubeCredentials

__all__ = ["Call", "KubeApiStandIn", "StandInUser"]

DEFAULT_CLIENT_TOKEN = "sa-token-of-lightspeed"
_BODY: web.RequestKey[Any] = web.RequestKey("kube_api.body", object)


@attrs.define
class StandInUser:
    username: str
    uid: str = ""
    groups: list[str] = attrs.field(factory=list)
    extra: dict[str, list[str]] = attrs.field(factory=dict)


@attrs.frozen
class Call:
    """One request the stand-in received: method, path, parsed JSON body, the client's bearer token."""

    method: str
    path: str
    body: Any
    client_token: str | None


class KubeApiStandIn:
    """The stand-in server; start with ``async with`` or :meth:`start`, stop with :meth:`aclose`."""

    def __init__(self, workdir: Path, *, cluster_id: str = "5c1f7f2e-0000-4b8e-9d6a-c1a55e7e1d00") -> None:
        self.workdir = workdir
        self.ca = trustme.CA()
        self.ca_path = workdir / "kube-ca.crt"
        self.ca.cert_pem.write_to_path(str(self.ca_path))
        self.client_tokens: set[str] = {DEFAULT_CLIENT_TOKEN}
        #: TokenReview: token -> user. Tokens not listed are not authenticated.
        self.users: dict[str, StandInUser] = {}
        #: SubjectAccessReview: (username or ``group:<name>``, path, verb) that are allowed.
        self.grants: set[tuple[str, str, str]] = set()
        self.cluster_id: str | None = cluster_id
        self.secrets: dict[tuple[str, str], dict[str, Any]] = {}
        self.calls: list[Call] = []
        self.fault: str | None = None
        self.fault_paths: tuple[str, ...] = ()
        self.url = ""
        self._runner: web.AppRunner | None = None
        self._hanging: list[asyncio.Event] = []

    # ------------------------------------------------------------------ set-up helpers

    def add_user(
        self,
        token: str,
        *,
        username: str,
        uid: str = "",
        groups: list[str] | None = None,
        extra: dict[str, list[str]] | None = None,
    ) -> StandInUser:
        user = StandInUser(username=username, uid=uid, groups=list(groups or []), extra=dict(extra or {}))
        self.users[token] = user
        return user

    def allow(self, who: str, *, path: str = "/ls-access", verb: str = "get") -> None:
        """Grant ``who`` (a username, or ``group:<name>``) ``verb`` on the non-resource ``path``."""
        self.grants.add((who, path, verb))

    def set_pull_secret(self, auths: dict[str, Any]) -> None:
        """The secret ``openshift-config/pull-secret`` with ``.dockerconfigjson`` = ``{"auths": auths}``."""
        self.set_secret(
            "openshift-config",
            "pull-secret",
            {".dockerconfigjson": json.dumps({"auths": auths}).encode()},
            type_="kubernetes.io/dockerconfigjson",
        )

    def set_secret(self, namespace: str, name: str, data: dict[str, bytes], *, type_: str = "Opaque") -> None:
        self.secrets[(namespace, name)] = {
            "apiVersion": "v1",
            "kind": "Secret",
            "metadata": {"name": name, "namespace": namespace},
            "type": type_,
            "data": {k: base64.b64encode(v).decode() for k, v in data.items()},
        }

    def calls_to(self, fragment: str) -> int:
        """How many calls had ``fragment`` in their path."""
        return sum(1 for c in self.calls if fragment in c.path)

    def credentials(self, *, token: str = DEFAULT_CLIENT_TOKEN) -> KubeCredentials:
        return KubeCredentials(server=self.url, token=token, ca_file=str(self.ca_path))

    def in_cluster(self, directory: Path, *, token: str = DEFAULT_CLIENT_TOKEN) -> tuple[dict[str, str], Path]:
        """An environment and a service-account directory as a pod would have them."""
        sa_dir = directory / "serviceaccount"
        sa_dir.mkdir(parents=True, exist_ok=True)
        (sa_dir / "token").write_text(token + "\n")
        (sa_dir / "ca.crt").write_bytes(self.ca.cert_pem.bytes())
        (sa_dir / "namespace").write_text("lightspeed\n")
        host, _, port = self.url.removeprefix("https://").rpartition(":")
        return {"KUBERNETES_SERVICE_HOST": host, "KUBERNETES_SERVICE_PORT": port}, sa_dir

    def kubeconfig(self, directory: Path, *, token: str = DEFAULT_CLIENT_TOKEN, embed_ca: bool = True) -> Path:
        cluster: dict[str, Any] = {"server": self.url}
        if embed_ca:
            cluster["certificate-authority-data"] = base64.b64encode(self.ca.cert_pem.bytes()).decode()
        else:
            cluster["certificate-authority"] = str(self.ca_path)
        doc = {
            "apiVersion": "v1",
            "kind": "Config",
            "current-context": "test",
            "contexts": [{"name": "test", "context": {"cluster": "standin", "user": "lightspeed"}}],
            "clusters": [{"name": "standin", "cluster": cluster}],
            "users": [{"name": "lightspeed", "user": {"token": token}}],
        }
        path = directory / "kubeconfig"
        path.write_text(yaml.safe_dump(doc))
        return path

    # ------------------------------------------------------------------ lifecycle

    async def start(self) -> str:
        app = web.Application()
        app.router.add_post("/apis/authentication.k8s.io/v1/tokenreviews", self._token_review)
        app.router.add_post("/apis/authorization.k8s.io/v1/subjectaccessreviews", self._access_review)
        app.router.add_get("/apis/config.openshift.io/v1/clusterversions/{name}", self._cluster_version)
        app.router.add_get("/api/v1/namespaces/{namespace}/secrets/{name}", self._secret)
        app.middlewares.append(self._gate)
        ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        self.ca.issue_cert("127.0.0.1", "localhost").configure_cert(ctx)
        self._runner = web.AppRunner(app, access_log=None, shutdown_timeout=0.1)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=ctx)
        await site.start()
        port = self._runner.addresses[0][1]
        self.url = f"https://127.0.0.1:{port}"
        return self.url

    async def aclose(self) -> None:
        for event in self._hanging:
            event.set()
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None

    async def __aenter__(self) -> KubeApiStandIn:
        await self.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()

    # ------------------------------------------------------------------ the server

    @staticmethod
    def _status(code: int, reason: str, message: str) -> web.Response:
        body = {
            "kind": "Status",
            "apiVersion": "v1",
            "metadata": {},
            "status": "Failure",
            "message": message,
            "reason": reason,
            "code": code,
        }
        return web.json_response(body, status=code)

    @web.middleware
    async def _gate(self, request: web.Request, handler: Any) -> web.StreamResponse:
        header = request.headers.get("Authorization", "")
        token = header[7:] if header.startswith("Bearer ") else None
        body: Any = None
        if request.can_read_body:
            try:
                body = await request.json()
            except ValueError:
                body = "<not json>"
        self.calls.append(Call(request.method, request.path, body, token))
        if self.fault and (not self.fault_paths or any(p in request.path for p in self.fault_paths)):
            if self.fault == "error":
                return self._status(500, "InternalError", "an internal error echoing secret-looking text")
            if self.fault == "hang":
                event = asyncio.Event()
                self._hanging.append(event)
                await event.wait()
                return self._status(503, "ServiceUnavailable", "shutting down")
            if self.fault == "reject":
                return self._status(401, "Unauthorized", "Unauthorized")
            if self.fault == "forbid":
                return self._status(403, "Forbidden", "forbidden: User cannot create resource")
        if token not in self.client_tokens:
            return self._status(401, "Unauthorized", "Unauthorized")
        request[_BODY] = body
        response: web.StreamResponse = await handler(request)
        return response

    async def _token_review(self, request: web.Request) -> web.Response:
        body = request[_BODY]
        spec = body.get("spec") if isinstance(body, dict) else None
        if not isinstance(spec, dict) or not isinstance(spec.get("token"), str):
            return self._status(400, "BadRequest", "spec.token is required")
        user = self.users.get(spec["token"])
        status: dict[str, Any]
        if user is None:
            status = {"authenticated": False, "error": "token lookup failed: the token is not valid"}
        else:
            status = {"authenticated": True, "user": attrs.asdict(user), "audiences": spec.get("audiences") or []}
        return web.json_response(
            {"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": spec, "status": status},
            status=201,
        )

    async def _access_review(self, request: web.Request) -> web.Response:
        body = request[_BODY]
        spec = body.get("spec") if isinstance(body, dict) else None
        attrs_ = spec.get("nonResourceAttributes") if isinstance(spec, dict) else None
        if not isinstance(spec, dict) or not isinstance(attrs_, dict):
            return self._status(400, "BadRequest", "nonResourceAttributes are required for this stand-in")
        who = [str(spec.get("user", ""))] + [f"group:{g}" for g in spec.get("groups") or []]
        allowed = any((w, attrs_.get("path"), attrs_.get("verb")) in self.grants for w in who)
        status = {"allowed": allowed} if allowed else {"allowed": False, "reason": "no RBAC policy matched"}
        return web.json_response(
            {"apiVersion": "authorization.k8s.io/v1", "kind": "SubjectAccessReview", "spec": spec, "status": status},
            status=201,
        )

    async def _cluster_version(self, request: web.Request) -> web.Response:
        if request.match_info["name"] != "version" or self.cluster_id is None:
            return self._status(404, "NotFound", "clusterversions.config.openshift.io not found")
        return web.json_response(
            {
                "apiVersion": "config.openshift.io/v1",
                "kind": "ClusterVersion",
                "metadata": {"name": "version"},
                "spec": {"channel": "stable-4.16", "clusterID": self.cluster_id},
                "status": {"desired": {"version": "4.16.3"}},
            }
        )

    async def _secret(self, request: web.Request) -> web.Response:
        key = (request.match_info["namespace"], request.match_info["name"])
        if key not in self.secrets:
            return self._status(404, "NotFound", f'secrets "{key[1]}" not found')
        return web.json_response(self.secrets[key])
