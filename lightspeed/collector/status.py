"""What the collector did: the status ``/readiness`` shows, and the report of one cycle."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import attrs

from lightspeed.collector.credentials import CredentialsStatus
from lightspeed.collector.ingress import UploadResult

__all__ = ["CollectorStatus", "CycleReport"]


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z")


@attrs.define(kw_only=True)
class CollectorStatus:
    """What the collector last did; shown in ``/readiness`` details."""

    enabled: bool = False
    consecutive_failures: int = 0
    last_success: float | None = None
    last_failure: float | None = None
    last_error: str | None = None
    #: The last failure was a configuration or credential problem (400/401/403/415).
    rejected: bool = False
    #: The last failure was the credential provider's: nothing could be uploaded.
    no_credentials: bool = False
    #: The credential provider's own status, once the collector runs.
    credentials: CredentialsStatus | None = None

    @property
    def state(self) -> str:
        if not self.enabled:
            return "disabled"
        if self.consecutive_failures == 0:
            return "ok" if self.last_success is not None else "idle"
        if self.no_credentials:
            return "no_credentials"
        return "rejected" if self.rejected else "failing"

    def impacts(self) -> list[dict[str, str]]:
        """What degrades the service without making it unready: today, a collector that cannot
        get credentials (nothing is uploaded; records wait)."""
        creds = self.credentials
        if not self.enabled or creds is None or creds.state != "failing":
            return []
        return [
            {
                "component": "data_collector",
                "status": "degraded",
                "reason": f"No ingress credentials ({creds.mode} mode): {creds.last_error}; records stay pending",
            }
        ]

    def to_dict(self) -> dict[str, Any]:
        out = {
            "enabled": self.enabled,
            "status": self.state,
            "consecutive_failures": self.consecutive_failures,
            "last_success": _iso(self.last_success),
            "last_failure": _iso(self.last_failure),
            "last_error": self.last_error,
        }
        if self.credentials is not None:
            out["credentials"] = self.credentials.to_dict()
        return out


@attrs.define(kw_only=True)
class CycleReport:
    """What one cycle did."""

    uploads: int = 0
    records: int = 0
    bytes: int = 0
    set_aside: int = 0
    dropped: int = 0
    missing: int = 0
    #: The failure that ended the cycle early, if any.
    failure: UploadResult | None = None
    #: Pending records (claimed by anyone or not) of the collected kinds after the cycle.
    remaining: int | None = None
    #: How long the cycle took.
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return self.failure is None

    def summary(self) -> str:
        parts = [f"uploaded {self.records} record(s) in {self.uploads} archive(s), {self.bytes} bytes"]
        if self.set_aside:
            parts.append(f"{self.set_aside} set aside (too large)")
        if self.dropped:
            parts.append(f"{self.dropped} dropped (max_pending_bytes)")
        if self.missing:
            parts.append(f"{self.missing} vanished before upload")
        if self.failure is not None:
            parts.append(f"stopped by a failure: {self.failure.message}")
        if self.remaining is not None:
            parts.append(f"{self.remaining} still pending")
        parts.append(f"took {self.seconds:.2f} s")
        return "; ".join(parts)
