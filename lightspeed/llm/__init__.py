"""LLM providers, chosen in the configuration's ``llm_providers`` and ``inference`` sections."""

from __future__ import annotations

from collections.abc import Callable, Sequence

import aiohttp

from lightspeed.config import Config, LLMProviderConfig
from lightspeed.llm.base import UNAVAILABLE, Completion, LLMError, LLMProvider, Message, TokenStream, Usage
from lightspeed.llm.echo import EchoProvider
from lightspeed.llm.openai import OpenAIProvider

__all__ = [
    "Completion",
    "EchoProvider",
    "LLMError",
    "LLMProvider",
    "LLMRegistry",
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


class LLMRegistry:
    """The configured providers, and the choice of provider and model for each query."""

    def __init__(self, providers: Sequence[LLMProvider], *, default: tuple[str, str] | None = None) -> None:
        self.providers = {p.name: p for p in providers}
        if default is None and providers and providers[0].models:
            default = (providers[0].name, providers[0].models[0])
        self.default = default

    @classmethod
    def from_config(cls, config: Config, *, session: Callable[[], aiohttp.ClientSession]) -> LLMRegistry:
        inf = config.inference
        default = (inf.default_provider, inf.default_model) if inf.default_provider and inf.default_model else None
        return cls([create_provider(p, session=session) for p in config.llm_providers], default=default)

    def resolve(self, provider: str | None, model: str | None) -> tuple[LLMProvider, str]:
        """The provider and model for a query naming ``provider``/``model`` (both or neither).

        Raises a 404 :class:`LLMError` ``Model not found`` for one that is not configured.
        """
        if provider is None or model is None:
            if self.default is None:
                raise LLMError(404, "Model not found", "No LLM provider is configured (llm_providers is empty)")
            provider, model = self.default
        found = self.providers.get(provider)
        if found is None:
            known = ", ".join(sorted(self.providers)) or "none"
            raise LLMError(
                404, "Model not found", f"Provider {provider!r} is not configured (configured providers: {known})"
            )
        if model not in found.models:
            raise LLMError(
                404,
                "Model not found",
                f"Model {model!r} is not a model of provider {provider!r} (its models: {', '.join(found.models)})",
            )
        return found, model
