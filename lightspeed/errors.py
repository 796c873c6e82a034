"""The one exception base of the package.

Every exception lightspeed raises on purpose derives from :class:`LightspeedError`,
so an embedder can catch everything of ours with one ``except`` clause.
"""

from __future__ import annotations

from collections.abc import Sequence


class LightspeedError(Exception):
    """Base class of every exception raised by lightspeed on purpose."""


class ConfigError(LightspeedError):
    """The configuration is invalid.

    ``problems`` lists every problem found, each as ``path: message``
    (``user_data_collection.data_collector.colection_interval: unknown key``).
    """

    def __init__(self, problems: Sequence[str], *, source: str | None = None) -> None:
        self.problems = list(problems)
        self.source = source
        where = f" in {source}" if source else ""
        lines = "\n".join(f"  - {p}" for p in self.problems)
        super().__init__(f"invalid configuration{where} ({len(self.problems)} problem(s)):\n{lines}")


class HttpError(LightspeedError):
    """An error with an HTTP status and the upstream's ``{"detail": {"response", "cause"}}`` body."""

    def __init__(self, status: int, response: str, cause: str, *, headers: dict[str, str] | None = None) -> None:
        super().__init__(f"{status} {response}: {cause}")
        self.status = status
        self.response = response
        self.cause = cause
        self.headers = headers or {}

    def body(self) -> dict[str, object]:
        return {"detail": {"response": self.response, "cause": self.cause}}
