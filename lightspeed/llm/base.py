"""The provider interface: what the query endpoints need from an LLM.

A provider answers a list of chat messages with one model, either all at once
(:meth:`LLMProvider.complete`) or token by token (:meth:`LLMProvider.stream`). Every
failure is an :class:`LLMError`, an HTTP error whose status and upstream-shaped body
the endpoints return as they are: 503 when the provider cannot be reached, 504 when it
does not answer in time, and the provider's own refusals explained.
"""

from __future__ import annotations

import abc
from collections.abc import AsyncGenerator, Sequence
from typing import Any, Final

import attrs

from lightspeed.errors import HttpError
from lightspeed.health import ProviderHealth

__all__ = [
    "Completion",
    "Image",
    "LLMError",
    "LLMProvider",
    "Message",
    "TokenStream",
    "Usage",
    "UNAVAILABLE",
]

#: The ``response`` of the 503 an unreachable provider gives.
UNAVAILABLE: Final = "Unable to connect to the LLM provider"


@attrs.frozen(kw_only=True)
class Image:
    """An image sent with a user message: its content type, its bytes in base64 and their number."""

    content_type: str
    data: str = attrs.field(repr=False)
    size: int

    @property
    def data_url(self) -> str:
        return f"data:{self.content_type};base64,{self.data}"


@attrs.frozen(kw_only=True)
class Message:
    """One chat message: ``role`` is ``system``, ``user`` or ``assistant``; a user message may
    carry images besides its text."""

    role: str
    content: str
    images: tuple[Image, ...] = ()

    def to_dict(self) -> dict[str, Any]:
        """The message as the OpenAI chat completions API takes it: the text alone, or with
        images, a list of content parts (the text, then one ``image_url`` part per image)."""
        if not self.images:
            return {"role": self.role, "content": self.content}
        parts: list[dict[str, Any]] = [{"type": "text", "text": self.content}]
        parts.extend({"type": "image_url", "image_url": {"url": image.data_url}} for image in self.images)
        return {"role": self.role, "content": parts}


@attrs.define(kw_only=True)
class Usage:
    """Token counts, as far as the provider reported them (0 when it did not)."""

    input_tokens: int = 0
    output_tokens: int = 0


@attrs.frozen(kw_only=True)
class Completion:
    """A whole answer."""

    text: str
    usage: Usage


@attrs.define(kw_only=True)
class TokenStream:
    """An answer arriving piece by piece.

    Iterate ``tokens``: lists of text pieces, in order, that join to the answer; each list
    holds the pieces that arrived together, so they can be passed on together. An empty list
    says that nothing more has arrived and the provider now waits for the network: the
    consumer sends on what it holds (a provider that never waits need not say it). ``usage
    is filled in as the provider reports it, at the latest when ``tokens`` is exhausted.
    Call :meth:`aclose` when stopping early, so the connection to the provider is released.
    """

    tokens: AsyncGenerator[list[str], None]
    usage: Usage = attrs.field(factory=Usage)

    async def aclose(self) -> None:
        await self.tokens.aclose()


class LLMError(HttpError):
    """A provider failed; ``status`` and the ``{"detail": {"response", "cause"}}`` body say how."""


class LLMProvider(abc.ABC):
    """One configured entry of ``llm_providers``."""

    def __init__(self, *, name: str, models: Sequence[str]) -> None:
        self.name = name
        self.models = tuple(models)
        #: Its recent calls' outcomes, for ``/readiness``.
        self.health = ProviderHealth()

    @abc.abstractmethod
    async def complete(self, *, model: str, messages: Sequence[Message]) -> Completion:
        """The whole answer to ``messages``; raises :class:`LLMError`."""

    @abc.abstractmethod
    async def stream(self, *, model: str, messages: Sequence[Message]) -> TokenStream:
        """Start an answer and return its tokens.

        Raises :class:`LLMError` before returning when the provider cannot be reached or
        refuses the request; iterating the tokens raises :class:`LLMError` when the answer
        breaks off.
        """

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.name!r} models={list(self.models)}>"
