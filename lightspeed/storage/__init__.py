"""The storage interface, its errors, and backend discovery (see :mod:`lightspeed.storage.base`)."""

from lightspeed.config import UserDataCollectionConfig
from lightspeed.storage.base import (
    FEEDBACK_ENABLED_FLAG,
    Claim,
    ConversationInfo,
    ConversationPage,
    Deletion,
    PendingStats,
    StorageBackend,
    StoredRecord,
    StreamInterrupt,
)
from lightspeed.storage.errors import (
    ClaimLost,
    ConversationNotFound,
    PluginLoadError,
    RecordNotFound,
    StorageConfigError,
    StorageError,
    StorageUnavailable,
    StorageUnreachable,
    StorageUnsupported,
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
    "ConversationInfo",
    "ConversationNotFound",
    "ConversationPage",
    "Deletion",
    "PendingStats",
    "PluginLoadError",
    "RecordNotFound",
    "StorageBackend",
    "StorageConfigError",
    "StorageError",
    "StorageUnavailable",
    "StorageUnreachable",
    "StorageUnsupported",
    "StoredRecord",
    "StreamInterrupt",
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
