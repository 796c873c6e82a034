"""Typed application state: the keys, and accessors that handlers use.

No string keys anywhere: everything an app holds is under one of these ``web.AppKey``s.
"""

from __future__ import annotations

from typing import Final

from aiohttp import ClientSession, web

from lightspeed.auth import AuthModule
from lightspeed.collector.service import CollectorStatus
from lightspeed.config import Config
from lightspeed.llm import LLMRegistry
from lightspeed.metrics import Metrics
from lightspeed.storage import StorageBackend

__all__ = [
    "AUTH",
    "COLLECTOR_STATUS",
    "CONFIG",
    "HTTP",
    "LLM",
    "METRICS",
    "STORAGE",
    "auth_from",
    "config_from",
    "http_from",
    "llm_from",
    "storage_from",
]

CONFIG: Final = web.AppKey("lightspeed.config", Config)
#: The application's private Prometheus registry and metrics (served at ``/metrics``).
METRICS: Final = web.AppKey("lightspeed.metrics", Metrics)
#: What the data collector last did (``/readiness`` details); ``enabled`` false when it is off.
COLLECTOR_STATUS: Final = web.AppKey("lightspeed.collector_status", CollectorStatus)
STORAGE: Final = web.AppKey("lightspeed.storage", StorageBackend)
HTTP: Final = web.AppKey("lightspeed.http", ClientSession)
AUTH: Final = web.AppKey("lightspeed.auth", AuthModule)
LLM: Final = web.AppKey("lightspeed.llm", LLMRegistry)


def config_from(request: web.Request) -> Config:
    return request.app[CONFIG]


def storage_from(request: web.Request) -> StorageBackend:
    return request.app[STORAGE]


def http_from(request: web.Request) -> ClientSession:
    return request.app[HTTP]


def auth_from(request: web.Request) -> AuthModule:
    return request.app[AUTH]


def llm_from(request: web.Request) -> LLMRegistry:
    return request.app[LLM]
