"""What every credential provider shares: the credentials, the status ``/readiness`` shows,
the provider base class with its refresh, hold-on-failure and 401 handling, and secret files."""

from __future__ import annotations

import abc
import asyncio
import logging
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, Final

import aiofiles
import attrs

from lightspeed.config import DataCollectorConfig
from lightspeed.errors import LightspeedError
from lightspeed.masking import LOG_SECRETS

if TYPE_CHECKING:
    from lightspeed.metrics import CollectorMetrics

__all__ = [
    "DEFAULT_IDENTITY",
    "CredentialProvider",
    "Credentials",
    "CredentialsError",
    "CredentialsStatus",
    "read_secret_file",
    "secret",
]

log = logging.getLogger("lightspeed.collector.credentials")

#: The identity when nothing else gives one (the upstream exporter's default).
DEFAULT_IDENTITY: Final = "lightspeed-exporter"
#: After a failed refresh, how long to keep using a token that was never refused before trying again.
RETRY_HOLD_SECONDS: Final = 60.0


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


async def secret(value: str | None, path: str | None, what: str) -> str:
    """``value``, or the content of the file ``path`` when given; ``what`` names it in errors."""
    if path:
        return await read_secret_file(path, what)
    if not value:
        raise CredentialsError(f"{what} is not configured")
    return value
