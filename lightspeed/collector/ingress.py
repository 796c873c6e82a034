"""The upload client for Red Hat's insights ingress.

One ``POST`` of ``multipart/form-data`` with a single part named ``file`` (a ``.tar.gz``
whose content type is ``application/vnd.redhat.{service}.periodic+tar``), a Bearer token
and the operator's User-Agent. Success is ``202`` with a JSON body holding ``request_id``;
the body is parsed as JSON whatever its ``Content-Type`` says (the real ingress labels it
``text/plain``). The archive is streamed from its file, never read into memory.
"""

from __future__ import annotations

import asyncio
import email.utils
import enum
import json
import logging
import math
import time
from pathlib import Path
from typing import Final

import aiohttp
import attrs

from lightspeed.collector.credentials import CredentialProvider, Credentials, CredentialsError, ManualProvider
from lightspeed.config import DataCollectorConfig

__all__ = ["IngressClient", "UploadOutcome", "UploadResult", "parse_retry_after"]

log = logging.getLogger("lightspeed.collector")

#: Longest excerpt of a failure's response body put in a log line.
BODY_EXCERPT_CHARS: Final = 500
_MAX_BODY_READ: Final = 64 * 1024
_REJECTED: Final = frozenset({400, 401, 403, 415})


class UploadOutcome(enum.StrEnum):
    SUCCESS = "success"
    #: Worth retrying as is: connection errors, timeouts, 429, 5xx.
    TRANSIENT = "transient"
    #: A configuration or credential problem (400, 401, 403, 415, other 4xx): keep the data, shout.
    REJECTED = "rejected"
    #: 413: the archive is too large; split it.
    TOO_LARGE = "too_large"
    #: Nothing was sent: the credential provider has no token (see its status).
    NO_CREDENTIALS = "no_credentials"


@attrs.frozen(kw_only=True)
class UploadResult:
    outcome: UploadOutcome
    status: int | None = None
    request_id: str | None = None
    #: Seconds the server asked us to wait (``Retry-After``), if it did.
    retry_after: float | None = None
    #: What happened, for logs and ``/readiness``.
    message: str = ""


def parse_retry_after(value: str | None, *, now: float | None = None) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError):
            return None
        seconds = when.timestamp() - (time.time() if now is None else now)
    if not math.isfinite(seconds):
        return None
    return max(0.0, seconds)


def excerpt(body: bytes) -> str:
    text = body.decode("utf-8", "replace").strip()
    if len(text) > BODY_EXCERPT_CHARS:
        return text[:BODY_EXCERPT_CHARS] + f"... ({len(body)} bytes)"
    return text or "(empty body)"


@attrs.define(kw_only=True)
class IngressClient:
    """Uploads archive files to the ingress with ``session`` (which the caller owns).

    The token and identity come from ``credentials`` (by default the ``manual`` provider of
    ``config``). A 401 tells the provider its token was refused; when it then has a new
    one, the upload is tried again at once, once.
    """

    session: aiohttp.ClientSession
    config: DataCollectorConfig
    credentials: CredentialProvider = attrs.field(
        default=attrs.Factory(lambda self: ManualProvider(config=self.config), takes_self=True)
    )

    @property
    def content_type(self) -> str:
        return f"application/vnd.redhat.{self.config.ingress_content_service_name}.periodic+tar"

    @staticmethod
    def user_agent(identity_id: str) -> str:
        return f"openshift-lightspeed-operator/user-data-collection cluster/{identity_id}"

    async def ready(self) -> UploadResult | None:
        """``None`` when the provider has credentials; else a ``NO_CREDENTIALS`` result saying why."""
        try:
            await self.credentials.get()
        except CredentialsError as exc:
            return UploadResult(outcome=UploadOutcome.NO_CREDENTIALS, message=f"no ingress credentials: {exc}")
        return None

    async def upload(self, archive: Path, *, filename: str | None = None) -> UploadResult:
        """POST one archive file; never raises for network, HTTP or credential failures (see the result)."""
        try:
            creds = await self.credentials.get()
        except CredentialsError as exc:
            return UploadResult(outcome=UploadOutcome.NO_CREDENTIALS, message=f"no ingress credentials: {exc}")
        result = await self._post(archive, filename, creds)
        if result.status != 401:
            return result
        self.credentials.invalidate(creds.token)
        try:
            fresh = await self.credentials.get()
        except CredentialsError as exc:
            return UploadResult(
                outcome=UploadOutcome.NO_CREDENTIALS,
                status=401,
                message=f"the ingress refused the token (401), and no new one can be had: {exc}",
            )
        if fresh.token == creds.token:
            return result
        log.info("the ingress refused the token (401); trying again with the new one")
        return await self._post(archive, filename, fresh)

    async def _post(self, archive: Path, filename: str | None, creds: Credentials) -> UploadResult:
        url = self.config.ingress_server_url
        assert url, "ingress_server_url is required to upload"
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.config.connection_timeout_seconds,
            sock_connect=self.config.connection_timeout_seconds,
            sock_read=self.config.connection_timeout_seconds,
        )
        headers = {"Authorization": f"Bearer {creds.token}", "User-Agent": self.user_agent(creds.identity_id)}
        name = filename or archive.name
        try:
            with archive.open("rb") as fh:
                form = aiohttp.FormData()
                form.add_field("file", fh, filename=name, content_type=self.content_type)
                async with self.session.post(
                    url, data=form, headers=headers, timeout=timeout, allow_redirects=False
                ) as resp:
                    chunks: list[bytes] = []
                    received = 0
                    async for chunk in resp.content.iter_chunked(8192):
                        chunks.append(chunk)
                        received += len(chunk)
                        if received >= _MAX_BODY_READ:
                            break
                    body = b"".join(chunks)
                    status = resp.status
                    retry_after = parse_retry_after(resp.headers.get("Retry-After"))
        except TimeoutError:
            return UploadResult(
                outcome=UploadOutcome.TRANSIENT,
                message=f"no answer from {url} within {self.config.connection_timeout_seconds} s",
            )
        except (aiohttp.ClientError, OSError) as exc:
            return UploadResult(
                outcome=UploadOutcome.TRANSIENT,
                message=f"cannot upload to {url}: {type(exc).__name__}: {exc}",
            )
        except asyncio.CancelledError:
            raise
        if status == 202:
            request_id: str | None = None
            try:
                parsed = json.loads(body)
                if isinstance(parsed, dict) and parsed.get("request_id") is not None:
                    request_id = str(parsed["request_id"])
            except ValueError:
                pass
            if request_id is None:
                log.warning("ingress accepted the upload (202) without a request_id in its body: %s", excerpt(body))
            return UploadResult(outcome=UploadOutcome.SUCCESS, status=202, request_id=request_id, message="accepted")
        message = f"ingress answered {status}: {excerpt(body)}"
        if status == 413:
            outcome = UploadOutcome.TOO_LARGE
        elif status == 429 or status >= 500:
            outcome = UploadOutcome.TRANSIENT
        elif status in _REJECTED or 300 <= status < 500:
            outcome = UploadOutcome.REJECTED  # includes redirects: the URL is wrong
        else:
            outcome = UploadOutcome.TRANSIENT  # another 2xx: not an acceptance
        return UploadResult(outcome=outcome, status=status, retry_after=retry_after, message=message)
