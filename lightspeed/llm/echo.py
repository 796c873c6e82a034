"""``echo``: a development provider that answers offline and deterministically.

The answer is the last user message, word for word (history and system prompt are
counted in ``input_tokens`` but not repeated), followed by one line per image it carried
(``[Image 1 received: image/png, 68 bytes]``), so a client can see that its images arrived.
Streaming yields one word, with the whitespace after it, per token, so the joined tokens
equal the whole answer; tokens come in batches of :data:`BATCH_TOKENS`, and the event loop
gets a turn between batches, so a long answer never holds it (other requests and the probes
are answered meanwhile). No network, no randomness: the service runs on a fresh machine and
tests can be exact.
"""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncGenerator, Sequence
from typing import Final

from lightspeed.llm.base import Completion, LLMProvider, Message, TokenStream, Usage

__all__ = ["EchoProvider", "echo_answer", "split_tokens"]

_TOKEN_RE: Final = re.compile(r"\s*\S+\s*|\s+")
#: Tokens passed on together; the event loop runs other work between two batches.
BATCH_TOKENS: Final = 32


def split_tokens(text: str) -> list[str]:
    """``text`` cut into word tokens that join back to ``text`` exactly."""
    return _TOKEN_RE.findall(text)


def _count(messages: Sequence[Message]) -> int:
    return sum(len(m.content.split()) for m in messages)


def echo_answer(messages: Sequence[Message]) -> str:
    """The answer the echo provider gives: the last user message, and a line per image in it."""
    for message in reversed(messages):
        if message.role == "user":
            lines = [
                f"[Image {i} received: {img.content_type}, {img.size} bytes]" for i, img in enumerate(message.images, 1)
            ]
            return "\n\n".join([message.content, *lines]) if lines else message.content
    return ""


class EchoProvider(LLMProvider):
    """Answers with the question; see the module documentation."""

    async def complete(self, *, model: str, messages: Sequence[Message]) -> Completion:
        text = echo_answer(messages)
        return Completion(text=text, usage=Usage(input_tokens=_count(messages), output_tokens=len(text.split())))

    async def stream(self, *, model: str, messages: Sequence[Message]) -> TokenStream:
        text = echo_answer(messages)
        usage = Usage(input_tokens=_count(messages))

        async def tokens() -> AsyncGenerator[list[str], None]:
            words = split_tokens(text)
            for start in range(0, len(words), BATCH_TOKENS):
                batch = words[start : start + BATCH_TOKENS]
                usage.output_tokens += len(batch)
                yield batch
                await asyncio.sleep(0)  # let the loop serve others between batches

        return TokenStream(tokens=tokens(), usage=usage)
