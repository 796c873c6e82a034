"""LLM providers, chosen in the configuration's ``llm_providers`` and ``inference`` sections."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Sequence

import aiohttp
import attrs

from lightspeed.config import Config, LLMProviderConfig
from lightspeed.llm.base import UNAVAILABLE, Completion, Image, LLMError, LLMProvider, Message, TokenStream, Usage
from lightspeed.llm.echo import EchoProvider
from lightspeed.llm.openai import ListedModel, OpenAIProvider

__all__ = [
    "Completion",
    "EchoProvider",
    "Image",
    "LLMError",
    "LLMProvider",
    "LLMRegistry",
    "ListedModel",
    "Message",
    "OpenAIProvider",
    "TokenStream",
    "UNAVAILABLE",
    "Usage",
    "create_provider",
]


def create_provider(config: LLMProviderConfig, *, session: Callable[[], aiohttp.ClientSession]) -> LLMProvider:
    """The provider a ``llm_providers`` entry describes (its type was validated at config load)."""
    if config.type == "openai":
        return OpenAIProvider(config, session=session)
    if config.type == "echo":
        return EchoProvider(name=config.name, models=config.models)
    raise ValueError(f"unknown LLM provider type {config.type!r}")


log = logging.getLogger("lightspeed.llm")


class LLMRegistry:
    """The configured providers, and the choice of provider and model for each query.

    Providers with ``discover_models`` also offer the models their server lists; a model
    listed as ``other/name`` (a Llama Stack's naming) belongs to a provider ``other`` at the
    same server, added here. :meth:`discover` asks; :meth:`resolve_or_discover` asks again
    (at most every ``timeout_seconds``) when a query names a model not known yet.
    """

    def __init__(self, providers: Sequence[LLMProvider], *, default: tuple[str, str] | None = None) -> None:
        self.providers = {p.name: p for p in providers}
        if default is None and providers and providers[0].models:
            default = (providers[0].name, providers[0].models[0])
        self.default = default
        self._sources = [p for p in providers if isinstance(p, OpenAIProvider) and p.config.discover_models]
        self._added: dict[str, OpenAIProvider] = {}  # providers a source's list brought in
        self._asked: dict[str, float] = {}
        self._lock = asyncio.Lock()

    @classmethod
    def from_config(cls, config: Config, *, session: Callable[[], aiohttp.ClientSession]) -> LLMRegistry:
        inf = config.inference
        default = (inf.default_provider, inf.default_model) if inf.default_provider and inf.default_model else None
        return cls([create_provider(p, session=session) for p in config.llm_providers], default=default)

    def models(self) -> list[tuple[str, str]]:
        """Every ``(provider, model)`` a query may name, configured or discovered."""
        return [(p.name, m) for p in list(self.providers.values()) for m in p.models]

    @property
    def discovers(self) -> bool:
        return bool(self._sources)

    async def discover(self, *, force: bool = True) -> None:
        """Ask each discovering provider for its models; failures are logged, never raised."""
        async with self._lock:
            for source in self._sources:
                now = time.monotonic()
                if not force and now - self._asked.get(source.name, -1e9) < source.timeout_seconds:
                    continue
                self._asked[source.name] = now
                try:
                    listed = await source.list_models()
                except LLMError as exc:
                    source.health.record(ok=False, message=f"{exc.response} ({exc.status})")
                    log.warning("cannot list the models of provider %r: %s", source.name, exc.cause)
                    continue
                source.health.record(ok=True)
                for item in listed:
                    self._add(source, item)

    def _add(self, source: OpenAIProvider, item: ListedModel) -> None:
        if item.provider is None or item.provider == source.name:
            target: OpenAIProvider | None = source
            if item.provider is None and source.model_prefix:
                return  # it could not be addressed through the prefix
        elif item.provider in self._added:
            target = self._added[item.provider]
        elif item.provider in self.providers:
            return  # a configured provider of that name is another server
        else:
            config = attrs.evolve(
                source.config, name=item.provider, models=(), model_prefix=f"{item.provider}/", discover_models=False
            )
            target = self._added[item.provider] = OpenAIProvider(config, session=source.session_factory)
            self.providers[item.provider] = target
        assert target is not None
        if item.model not in target.models:
            target.models = (*target.models, item.model)
            log.info("provider %r offers model %r", target.name, item.model)
        if self.default is None:
            self.default = (target.name, item.model)

    async def resolve_or_discover(self, provider: str | None, model: str | None) -> tuple[LLMProvider, str]:
        """:meth:`resolve`, asking the discovering providers again when the model is not known yet."""
        try:
            return self.resolve(provider, model)
        except LLMError as exc:
            if exc.status != 404 or not self._sources:
                raise
        await self.discover(force=False)
        return self.resolve(provider, model)

    def resolve(self, provider: str | None, model: str | None) -> tuple[LLMProvider, str]:
        """The provider and model for a query naming ``provider``/``model`` (both or neither).

        Raises a 404 :class:`LLMError` ``Model not found`` for one that is not configured,
        worded as the upstream words it (an unknown provider is an unknown model too).
        """
        if provider is None or model is None:
            if self.default is None:
                raise LLMError(404, "Model not found", "No Model is configured")
            provider, model = self.default
        found = self.providers.get(provider)
        if found is None or model not in found.models:
            raise LLMError(404, "Model not found", f"Model with ID {model} does not exist")
        return found, model
