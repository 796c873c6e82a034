"""Prometheus metrics of one application, in a private registry (two apps in one process never clash).

Served as Prometheus text at ``GET /metrics``: our ``lightspeed_`` series, and the Lightspeed Core
Stack's ``ls_`` series under its names and labels (:class:`LCSMetrics`).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping
from typing import Any, Final

import attrs
from aiohttp import web
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from lightspeed.actions import Action
from lightspeed.auth.routes import requires

__all__ = ["CONTENT_TYPE", "CollectorMetrics", "Metrics", "QueryStats", "add_routes"]

#: The content type of :meth:`Metrics.render`'s output.
CONTENT_TYPE: Final = CONTENT_TYPE_LATEST


class CollectorMetrics:
    """What the data collector reports, registered in ``registry``."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = r = registry
        self.records_pending = Gauge(
            "lightspeed_records_pending", "Stored records waiting to be uploaded, by kind", ["kind"], registry=r
        )
        self.bytes_pending = Gauge(
            "lightspeed_bytes_pending", "Bytes of stored records waiting to be uploaded, by kind", ["kind"], registry=r
        )
        self.records_uploaded = Counter(
            "lightspeed_records_uploaded", "Records delivered to the ingress (covered by a 202)", ["kind"], registry=r
        )
        self.bytes_uploaded = Counter(
            "lightspeed_uploaded_bytes", "Compressed archive bytes delivered to the ingress", registry=r
        )
        self.uploads = Counter(
            "lightspeed_uploads",
            "Upload attempts by outcome: success, transient (retried), rejected (400/401/403/415 and other"
            " client errors), too_large (413), no_credentials (the token was refused and no new one could be had)",
            ["outcome"],
            registry=r,
        )
        self.last_success = Gauge(
            "lightspeed_last_successful_upload_timestamp_seconds",
            "Unix time of the last upload the ingress accepted (0: none yet)",
            registry=r,
        )
        self.consecutive_failures = Gauge(
            "lightspeed_upload_consecutive_failures", "Failed upload attempts since the last success", registry=r
        )
        self.records_set_aside = Counter(
            "lightspeed_records_set_aside", "Records too large for any upload, moved aside", ["kind"], registry=r
        )
        self.records_dropped = Counter(
            "lightspeed_records_dropped",
            "Oldest records deleted unsent because pending data exceeded max_pending_bytes",
            ["kind"],
            registry=r,
        )
        self.storage_available = Gauge(
            "lightspeed_storage_available",
            "1 when the storage backend answered its last check (a readiness probe or a collection), 0 when not",
            registry=r,
        )
        self.credentials_refreshes = Counter(
            "lightspeed_credentials_refreshes",
            "Attempts to get ingress credentials from the configured provider, by mode and outcome (success, failure)",
            ["mode", "outcome"],
            registry=r,
        )
        self.credentials_available = Gauge(
            "lightspeed_credentials_available",
            "1 while the collector holds usable ingress credentials, 0 while its provider cannot get any",
            ["mode"],
            registry=r,
        )
        self.credentials_last_success = Gauge(
            "lightspeed_credentials_last_success_timestamp_seconds",
            "Unix time credentials were last obtained from the provider",
            ["mode"],
            registry=r,
        )
        for outcome in ("success", "transient", "rejected", "too_large", "no_credentials"):
            self.uploads.labels(outcome=outcome)
        for kind in ("feedback", "transcripts"):
            self.records_pending.labels(kind=kind)
            self.bytes_pending.labels(kind=kind)
            self.records_uploaded.labels(kind=kind)


@attrs.define(kw_only=True)
class QueryStats:
    """Counters of what the query endpoints stored, and failed to store (plain attributes,
    read when ``/metrics`` is scraped)."""

    transcripts_stored: int = 0
    transcript_failures: int = 0
    history_failures: int = 0


_QUERY_COUNTERS: Final = {
    "lightspeed_transcripts_stored": ("transcripts_stored", "Transcripts stored by the query endpoints"),
    "lightspeed_transcript_store_failures": (
        "transcript_failures",
        "Transcripts that could not be stored (the user still got the answer)",
    ),
    "lightspeed_history_failures": (
        "history_failures",
        "Conversation owners or history turns that could not be stored or read",
    ),
}


#: The upstream's buckets for request and inference durations, in seconds.
LCS_DURATION_BUCKETS: Final = (0.1, 0.5, 1.0, 2.5, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, float("inf"))
#: The ``path`` label of a request no route matched (never the raw URL: label values stay bounded).
UNMATCHED_PATH: Final = "<unmatched>"
#: The ``endpoint`` label of the LLM series, as the upstream names its query endpoints.
LLM_ENDPOINTS: Final = ("/v1/query", "/v1/streaming_query")


