"""Typed application state: every ``web.AppKey`` (and ``web.RequestKey``) of the service,
private, behind accessors.

No string keys anywhere, and no key outside this module: :func:`lightspeed.app.create_app`
fills the state with :func:`init_state` (and :func:`set_http` once the client session
exists); everything else reads it through the ``*_from`` accessors, which take either a
request or an application (``request.app`` is the application that owns the route, also
when the service is mounted as a sub-application).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Final

from aiohttp import ClientSession, web

from lightspeed.actions import Action
from lightspeed.auth import AuthModule, AuthResult
from lightspeed.collector.status import CollectorStatus
from lightspeed.config import Config
from lightspeed.health import ReadinessCheck
from lightspeed.llm import LLMRegistry
from lightspeed.metrics import Metrics
from lightspeed.redaction import Redactor
from lightspeed.storage import StorageBackend

if TYPE_CHECKING:
    from lightspeed.api.interrupt import StreamRegistry
    from lightspeed.api.query.recording import PendingStores

__all__ = [
    "auth_from",
    "auth_result_from",
    "granted_actions_from",
    "set_auth_result",
    "set_granted_actions",
    "collector_status_from",
    "config_from",
    "http_from",
    "init_state",
    "llm_from",
    "metrics_from",
    "pending_stores_from",
    "readiness_checks_from",
    "redactor_from",
    "request_id_from",
    "set_http",
    "set_request_id",
    "set_streams",
    "storage_from",
    "streams_from",
]

_CONFIG: Final = web.AppKey("lightspeed.config", Config)
#: The application's private Prometheus registry and metrics (served at ``/metrics``).
_METRICS: Final = web.AppKey("lightspeed.metrics", Metrics)
#: What the data collector last did (``/readiness`` details); ``enabled`` false when it is off.
_COLLECTOR_STATUS: Final = web.AppKey("lightspeed.collector_status", CollectorStatus)
_STORAGE: Final = web.AppKey("lightspeed.storage", StorageBackend)
_HTTP: Final = web.AppKey("lightspeed.http", ClientSession)
_AUTH: Final = web.AppKey("lightspeed.auth", AuthModule)
_LLM: Final = web.AppKey("lightspeed.llm", LLMRegistry)
#: The configuration's ``query_filters``, applied to everything a query stores or sends.
_REDACTOR: Final = web.AppKey("lightspeed.redactor", Redactor)
#: The query records being stored (shutdown waits for them).
_PENDING_STORES: Final[web.AppKey[PendingStores]] = web.AppKey("lightspeed.pending_stores")
#: What ``/readiness`` asks (the store, the LLM providers, the collector, ...).
_READINESS_CHECKS: Final[web.AppKey[list[ReadinessCheck]]] = web.AppKey("lightspeed.readiness_checks")
#: This worker's running streams, for ``/v1/streaming_query/interrupt``.
_STREAMS: Final[web.AppKey[StreamRegistry]] = web.AppKey("lightspeed.streams")
#: The request's id (the client's ``X-Request-ID`` when sane), set by the request id middleware.
_REQUEST_ID: Final = web.RequestKey("lightspeed.request_id", str)

Owner = web.Request | web.Application


def _app(where: Owner) -> web.Application:
    return where if isinstance(where, web.Application) else where.app


def init_state(
    app: web.Application,
    *,
    config: Config,
    storage: StorageBackend,
    auth: AuthModule,
    llm: LLMRegistry,
    metrics: Metrics,
    collector_status: CollectorStatus,
    redactor: Redactor,
    pending_stores: PendingStores,
) -> None:
    """Everything the application holds from its creation on."""
    app[_CONFIG] = config
    app[_STORAGE] = storage
    app[_AUTH] = auth
    app[_LLM] = llm
    app[_METRICS] = metrics
    app[_COLLECTOR_STATUS] = collector_status
    app[_REDACTOR] = redactor
    app[_PENDING_STORES] = pending_stores
    app[_READINESS_CHECKS] = []


def readiness_checks_from(where: Owner) -> list[ReadinessCheck]:
    """The checks ``/readiness`` runs; append to it while building the app, not after."""
    return _app(where)[_READINESS_CHECKS]


def set_http(app: web.Application, session: ClientSession) -> None:
    """The client session, created by its cleanup context once the application starts."""
    app[_HTTP] = session


def set_streams(app: web.Application, streams: StreamRegistry) -> None:
    """The registry of this worker's running streams."""
    app[_STREAMS] = streams


def streams_from(where: Owner) -> StreamRegistry:
    return _app(where)[_STREAMS]


def config_from(where: Owner) -> Config:
    return _app(where)[_CONFIG]


def storage_from(where: Owner) -> StorageBackend:
    return _app(where)[_STORAGE]


def http_from(where: Owner) -> ClientSession:
    """The application's client session; ``KeyError`` before the application has started."""
    return _app(where)[_HTTP]


def auth_from(where: Owner) -> AuthModule:
    return _app(where)[_AUTH]


def llm_from(where: Owner) -> LLMRegistry:
    return _app(where)[_LLM]


def metrics_from(where: Owner) -> Metrics:
    return _app(where)[_METRICS]


def collector_status_from(where: Owner) -> CollectorStatus:
    return _app(where)[_COLLECTOR_STATUS]


def redactor_from(where: Owner) -> Redactor:
    return _app(where)[_REDACTOR]


def pending_stores_from(where: Owner) -> PendingStores:
    return _app(where)[_PENDING_STORES]


def set_request_id(request: web.Request, request_id: str) -> None:
    request[_REQUEST_ID] = request_id


def request_id_from(request: web.Request, default: str = "-") -> str:
    """The request's id; ``default`` before the request id middleware ran."""
    rid: str = request.get(_REQUEST_ID, default)
    return rid


_AUTH_RESULT: Final = web.RequestKey("lightspeed.auth_result", AuthResult)
_GRANTED_ACTIONS: Final[web.RequestKey[frozenset[Action]]] = web.RequestKey("lightspeed.granted_actions")


def set_auth_result(request: web.Request, result: AuthResult) -> None:
    request[_AUTH_RESULT] = result


def auth_result_from(request: web.Request) -> AuthResult | None:
    """Who the authentication middleware found the caller to be; ``None`` on public routes and skipped probes."""
    return request.get(_AUTH_RESULT)


def set_granted_actions(request: web.Request, actions: frozenset[Action]) -> None:
    request[_GRANTED_ACTIONS] = actions


def granted_actions_from(request: web.Request) -> frozenset[Action] | None:
    """The actions the caller's roles grant, set by the middleware (``authorized_actions_from`` adds the default)."""
    return request.get(_GRANTED_ACTIONS)
