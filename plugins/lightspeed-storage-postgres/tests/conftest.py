"""One throwaway PostgreSQL server for the whole test session (see ``lightspeed_storage_postgres.testing``).

If the server binaries are missing the tests fail with the reason; they never skip.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from lightspeed_storage_postgres.testing import TemporaryCluster


@pytest.fixture(scope="session")
def postgres_cluster() -> Iterator[TemporaryCluster]:
    with TemporaryCluster() as cluster:
        yield cluster
