"""The echo provider: exact answers, and a long answer never holds the event loop."""

from __future__ import annotations

import asyncio
import itertools

from lightspeed.llm import EchoProvider, Message
from lightspeed.llm.echo import BATCH_TOKENS


async def test_a_long_echo_stream_lets_other_tasks_run_between_batches() -> None:
    provider = EchoProvider(name="echo", models=["echo"])
    text = " ".join(f"w{i}" for i in range(10 * BATCH_TOKENS))
    stream = await provider.stream(model="echo", messages=[Message(role="user", content=text)])
    ticks = 0

    async def ticker() -> None:
        nonlocal ticks
        while True:
            ticks += 1
            await asyncio.sleep(0)

    task = asyncio.create_task(ticker())
    await asyncio.sleep(0)
    seen_at: list[int] = []
    pieces: list[str] = []
    async for batch in stream.tokens:  # a consumer that never waits itself, as a fast client is
        seen_at.append(ticks)
        pieces.extend(batch)
    task.cancel()
    assert "".join(pieces) == text
    assert len(seen_at) == 10
    # Another task (a probe, another request) ran between every two batches.
    assert all(later > earlier for earlier, later in itertools.pairwise(seen_at))
    assert stream.usage.output_tokens == 10 * BATCH_TOKENS
