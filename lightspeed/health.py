"""What ``/readiness`` reports: each part of the service says how it is, as :class:`Impact`\\ s.

A readiness check is an async function of the application returning the impacts it sees
(none when all is well). ``/readiness`` runs every registered check and folds them into the
Lightspeed Core Stack's shape: any ``unhealthy`` impact makes the service unready (503),
``degraded`` ones leave it ready (200) with reduced function, none is ``healthy``. Register
a check with :func:`lightspeed.api.health.add_readiness_check` while building the app.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Final, Literal

import attrs

if TYPE_CHECKING:
    from aiohttp import web

__all__ = ["Impact", "ProviderHealth", "ReadinessCheck"]

#: A provider whose last call failed counts as unhealthy for this long, unless a call succeeds since.
PROVIDER_FAILURE_WINDOW_SECONDS: Final = 60.0


@attrs.frozen(kw_only=True)
class Impact:
    """One thing that is wrong: which part, how bad, why (our words), and what it costs users."""

    component: str
    status: Literal["degraded", "unhealthy"]
    reason: str
    impact: str
    #: For an LLM provider: its entry in ``providers`` (``provider_id``, ``status``, ``message``).
    provider: dict[str, str] | None = None


ReadinessCheck = Callable[["web.Application"], Awaitable[list[Impact]]]


@attrs.define
class ProviderHealth:
    """A provider's health from its recent calls (queries, and the model lists it is asked for)."""

    last_success: float | None = None
    last_failure: float | None = None
    message: str = ""

    def record(self, *, ok: bool, message: str = "", now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        if ok:
            self.last_success = now
        else:
            self.last_failure, self.message = now, message

    def status(self, now: float | None = None) -> str:
        """``error`` when the last call failed within the window, ``ok`` after a success, else ``unknown``."""
        now = time.monotonic() if now is None else now
        failed = self.last_failure is not None and (self.last_success is None or self.last_failure > self.last_success)
        if failed and self.last_failure is not None and now - self.last_failure < PROVIDER_FAILURE_WINDOW_SECONDS:
            return "error"
        return "ok" if self.last_success is not None or self.last_failure is not None else "unknown"
