"""Finding storage backends: the entry-point group ``lightspeed.storage``.

Entry points are read on first use, never at import time, and only the selected backend
is imported. ``register_backend`` adds a class in code (for tests and embedders).
"""

from __future__ import annotations

import contextlib
import importlib.metadata as md
from collections.abc import Iterator, Mapping
from typing import Final

import attrs

from lightspeed.storage.base import StorageBackend
from lightspeed.storage.errors import PluginLoadError, UnknownBackendError

__all__ = ["BackendInfo", "available_backends", "backend_info", "get_backend_class", "register_backend"]

GROUP: Final = "lightspeed.storage"

_registered: dict[str, type[StorageBackend]] = {}


@attrs.frozen(kw_only=True)
class BackendInfo:
    """Where a backend comes from: its name, class path and distribution."""

    name: str
    value: str
    distribution: str | None
    version: str | None


def _entry_points() -> dict[str, list[md.EntryPoint]]:
    found: dict[str, list[md.EntryPoint]] = {}
    for ep in md.entry_points(group=GROUP):
        found.setdefault(ep.name, []).append(ep)
    return found


def _dist_of(ep: md.EntryPoint) -> tuple[str | None, str | None]:
    dist = ep.dist
    if dist is None:
        return None, None
    return dist.metadata["Name"], dist.version


def available_backends() -> Mapping[str, BackendInfo]:
    """Every backend name that can be selected, with where it comes from (sorted by name)."""
    out: dict[str, BackendInfo] = {}
    for name, eps in _entry_points().items():
        ep = eps[0]
        dist, version = _dist_of(ep)
        out[name] = BackendInfo(name=name, value=ep.value, distribution=dist, version=version)
    for name, cls in _registered.items():
        out[name] = BackendInfo(
            name=name, value=f"{cls.__module__}:{cls.__qualname__}", distribution=None, version=None
        )
    return dict(sorted(out.items()))


def backend_info(name: str) -> BackendInfo | None:
    """What :func:`available_backends` says of ``name``, or ``None``."""
    return available_backends().get(name)


def get_backend_class(name: str) -> type[StorageBackend]:
    """The backend class registered as ``name``.

    Raises :class:`UnknownBackendError` listing the installed names when there is none,
    and :class:`PluginLoadError` when the plugin cannot be imported, is not a
    :class:`StorageBackend` subclass, or two distributions claim the name.
    """
    if name in _registered:
        return _registered[name]
    eps = _entry_points().get(name)
    if not eps:
        names = ", ".join(sorted(set(_entry_points()) | set(_registered))) or "(none)"
        raise UnknownBackendError(
            f"unknown storage backend {name!r}; installed backends: {names}. "
            f"A third-party backend must be installed in the same environment and register "
            f"an entry point named {name!r} in the group {GROUP!r}"
            f" (for example: pip install lightspeed-storage-{name})."
        )
    if len({(ep.value, _dist_of(ep)[0]) for ep in eps}) > 1:
        claimants = "; ".join(f"{_dist_of(ep)[0] or '?'} ({ep.value})" for ep in eps)
        raise PluginLoadError(
            f"storage backend name {name!r} is registered by more than one distribution: {claimants}. "
            "Uninstall all but one of them."
        )
    ep = eps[0]
    dist, version = _dist_of(ep)
    where = f"distribution {dist} {version}" if dist else "an unknown distribution"
    try:
        obj = ep.load()
    except Exception as exc:
        raise PluginLoadError(
            f"storage backend {name!r} ({ep.value}, from {where}) failed to import: {type(exc).__name__}: {exc}"
        ) from exc
    if not (isinstance(obj, type) and issubclass(obj, StorageBackend)):
        raise PluginLoadError(
            f"storage backend {name!r} ({ep.value}, from {where}) is {obj!r}, "
            "expected a subclass of lightspeed.storage.StorageBackend"
        )
    obj.name = name
    return obj


@contextlib.contextmanager
def _unregister_on_exit(name: str, previous: type[StorageBackend] | None) -> Iterator[None]:
    # The class keeps the name it was registered under: instances made meanwhile report it.
    try:
        yield
    finally:
        if previous is None:
            _registered.pop(name, None)
        else:
            _registered[name] = previous


def register_backend(name: str, cls: type[StorageBackend]) -> contextlib.AbstractContextManager[None]:
    """Make ``cls`` available as backend ``name`` (it wins over entry points of that name).

    Returns a context manager that undoes the registration on exit, for tests::

        with register_backend("memory", MemoryStorage):
            app = create_app(config)
    """
    if not (isinstance(cls, type) and issubclass(cls, StorageBackend)):
        raise TypeError(f"{cls!r} is not a StorageBackend subclass")
    previous = _registered.get(name)
    _registered[name] = cls
    cls.name = name
    return _unregister_on_exit(name, previous)
