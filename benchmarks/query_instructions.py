"""Instructions the service executes per query, counted by valgrind's callgrind (issue 9).

CPU time per request (``query_overhead.py``) swings by 10% and more from run to run on a
shared virtual machine, more than most single changes to the query path save. Callgrind
counts the instructions the process executes in user space instead: the same code and the
same requests give nearly the same count, whatever else the machine is doing, so two variants
of the code can be compared one against the other in a few minutes. (It does not count the
kernel's work: system calls, the disk, context switches; ``query_overhead.py`` and
``disk_ops.py`` measure those.)

One run starts, on 127.0.0.1, the fake LLM of the tests (no delay) and
``python -m lightspeed serve`` under ``valgrind --tool=callgrind`` (one worker, transcripts on,
filesystem store in a temporary directory), sends ``--warmup`` requests, zeroes the counters,
sends ``--requests`` more, dumps the counters and prints the instructions per request: the
whole process (every thread), and the event loop's thread alone. Conversations of 1 to 6
turns (3.5 on average), in a fixed order, ``--concurrency`` at a time, as the multi-turn mix
of ``query_overhead.py``.

Needs valgrind (Debian: ``apt-get install -y valgrind``). Run from the repository root::

    .venv/bin/python benchmarks/query_instructions.py                       # /v1/query, 300 requests
    .venv/bin/python benchmarks/query_instructions.py --endpoint streaming_query
    .venv/bin/python benchmarks/query_instructions.py --bare        # the bare aiohttp forwarder
    cd ../other-checkout && ../this/.venv/bin/python benchmarks/query_instructions.py  # another variant

Each request takes some 50 times longer under valgrind than without it; the default run takes
about a minute.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import yaml

sys.path.insert(0, str(Path(__file__).resolve().parent))
from query_overhead import BARE, FAKE, QUESTION, free_port, service_config, stop, wait_ready


def conversations(total: int, seed: int) -> list[int]:
    """Conversation lengths (1 to 6 turns) adding up to ``total`` requests."""
    rng = random.Random(seed)
    lengths: list[int] = []
    while sum(lengths) < total:
        lengths.append(min(rng.randint(1, 6), total - sum(lengths)))
    return lengths


async def drive(url: str, endpoint: str, lengths: list[int], concurrency: int) -> int:
    """Send each conversation's turns in order, ``concurrency`` conversations at a time."""
    queue: asyncio.Queue[int] = asyncio.Queue()
    for n in lengths:
        queue.put_nowait(n)
    sent = 0

    async def worker(session: aiohttp.ClientSession) -> None:
        nonlocal sent
        while not queue.empty():
            turns = queue.get_nowait()
            conversation_id = None
            for _ in range(turns):
                body: dict[str, Any] = {"query": QUESTION}
                if conversation_id is not None:
                    body["conversation_id"] = conversation_id
                async with session.post(f"{url}/v1/{endpoint}", json=body) as resp:
                    text = await resp.text()
                    if resp.status != 200:
                        raise SystemExit(f"{endpoint} answered {resp.status}: {text[:300]}")
                    if endpoint == "query":
                        conversation_id = (await resp.json())["conversation_id"]
                    else:
                        found = re.search(r'"conversation_id": "([0-9a-f-]+)"', text)
                        if found is None:
                            raise SystemExit(f"no conversation_id in the stream: {text[:300]}")
                        conversation_id = found.group(1)
                sent += 1

    timeout = aiohttp.ClientTimeout(total=600)
    async with aiohttp.ClientSession(timeout=timeout) as session:
        await asyncio.gather(*(worker(session) for _ in range(concurrency)))
    return sent


def totals(path: Path) -> dict[str, int]:
    """Instructions per thread in a callgrind output (one file per thread with --separate-threads)."""
    counts: dict[str, int] = {}
    for file in sorted(path.parent.glob(path.name + "*")):
        text = file.read_text(errors="replace")
        thread = re.search(r"^thread: (\d+)", text, re.M)
        total = re.search(r"^(?:totals|summary): (\d+)", text, re.M)
        if thread and total:
            counts[thread.group(1)] = counts.get(thread.group(1), 0) + int(total.group(1))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--endpoint", choices=("query", "streaming_query"), default="query")
    parser.add_argument("--requests", type=int, default=300)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--tmpdir", default=None, help="where the store's temporary directory goes")
    parser.add_argument(
        "--bare",
        action="store_true",
        help="count benchmarks/bare_query_server.py instead: HTTP in, the LLM call and HTTP out, nothing else",
    )
    parser.add_argument(
        "--keep", type=Path, help="copy callgrind's output files here (for callgrind_annotate, by function)"
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None or shutil.which("callgrind_control") is None:
        raise SystemExit("valgrind is not on PATH (Debian: apt-get install -y valgrind)")

    with tempfile.TemporaryDirectory(prefix="lightspeed-instr-", dir=args.tmpdir) as tmp:
        work = Path(tmp)
        llm_port, ls_port = free_port(), free_port()
        config = service_config(work, ls_port, f"http://127.0.0.1:{llm_port}/v1")
        (work / "config.yaml").write_text(yaml.safe_dump(config))
        env = {k: v for k, v in os.environ.items() if k != "LIGHTSPEED_CONFIG"}
        out = work / "callgrind.out"
        fake = subprocess.Popen(
            [sys.executable, str(FAKE), "--port", str(llm_port)], stdout=subprocess.DEVNULL, env=env
        )
        service = subprocess.Popen(
            [
                "valgrind",
                "--tool=callgrind",
                "--separate-threads=yes",
                f"--callgrind-out-file={out}",
                sys.executable,
                *(
                    [str(BARE), "--port", str(ls_port), "--llm-url", f"http://127.0.0.1:{llm_port}/v1"]
                    if args.bare
                    else ["-m", "lightspeed", "serve", "-c", str(work / "config.yaml")]
                ),
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
        url = f"http://127.0.0.1:{ls_port}"
        try:
            wait_ready(f"http://127.0.0.1:{llm_port}/v1/models", fake)
            wait_ready(f"{url}/liveness", service, timeout=300)  # the bare server's 404 answers too
            asyncio.run(drive(url, args.endpoint, conversations(args.warmup, seed=1), args.concurrency))
            subprocess.run(["callgrind_control", "--zero", str(service.pid)], check=True, capture_output=True)
            started = time.monotonic()
            sent = asyncio.run(drive(url, args.endpoint, conversations(args.requests, seed=2), args.concurrency))
            elapsed = time.monotonic() - started
            subprocess.run(["callgrind_control", "--dump", str(service.pid)], check=True, capture_output=True)
            counts = totals(out)
            if args.keep is not None:
                args.keep.mkdir(parents=True, exist_ok=True)
                for file in out.parent.glob(out.name + "*"):
                    shutil.copy(file, args.keep / file.name)
        finally:
            stop(service)
            stop(fake)
        if not counts:
            raise SystemExit("callgrind wrote no counts")
        # Read right after --dump, before the service stops: the only dump there is then holds
        # what was counted since --zero, one file per thread (callgrind.out.1-01, -02, ...).
        per_thread = {t: n / sent for t, n in counts.items()}
        loop_thread = per_thread.get("1", 0.0)
        print(
            f"{'bare ' if args.bare else ''}/v1/{args.endpoint}: {sent} requests in {elapsed:.0f} s under callgrind;"
            f" {sum(per_thread.values()) / 1e6:.3f} M instructions per request (all threads),"
            f" {loop_thread / 1e6:.3f} M on the event loop's thread"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
