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

from lightspeed.config import DataCollectorConfig

__all__ = ["IngressClient", "TokenError", "UploadOutcome", "UploadResult", "parse_retry_after"]

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


@attrs.frozen(kw_only=True)
class UploadResult:
    outcome: UploadOutcome
    status: int | None = None
    request_id: str | None = None
    #: Seconds the server asked us to wait (``Retry-After``), if it did.
    retry_after: float | None = None
    #: What happened, for logs and ``/readiness``.
    message: str = ""


class TokenError(Exception):
    """The token file cannot be read."""


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
    """Uploads archive files to the ingress with ``session`` (which the caller owns)."""

    session: aiohttp.ClientSession
    config: DataCollectorConfig

    @property
    def content_type(self) -> str:
        return f"application/vnd.redhat.{self.config.ingress_content_service_name}.periodic+tar"

    @property
    def user_agent(self) -> str:
        return f"openshift-lightspeed-operator/user-data-collection cluster/{self.config.identity_id}"

    def token(self) -> str:
        """The Bearer token: from the configuration, or re-read from its file (rotation works)."""
        if self.config.ingress_server_auth_token_path:
            path = Path(self.config.ingress_server_auth_token_path)
            try:
                token = path.read_text(encoding="utf-8").strip()
            except (OSError, UnicodeDecodeError) as exc:
                raise TokenError(f"cannot read ingress_server_auth_token_path {str(path)!r}: {exc}") from exc
            if not token:
                raise TokenError(f"ingress_server_auth_token_path {str(path)!r} is empty")
            return token
        return self.config.ingress_server_auth_token or ""

    async def upload(self, archive: Path, *, filename: str | None = None) -> UploadResult:
        """POST one archive file; never raises for network or HTTP failures (see the result)."""
        url = self.config.ingress_server_url
        assert url, "ingress_server_url is required to upload"
        try:
            token = await asyncio.to_thread(self.token)  # a file read: off the event loop
        except TokenError as exc:
            return UploadResult(outcome=UploadOutcome.REJECTED, message=str(exc))
        timeout = aiohttp.ClientTimeout(
            total=None,
            connect=self.config.connection_timeout_seconds,
            sock_connect=self.config.connection_timeout_seconds,
            sock_read=self.config.connection_timeout_seconds,
        )
        headers = {"Authorization": f"Bearer {token}", "User-Agent": self.user_agent}
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
