"""The storage interface, its errors, and backend discovery (see :mod:`lightspeed.storage.base`)."""

from lightspeed.config import OctalMode, UserDataCollectionConfig
from lightspeed.storage.base import (
    FEEDBACK_ENABLED_FLAG,
    Claim,
    ConversationInfo,
    ConversationPage,
    Deletion,
    NoOptions,
    PendingStats,
    StorageBackend,
    StoredRecord,
    StreamInterrupt,
)
from lightspeed.storage.common import (
    ClaimFill,
    RecordName,
    check_claim_args,
    check_conversation_id,
    check_flag_name,
    check_user_hash,
    fill_claim,
    parse_record_name,
    stored_record,
)
from lightspeed.storage.errors import (
    ClaimLost,
    ConversationNotFound,
    InteractionNotStored,
    PluginLoadError,
    RecordNotFound,
    StorageConfigError,
    StorageError,
    StorageRootUnavailable,
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
    "ClaimFill",
    "ClaimLost",
    "ConversationInfo",
    "ConversationNotFound",
    "ConversationPage",
    "Deletion",
    "InteractionNotStored",
    "NoOptions",
    "OctalMode",
    "PendingStats",
    "PluginLoadError",
    "RecordName",
    "RecordNotFound",
    "StorageBackend",
    "StorageConfigError",
    "StorageError",
    "StorageRootUnavailable",
    "StorageUnavailable",
    "StorageUnreachable",
    "StorageUnsupported",
    "StoredRecord",
    "StreamInterrupt",
    "UnknownBackendError",
    "available_backends",
    "backend_info",
    "check_claim_args",
    "check_conversation_id",
    "check_flag_name",
    "check_user_hash",
    "create_backend",
    "fill_claim",
    "get_backend_class",
    "parse_record_name",
    "register_backend",
    "stored_record",
]


def create_backend(collection: UserDataCollectionConfig) -> StorageBackend:
    """Construct (not open) the backend that ``user_data_collection.storage`` selects."""
    cls = get_backend_class(collection.storage.backend)
    return cls(options=collection.storage.options, collection=collection)
