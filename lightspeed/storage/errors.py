"""The exceptions of the storage interface: a backend raises only these (and ``ValueError``
for arguments that break a documented precondition)."""

from __future__ import annotations

from lightspeed.errors import LightspeedError

__all__ = [
    "ClaimLost",
    "ConversationNotFound",
    "InteractionNotStored",
    "PluginLoadError",
    "RecordNotFound",
    "StorageConfigError",
    "StorageError",
    "StorageRootUnavailable",
    "StorageUnavailable",
    "StorageUnreachable",
    "StorageUnsupported",
    "UnknownBackendError",
]


class StorageError(LightspeedError):
    """Base of every storage error. A write that raised it may or may not have happened
    unless the method's contract says otherwise."""


class StorageUnavailable(StorageError):
    """The store cannot be reached or written right now (disk full, permission denied,
    database down). The operation did not take effect; retrying later is safe."""


class StorageUnreachable(StorageUnavailable):
    """The store cannot be reached at all (connection refused, lost or timed out), as
    opposed to reached but refusing a write. The HTTP API answers 503 for it, so clients
    and load balancers retry; the backend recovers by itself when the store returns."""


class InteractionNotStored(StorageUnavailable):
    """Part of an interaction could not be stored (:meth:`StorageBackend.store_interaction`):
    ``history`` is the error of the owner or the turn, ``transcript`` the transcript's (each
    ``None`` when that part was stored). The other part may have been stored."""

    def __init__(self, *, history: BaseException | None = None, transcript: BaseException | None = None) -> None:
        self.history = history
        self.transcript = transcript
        parts = [f"history: {history}" if history else "", f"transcript: {transcript}" if transcript else ""]
        super().__init__("; ".join(p for p in parts if p) or "not stored")


class StorageRootUnavailable(StorageUnavailable):
    """A directory that records are written into (``feedback_storage``, ``transcripts_storage``)
    cannot be created or written: a file stands in its path, it is read-only, the disk is full.
    ``root`` is the directory as configured; the HTTP API names it in the upstream's 500 body
    (``Failed to store feedback at directory: {root}``). Nothing was stored; a retry is safe,
    and succeeds once the directory can be written again (no reopening needed)."""

    def __init__(self, message: str, *, root: str) -> None:
        super().__init__(message)
        self.root = root


class StorageUnsupported(StorageError):
    """The backend does not implement an optional operation (a plugin written before the
    operation was added to the interface). Nothing changed."""


class RecordNotFound(StorageError):
    """A record named by the caller does not exist (any more)."""


class ConversationNotFound(StorageError):
    """The conversation is not known to the store."""


class ClaimLost(StorageError):
    """The claim's lease expired and another collector took (some of) its records over;
    the caller must not treat those records as its own any more."""


class StorageConfigError(StorageError):
    """The backend's ``options`` are invalid; ``problems`` lists every one."""

    def __init__(self, backend: str, problems: list[str]) -> None:
        self.backend = backend
        self.problems = problems
        lines = "\n".join(f"  - user_data_collection.storage.options.{p}" for p in problems)
        super().__init__(f"invalid options for storage backend {backend!r}:\n{lines}")


class UnknownBackendError(StorageError):
    """No installed distribution registers the requested backend name."""


class PluginLoadError(StorageError):
    """A storage plugin was found but could not be loaded (import failed, wrong type, or
    two distributions claim the same name)."""
