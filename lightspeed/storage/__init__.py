"""The storage interface, its errors, and backend discovery (see :mod:`lightspeed.storage.base`)."""

from lightspeed.config import UserDataCollectionConfig
from lightspeed.storage.base import FEEDBACK_ENABLED_FLAG, Claim, PendingStats, StorageBackend, StoredRecord
from lightspeed.storage.errors import (
    ClaimLost,
    ConversationNotFound,
    PluginLoadError,
    RecordNotFound,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
    StorageUnreachable,
    UnknownBackendError,
)
from lightspeed.storage.registry import (
    BackendInfo,
    available_backends,
    backend_info,
    get_backend_class,
    register_backend,
)

__all__ = [
    "FEEDBACK_ENABLED_FLAG",
    "BackendInfo",
    "Claim",
    "ClaimLost",
    "ConversationNotFound",
    "PendingStats",
    "PluginLoadError",
    "RecordNotFound",
    "StorageBackend",
    "StorageConfigError",
    "StorageError",
    "StorageUnavailable",
    "StorageUnreachable",
    "StoredRecord",
    "UnknownBackendError",
    "available_backends",
    "backend_info",
    "create_backend",
    "get_backend_class",
    "register_backend",
]


def create_backend(collection: UserDataCollectionConfig) -> StorageBackend:
    """Construct (not open) the backend that ``user_data_collection.storage`` selects."""
    cls = get_backend_class(collection.storage.backend)
    return cls(options=collection.storage.options, collection=collection)
