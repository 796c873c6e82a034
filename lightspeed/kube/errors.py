"""The Kubernetes API client's exceptions (see :mod:`lightspeed.kube`)."""

from __future__ import annotations

from lightspeed.errors import LightspeedError

__all__ = ["KubeConfigError", "KubeError", "KubeNotFound", "KubeRejected", "KubeUnavailable"]


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
