"""Test support for code built on lightspeed: the storage conformance kit.

A storage plugin's tests subclass :class:`StorageConformanceTests` once and say how to
build an unopened backend::

    from lightspeed.testing import StorageConformanceTests, collection_config

    class TestMyStorage(StorageConformanceTests):
        async def make_backend(self, tmp_path):
            return MyStorage(options={"path": str(tmp_path / "db")}, collection=collection_config(tmp_path))

Install with ``pip install 'lightspeed[testing]'`` (pytest and pytest-asyncio).
Nothing in the service imports this package.
"""

import pytest

# Before the kit is imported, so its plain ``assert`` statements show pytest's rich diffs.
pytest.register_assert_rewrite("lightspeed.testing.storage")

from lightspeed.testing.storage import (  # noqa: E402
    AckReleaseTests,
    ClaimTests,
    ConversationAdminTests,
    ConversationTests,
    ErrorContractTests,
    FlagTests,
    HistoryTests,
    InteractionTests,
    LeaseExpiryTests,
    LifecycleTests,
    StorageConformanceTests,
    StreamRegistryTests,
    WriteTests,
    collection_config,
    make_feedback,
    make_transcript,
)

__all__ = [
    "AckReleaseTests",
    "ClaimTests",
    "ConversationAdminTests",
    "ConversationTests",
    "ErrorContractTests",
    "FlagTests",
    "HistoryTests",
    "InteractionTests",
    "LeaseExpiryTests",
    "LifecycleTests",
    "StorageConformanceTests",
    "StreamRegistryTests",
    "WriteTests",
    "collection_config",
    "make_feedback",
    "make_transcript",
]
