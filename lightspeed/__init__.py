"""lightspeed: answers LLM questions and collects what users do with them.

Public API: :func:`create_app`, the storage interface (:mod:`lightspeed.storage`),
configuration loading (:mod:`lightspeed.config`) and the error base classes.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("lightspeed")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

from typing import TYPE_CHECKING, Any

from lightspeed.config import Config, load_config
from lightspeed.errors import ConfigError, LightspeedError
from lightspeed.storage import StorageBackend

if TYPE_CHECKING:
    from lightspeed.app import create_app


def __getattr__(name: str) -> Any:
    # The web application is imported on first use, so that commands which do not serve
    # (``lightspeed collect``, ``check-config``) start without importing it.
    if name == "create_app":
        from lightspeed.app import create_app

        return create_app
    raise AttributeError(f"module 'lightspeed' has no attribute {name!r}")


__all__ = ["Config", "ConfigError", "LightspeedError", "StorageBackend", "__version__", "create_app", "load_config"]