class LCSMetrics:
    """The Lightspeed Core Stack's ``ls_`` series, under its names and labels, so its
    dashboards and alerts work unchanged.

    Unlike the upstream, every request is counted, under its route's template
    (``/v1/conversations/{conversation_id}``), ``/metrics`` included.
    """

    def __init__(self, registry: CollectorRegistry) -> None:
        r = registry
        self.rest_api_calls = Counter(
            "ls_rest_api_calls_total", "REST API calls counter", ["path", "status_code"], registry=r
        )
        self.response_duration = Histogram(
            "ls_response_duration_seconds", "Response durations", ["path"], buckets=LCS_DURATION_BUCKETS, registry=r
        )
        self.llm_calls = Counter("ls_llm_calls", "LLM calls counter", ["provider", "model", "endpoint"], registry=r)
        self.llm_failures = Counter(
            "ls_llm_calls_failures", "LLM calls failures", ["provider", "model", "endpoint"], registry=r
        )
        self.llm_validation_errors = Counter(
            "ls_llm_validation_errors", "LLM validation errors (lightspeed has no shields: 0)", ["endpoint"], registry=r
        )
        self.tokens_sent = Counter(
            "ls_llm_token_sent", "LLM tokens sent", ["provider", "model", "endpoint"], registry=r
        )
        self.tokens_received = Counter(
            "ls_llm_token_received", "LLM tokens received", ["provider", "model", "endpoint"], registry=r
        )
        self.inference_duration = Histogram(
            "ls_llm_inference_duration_seconds",
            "LLM inference call duration",
            ["provider", "model", "endpoint", "result"],
            buckets=LCS_DURATION_BUCKETS,
            registry=r,
        )
        for endpoint in LLM_ENDPOINTS:
            self.llm_validation_errors.labels(endpoint)
        # Every series' labelled children, looked up once: ``labels()`` costs more than the
        # increment itself, and these run for every request.
        self._calls = _Children(self.rest_api_calls)
        self._durations = _Children(self.response_duration)
        self._llm_calls = _Children(self.llm_calls)
        self._llm_failures = _Children(self.llm_failures)
        self._inference = _Children(self.inference_duration)
        self._sent = _Children(self.tokens_sent)
        self._received = _Children(self.tokens_received)

    def observe_request(self, path: str, status: int, seconds: float) -> None:
        """One answered request: ``path`` is its route template (or :data:`UNMATCHED_PATH`)."""
        self._calls.get(path, str(status)).inc()
        self._durations.get(path).observe(seconds)

    def observe_llm_call(
        self,
        *,
        provider: str,
        model: str,
        endpoint: str,
        seconds: float,
        ok: bool,
        input_tokens: int = 0,
        output_tokens: int = 0,
    ) -> None:
        """One call to an LLM provider, as the upstream counts it (failures too)."""
        self._llm_calls.get(provider, model, endpoint).inc()
        if not ok:
            self._llm_failures.get(provider, model, endpoint).inc()
        self._inference.get(provider, model, endpoint, "success" if ok else "failure").observe(seconds)
        if input_tokens:
            self._sent.get(provider, model, endpoint).inc(input_tokens)
        if output_tokens:
            self._received.get(provider, model, endpoint).inc(output_tokens)


class _Children:
    """The children of one labelled metric, by label values, each made once (label values
    are bounded: route templates, statuses, configured providers and models)."""

    def __init__(self, metric: Any) -> None:
        self._metric = metric
        self._children: dict[tuple[str, ...], Any] = {}

    def get(self, *labels: str) -> Any:
        child = self._children.get(labels)
        if child is None:
            child = self._children[labels] = self._metric.labels(*labels)
        return child


class _ProviderModels(Collector):
    """``ls_provider_model_configuration``: one sample per configured (or discovered) provider and model."""

    def __init__(self, models: Callable[[], Iterable[tuple[str, str]]]) -> None:
        self._models = models

    def collect(self) -> Iterator[GaugeMetricFamily]:
        family = GaugeMetricFamily(
            "ls_provider_model_configuration",
            "LLM provider/models combinations defined in configuration",
            labels=["provider", "model"],
        )
        for provider, model in self._models():
            family.add_metric([provider, model], 1)
        yield family


@attrs.define(kw_only=True)
class Metrics:
    """All metrics of one application."""

    registry: CollectorRegistry = attrs.field(factory=lambda: CollectorRegistry(auto_describe=True))
    collector: CollectorMetrics = attrs.field(init=False)
    queries: QueryStats = attrs.field(init=False, factory=QueryStats)
    lcs: LCSMetrics = attrs.field(init=False)

    def __attrs_post_init__(self) -> None:
        self.collector = CollectorMetrics(registry=self.registry)
        self.expose_counters(self.queries, _QUERY_COUNTERS)
        self.lcs = LCSMetrics(self.registry)

    def expose_provider_models(self, models: Callable[[], Iterable[tuple[str, str]]]) -> None:
        """Export ``ls_provider_model_configuration`` from ``models()``, read at each scrape."""
        self.registry.register(_ProviderModels(models))

    def expose_counters(self, source: object, counters: Mapping[str, tuple[str, str]]) -> None:
        """Export integer attributes of ``source`` as counters: ``{metric name: (attribute, help)}``.

        Read when ``/metrics`` is scraped, so the hot path just increments a plain attribute.
        """
        self.registry.register(_AttributeCounters(source, counters))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)


class _AttributeCounters(Collector):
    def __init__(self, source: object, counters: Mapping[str, tuple[str, str]]) -> None:
        self._source = source
        self._counters = dict(counters)

    def collect(self) -> Iterator[CounterMetricFamily]:
        for name, (attribute, help_text) in self._counters.items():
            yield CounterMetricFamily(name, help_text, value=getattr(self._source, attribute))


def add_routes(app: web.Application, metrics: Metrics) -> None:
    """Serve ``metrics`` as Prometheus text at ``GET /metrics``."""

    from lightspeed.api.openapi import Response, operation  # the API imports this module's classes

    @operation(
        summary="Prometheus metrics (text exposition format)",
        tags=["service"],
        responses={200: Response(description="Prometheus text", content={"text/plain": {"type": "string"}})},
        errors=[401, 403],
    )
    @requires(Action.GET_METRICS)
    async def handle(request: web.Request) -> web.Response:
        return web.Response(body=metrics.render(), headers={"Content-Type": CONTENT_TYPE})

    app.router.add_get("/metrics", handle)
