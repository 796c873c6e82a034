"""Backend discovery through the entry-point group ``lightspeed.storage``, with real
(temporary) distributions on ``sys.path``."""

from __future__ import annotations

import textwrap
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import attrs
import pytest

from lightspeed import create_app
from lightspeed.records import FeedbackRecord, Transcript
from lightspeed.state import storage_from
from lightspeed.storage import (
    PluginLoadError,
    StorageBackend,
    StoredRecord,
    UnknownBackendError,
    available_backends,
    get_backend_class,
    register_backend,
)
from lightspeed.storage.filesystem import FilesystemStorage
from tests.fakes import MakeConfig


def install_dist(site: Path, dist: str, version: str, entry_points: Mapping[str, str], module: str = "") -> None:
    """Make a minimal installed distribution in ``site``: metadata, entry points, a module."""
    info = site / f"{dist.replace('-', '_')}-{version}.dist-info"
    info.mkdir(parents=True)
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: {version}\n")
    lines = "".join(f"{name} = {value}\n" for name, value in entry_points.items())
    (info / "entry_points.txt").write_text(f"[lightspeed.storage]\n{lines}")
    if module:
        name = next(iter(entry_points.values())).split(":")[0]
        (site / f"{name}.py").write_text(textwrap.dedent(module))


@pytest.fixture
def site(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    path = tmp_path / "site"
    path.mkdir()
    monkeypatch.syspath_prepend(str(path))
    return path


@attrs.frozen(kw_only=True)
class SizeOptions:
    size: int = 0


class MemoryStorage(StorageBackend):
    """Just enough of a backend to be selected and opened."""

    opened = 0

    async def open(self) -> None:
        type(self).opened += 1

    async def aclose(self) -> None:
        pass

    async def ping(self) -> None:
        pass

    async def put_feedback(self, record: FeedbackRecord) -> StoredRecord:
        raise NotImplementedError

    async def put_transcript(self, record: Transcript) -> StoredRecord:
        raise NotImplementedError

    async def set_conversation_owner(self, conversation_id: str, *, owner: str) -> str:
        return owner

    async def get_conversation_owner(self, conversation_id: str) -> str | None:
        return None

    async def append_turn(self, conversation_id: str, *, turn: Any) -> None:
        pass

    async def get_turns(self, conversation_id: str, *, limit: int) -> list[Any]:
        return []

    async def get_flag(self, name: str) -> bool | None:
        return None

    async def set_flag(self, name: str, *, value: bool) -> bool | None:
        return None

    async def claim(self, **kw: Any) -> Any:
        raise NotImplementedError

    async def read_record(self, record: StoredRecord) -> bytes:
        raise NotImplementedError

    async def renew(self, claim: Any, *, lease_seconds: float) -> Any:
        raise NotImplementedError

    async def ack(self, claim: Any, *, records: Any = None, delete: bool) -> None:
        raise NotImplementedError

    async def release(self, claim: Any, *, records: Any = None) -> None:
        raise NotImplementedError

    async def set_aside(self, claim: Any, *, records: Any, reason: str) -> None:
        raise NotImplementedError

    async def pending_stats(self) -> Any:
        raise NotImplementedError

    Options = SizeOptions


def test_filesystem_is_registered_through_the_entry_point() -> None:
    assert get_backend_class("filesystem") is FilesystemStorage
    info = available_backends()["filesystem"]
    assert info.value == "lightspeed.storage.filesystem:FilesystemStorage"
    assert info.distribution == "lightspeed"


def test_unknown_backend_lists_installed_names(site: Path) -> None:
    install_dist(site, "lightspeed-storage-zeta", "1.0", {"zeta": "zeta_backend:Zeta"})
    with pytest.raises(UnknownBackendError) as info:
        get_backend_class("postgress")
    message = str(info.value)
    assert "unknown storage backend 'postgress'" in message
    names = sorted(available_backends())
    assert {"filesystem", "zeta"} <= set(names)
    assert f"installed backends: {', '.join(names)}." in message
    assert "lightspeed.storage" in message


def test_unknown_backend_in_config_fails_create_app(make_config: MakeConfig) -> None:
    config = make_config(user_data_collection={"storage": {"backend": "nope"}})
    with pytest.raises(UnknownBackendError, match="installed backends: filesystem"):
        create_app(config)


def test_plugin_failing_to_import_names_plugin_and_distribution(site: Path) -> None:
    install_dist(
        site,
        "lightspeed-storage-broken",
        "2.3.4",
        {"broken": "broken_backend:BrokenStorage"},
        module="import not_installed_dependency_xyz\n",
    )
    with pytest.raises(PluginLoadError) as info:
        get_backend_class("broken")
    message = str(info.value)
    assert "'broken'" in message
    assert "broken_backend:BrokenStorage" in message
    assert "lightspeed-storage-broken 2.3.4" in message
    assert "not_installed_dependency_xyz" in message
    assert isinstance(info.value.__cause__, ModuleNotFoundError)


def test_plugin_that_is_not_a_backend(site: Path) -> None:
    install_dist(
        site,
        "lightspeed-storage-odd",
        "0.1",
        {"odd": "odd_backend:Thing"},
        module="""
        class Thing:
            pass
        """,
    )
    with pytest.raises(PluginLoadError) as info:
        get_backend_class("odd")
    message = str(info.value)
    assert "'odd'" in message and "lightspeed-storage-odd 0.1" in message
    assert "Thing" in message and "expected a subclass of lightspeed.storage.StorageBackend" in message


def test_two_distributions_claiming_one_name(site: Path) -> None:
    install_dist(site, "dist-one", "1", {"twin": "twin_one:A"})
    install_dist(site, "dist-two", "1", {"twin": "twin_two:B"})
    with pytest.raises(PluginLoadError) as info:
        get_backend_class("twin")
    assert "dist-one" in str(info.value) and "dist-two" in str(info.value)


def test_plugin_loaded_from_its_entry_point(site: Path, make_config: MakeConfig) -> None:
    install_dist(
        site,
        "lightspeed-storage-custom",
        "0.9",
        {"custom": "custom_backend:Custom"},
        module="""
        from lightspeed.storage.filesystem import FilesystemStorage

        class Custom(FilesystemStorage):
            pass
        """,
    )
    cls = get_backend_class("custom")
    assert cls.__name__ == "Custom" and cls.name == "custom"
    app = create_app(make_config(user_data_collection={"storage": {"backend": "custom"}}))
    assert type(storage_from(app)) is cls
    info = available_backends()["custom"]
    assert (info.distribution, info.version) == ("lightspeed-storage-custom", "0.9")


async def test_register_backend_context_manager(make_config: MakeConfig, aiohttp_client: Any) -> None:
    config = make_config(user_data_collection={"storage": {"backend": "test-memory", "options": {"size": 1}}})
    with register_backend("test-memory", MemoryStorage):
        assert get_backend_class("test-memory") is MemoryStorage
        assert "test-memory" in available_backends()
        app = create_app(config)
        assert isinstance(storage_from(app), MemoryStorage)
        client = await aiohttp_client(app)
        assert MemoryStorage.opened == 1
        resp = await client.get("/v1/info")
        assert (await resp.json())["storage"] == {"backend": "test-memory", "distribution": None, "version": None}
        assert (await client.get("/readiness")).status == 200
    with pytest.raises(UnknownBackendError):
        get_backend_class("test-memory")
    assert "test-memory" not in available_backends()


def test_register_backend_overrides_and_restores() -> None:
    class Other(MemoryStorage):
        pass

    with register_backend("test-memory", MemoryStorage):
        with register_backend("test-memory", Other):
            assert get_backend_class("test-memory") is Other
        assert get_backend_class("test-memory") is MemoryStorage
    with register_backend("filesystem", Other):
        assert get_backend_class("filesystem") is Other
    assert get_backend_class("filesystem") is FilesystemStorage


def test_register_backend_rejects_non_backends() -> None:
    with pytest.raises(TypeError, match="not a StorageBackend subclass"):
        register_backend("x", dict)  # type: ignore[arg-type]
    assert "x" not in available_backends()


def test_plugin_options_validated(make_config: MakeConfig) -> None:
    from lightspeed.storage import StorageConfigError

    config = make_config(user_data_collection={"storage": {"backend": "test-memory", "options": {"sise": 1}}})
    with register_backend("test-memory", MemoryStorage), pytest.raises(StorageConfigError) as info:
        create_app(config)
    assert info.value.problems == ["sise: unknown key (known: size)"]
    assert "user_data_collection.storage.options.sise: unknown key (known: size)" in str(info.value)
