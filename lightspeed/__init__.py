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

from lightspeed.app import create_app
from lightspeed.config import Config, load_config
from lightspeed.errors import ConfigError, LightspeedError
from lightspeed.storage import StorageBackend

__all__ = ["Config", "ConfigError", "LightspeedError", "StorageBackend", "__version__", "create_app", "load_config"]
