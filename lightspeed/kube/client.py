"""The calls lightspeed makes to the Kubernetes API, and what they answer."""

from __future__ import annotations

import asyncio
import base64
import logging
import math
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Final
from urllib.parse import quote

import aiohttp
import attrs

from lightspeed.kube.credentials import KubeCredentials, ssl_context
from lightspeed.kube.errors import KubeConfigError, KubeError, KubeNotFound, KubeRejected, KubeUnavailable

__all__ = ["KubeClient", "KubeUser", "TokenReviewResult"]

log = logging.getLogger("lightspeed.kube")

#: A projected service-account token is rotated by the kubelet; re-read it this often.
TOKEN_FILE_REREAD_SECONDS: Final = 60.0
_REASON_CHARS: Final = frozenset("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz")


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
        self._ssl = ssl_context(credentials)  # fail at start, not at the first request
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
