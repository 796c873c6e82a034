"""A soak: minutes of mixed traffic with the collector running, then every record accounted for (issue 9).

One run starts, on 127.0.0.1:

* the fake OpenAI-compatible LLM of the tests (``tests/query/fake_llm.py``), answering after
  ``--delay-ms``;
* the local ingress (``python -m lightspeed ingress``), storing what it accepts;
* ``python -m lightspeed serve`` (``--workers``, default 1): filesystem store in a temporary
  directory, feedback and transcripts on, the data collector on (every ``--interval`` seconds,
  deleting what the ingress accepted), access log off;

then sends, at a steady ``--rate`` requests per second, a mix of ``/v1/query`` (45%),
``/v1/streaming_query`` (35%) and ``/v1/feedback`` (20%). Conversations run 1 to 6 turns
(3.5 on average); a query continues a waiting conversation 7 times in 10, and always once
:data:`IDLE_TARGET` conversations wait, so that after the first minutes the time between a
conversation's turns stays steady (about 4 s at 100 requests a second) instead of growing
all through the run; feedback goes to a conversation that has an answer. Every query and every
feedback carries a unique marker, so that afterwards each answered record can be looked for
in the archives the ingress received.

Minutes are counted from half a collection interval after the first archive reaches the ingress
(the load runs from the start), so that each minute holds one whole collection in its middle.
Each minute it prints the service's CPU time per answered request (user + system, from
``/proc``, summed over the service's processes) and its RSS. At the end it stops the load, lets
the collector ship what is left, stops the service (its final collection), reads every archive
the ingress kept and checks that every answered query has exactly one transcript and every
accepted feedback exactly one record.

Target (issue 9): CPU per request and RSS flat after the first minutes (each minute from the
sixth on within 10% of minute 5), nothing lost, nothing twice.

A control beside it (``--control-rate``, default 20 requests/s, 0 for none): the bare aiohttp
forwarder of the query benchmark (``benchmarks/bare_query_server.py``: HTTP in, the LLM call,
HTTP out; nothing stored), asked ``/v1/query`` and ``/v1/streaming_query`` at its own steady
rate. Its CPU per request, each minute, is what this machine's minute-to-minute movement does to
a process that does nothing of ours: when both move together, the movement is the machine's.
The run ends with its spread and the correlation of the two series.

Run from the repository root::

    .venv/bin/python benchmarks/soak.py                     # 30 minutes at 100 requests/s
    .venv/bin/python benchmarks/soak.py --minutes 2 --rate 50   # a quick check of the harness
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import aiohttp
import yaml
from disk_ops import inode_cost_us, settle_disk

ROOT = Path(__file__).resolve().parent.parent
FAKE = ROOT / "tests" / "query" / "fake_llm.py"
BARE = ROOT / "benchmarks" / "bare_query_server.py"
TICKS = os.sysconf("SC_CLK_TCK")
TOLERANCE = 0.10
BASE_MINUTE = 5


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def descendants(pid: int) -> list[int]:
    """``pid`` and every process below it (the service's workers)."""
    children: dict[int, list[int]] = {}
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            children.setdefault(int(fields[1]), []).append(int(entry.name))
    found, todo = [], [pid]
    while todo:
        p = todo.pop()
        found.append(p)
        todo.extend(children.get(p, []))
    return found


def cpu_and_rss(pid: int) -> tuple[float, float, float]:
    """CPU seconds used so far (user + system), the system (kernel) part of them, and resident
    MiB, summed over the process tree."""
    cpu, kernel, rss_kib = 0.0, 0.0, 0
    for p in descendants(pid):
        with contextlib.suppress(OSError, IndexError, ValueError):
            fields = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            cpu += (int(fields[11]) + int(fields[12])) / TICKS
            kernel += int(fields[12]) / TICKS
            for line in Path(f"/proc/{p}/status").read_text().splitlines():
                if line.startswith("VmRSS:"):
                    rss_kib += int(line.split()[1])
    return cpu, kernel, rss_kib / 1024


async def wait_ready(session: aiohttp.ClientSession, url: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"{proc.args!r} exited with {proc.returncode} before it was ready")
        with contextlib.suppress(aiohttp.ClientError, OSError):
            async with session.get(url) as resp:
                await resp.read()
                return
        await asyncio.sleep(0.1)
    raise SystemExit(f"{url} not ready within 30 s")


#: Conversations waiting for their next turn, at most (reached in the fifth minute at 100
#: requests a second). Without a bound their number grew all through a run (about 80 a minute),
#: and with it the time between a conversation's turns and what a follow-up costs the service
#: (its owner no longer remembered, its turns no longer in SQLite's cache): CPU per request
#: rose from 1.72 ms at minute 5 to 2.41 ms at minute 26 in one run; with the bound it stayed
#: between 1.68 and 2.08 ms.
IDLE_TARGET = 300


class Load:
    """The client side: sends the mix, remembers every marker that got a 200."""

    def __init__(self, session: aiohttp.ClientSession, base: str, rng: random.Random) -> None:
        self.session = session
        self.base = base
        self.rng = rng
        self.n = 0
        #: conversation id -> turns left to ask; only conversations not in use right now.
        self.idle: dict[str, int] = {}
        #: conversations with at least one answer (feedback targets), most recent last.
        self.answered: list[str] = []
        self.queries_ok: set[str] = set()
        self.feedback_ok: set[str] = set()
        self.failures: Counter[str] = Counter()
        self.done = 0

    def _marker(self, kind: str) -> str:
        self.n += 1
        return f"soak-{kind}-{self.n:08d}"

    async def one(self) -> None:
        roll = self.rng.random()
        try:
            if roll < 0.20 and self.answered:
                await self._feedback()
            else:
                await self._query(stream=roll >= 0.55)
        except (TimeoutError, aiohttp.ClientError) as exc:
            self.failures[type(exc).__name__] += 1
        self.done += 1

    async def _query(self, *, stream: bool) -> None:
        marker = self._marker("q")
        body: dict[str, Any] = {"query": f"{marker}: how does a Deployment roll out a new version?"}
        if self.idle and (len(self.idle) >= IDLE_TARGET or self.rng.random() < 0.7):
            conversation = self.rng.choice(list(self.idle))
            left = self.idle.pop(conversation)
            body["conversation_id"] = conversation
        else:
            conversation, left = None, self.rng.randint(1, 6)
        path = "/v1/streaming_query" if stream else "/v1/query"
        async with self.session.post(self.base + path, json=body) as resp:
            if resp.status != 200:
                self.failures[f"{path} {resp.status}"] += 1
                await resp.read()
                return
            if stream:
                text = (await resp.read()).decode()
                if '"event": "end"' not in text and '"event":"end"' not in text:
                    self.failures[f"{path} without end"] += 1
                    return
                for line in text.splitlines():
                    if line.startswith("data: ") and '"start"' in line:
                        conversation = json.loads(line[6:])["data"]["conversation_id"]
                        break
            else:
                conversation = (await resp.json())["conversation_id"]
        self.queries_ok.add(marker)
        assert conversation is not None
        if conversation not in self.answered:
            self.answered.append(conversation)
            if len(self.answered) > 2000:
                del self.answered[:1000]
        if left > 1:
            self.idle[conversation] = left - 1

    async def _feedback(self) -> None:
        marker = self._marker("f")
        body = {
            "conversation_id": self.rng.choice(self.answered[-200:]),
            "user_question": "how does a Deployment roll out a new version?",
            "llm_response": "It replaces the pods step by step.",
            "sentiment": self.rng.choice((1, -1)),
            "user_feedback": marker,
        }
        async with self.session.post(self.base + "/v1/feedback", json=body) as resp:
            await resp.read()
            if resp.status == 200:
                self.feedback_ok.add(marker)
            else:
                self.failures[f"/v1/feedback {resp.status}"] += 1


class Control:
    """The control's client: ``/v1/query`` (56%) and ``/v1/streaming_query`` (44%, as in the
    service's mix without feedback) to the bare forwarder, at a steady rate of its own."""

    def __init__(self, session: aiohttp.ClientSession, base: str, rate: float, rng: random.Random, *, pid: int) -> None:
        self.session, self.base, self.rate, self.rng, self.pid = session, base, rate, rng, pid
        self.done = 0
        self.failures = 0

    def sample(self) -> tuple[float, int]:
        """The forwarder's CPU seconds so far and the requests it answered."""
        return cpu_and_rss(self.pid)[0], self.done

    async def run(self, stop: asyncio.Event) -> None:
        start, sent = time.monotonic(), 0
        inflight: set[asyncio.Task[None]] = set()
        while not stop.is_set():
            now = time.monotonic()
            due = start + sent / self.rate
            if due > now:
                await asyncio.sleep(due - now)
                continue
            task = asyncio.create_task(self.one())
            inflight.add(task)
            task.add_done_callback(inflight.discard)
            sent += 1
        if inflight:
            await asyncio.wait(inflight, timeout=60)

    async def one(self) -> None:
        path = "/v1/streaming_query" if self.rng.random() < 0.44 else "/v1/query"
        body = {"query": "how does a Deployment roll out a new version?"}
        try:
            async with self.session.post(self.base + path, json=body) as resp:
                await resp.read()
                ok = resp.status == 200
        except (TimeoutError, aiohttp.ClientError):
            ok = False
        if ok:
            self.done += 1
        else:
            self.failures += 1


async def first_archive(ingress_dir: Path, within: float) -> float | None:
    """When (``time.monotonic()``) the first archive reached the ingress (a collection that
    shipped something ended just before); None if none did ``within`` seconds."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if await asyncio.to_thread(lambda: any(ingress_dir.glob("*.tar.gz"))):
            return time.monotonic()
        await asyncio.sleep(0.2)
    return None


def shipped_markers(ingress_dir: Path) -> tuple[Counter[str], Counter[str], int]:
    """Markers found in the archives the ingress kept: (queries, feedback, archives)."""
    queries: Counter[str] = Counter()
    feedback: Counter[str] = Counter()
    archives = sorted(ingress_dir.glob("*.tar.gz"))
    for path in archives:
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if not member.isfile() or not member.name.endswith(".json"):
                    continue
                f = tar.extractfile(member)
                assert f is not None
                record = json.loads(f.read())
                if "user_feedback" in record:
                    feedback[str(record.get("user_feedback"))] += 1
                else:
                    queries[str(record.get("redacted_query", "")).split(":", 1)[0]] += 1
    return queries, feedback, len(archives)


def start_servers(args: argparse.Namespace, work: Path) -> tuple[dict[str, subprocess.Popen[bytes]], dict[str, int]]:
    """Write the configuration and start the fake LLM, the local ingress and the service."""
    llm_port, ls_port, ingress_port, bare_port = free_port(), free_port(), free_port(), free_port()
    ingress_dir = work / "ingress"
    config = {
        "service": {
            "host": "127.0.0.1",
            "port": ls_port,
            "workers": args.workers,
            "access_log": False,
            "log_level": "warning",
        },
        "user_data_collection": {
            "feedback_enabled": True,
            "feedback_storage": str(work / "data" / "feedback"),
            "transcripts_enabled": True,
            "transcripts_storage": str(work / "data" / "transcripts"),
            "data_collector": {
                "enabled": True,
                "ingress_server_url": f"http://127.0.0.1:{ingress_port}/api/ingress/v1/upload",
                "ingress_server_auth_token": "soak-token",
                "ingress_content_service_name": "soak",
                "collection_interval": args.interval,
                "cleanup_after_send": True,
                "connection_timeout_seconds": 30,
            },
        },
        "inference": {"default_provider": "fake", "default_model": "fake-model"},
        "llm_providers": [
            {"name": "fake", "type": "openai", "url": f"http://127.0.0.1:{llm_port}/v1", "models": ["fake-model"]}
        ],
    }
    (work / "config.yaml").write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "LIGHTSPEED_CONFIG"}
    with open(work / "service.log", "wb") as log:  # the child keeps its own copy
        procs = {
            "fake": subprocess.Popen(
                [sys.executable, str(FAKE), "--port", str(llm_port), "--delay-ms", str(args.delay_ms)],
                stdout=subprocess.DEVNULL,
                env=env,
            ),
            "ingress": subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "lightspeed",
                    "ingress",
                    "--port",
                    str(ingress_port),
                    "--store",
                    str(ingress_dir),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                env=env,
            ),
            "service": subprocess.Popen(
                [sys.executable, "-m", "lightspeed", "serve", "-c", str(work / "config.yaml")],
                cwd=work,
                env=env,
                stdout=subprocess.DEVNULL,
                stderr=log,
            ),
        }
    if args.control_rate > 0:
        procs["bare"] = subprocess.Popen(
            [sys.executable, str(BARE), "--port", str(bare_port), "--llm-url", f"http://127.0.0.1:{llm_port}/v1"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            env=env,
        )
    return procs, {"llm": llm_port, "ls": ls_port, "ingress": ingress_port, "bare": bare_port}


async def run(args: argparse.Namespace, work: Path) -> int:
    (work / "probes").mkdir()
    settle_disk(work / "probes")  # files another run deleted lately would weigh on the first minutes
    procs, ports = start_servers(args, work)
    llm_port, ls_port, ingress_port = ports["llm"], ports["ls"], ports["ingress"]
    ingress_dir = work / "ingress"
    service = procs["service"]
    base = f"http://127.0.0.1:{ls_port}"
    timeout = aiohttp.ClientTimeout(total=60)
    connector = aiohttp.TCPConnector(limit=args.max_inflight)
    rows: list[tuple[int, int, float, float]] = []
    control_rows: list[float] = []  # the bare forwarder's CPU ms per request, each minute
    bare = procs.get("bare")
    try:
        async with aiohttp.ClientSession(timeout=timeout, connector=connector) as session:
            await wait_ready(session, f"http://127.0.0.1:{llm_port}/v1/models", procs["fake"])
            await wait_ready(session, f"http://127.0.0.1:{ingress_port}/control", procs["ingress"])
            await wait_ready(session, base + "/liveness", service)
            if bare is not None:
                await wait_ready(session, f"http://127.0.0.1:{ports['bare']}/v1/query", bare)
            load = Load(session, base, random.Random(args.seed))
            print(
                f"soak: {args.minutes} min at {args.rate} req/s (45% query, 35% streaming, 20% feedback), "
                f"{args.workers} worker(s), collector every {args.interval} s, fake LLM {args.delay_ms:g} ms, "
                f"store in {work}",
                flush=True,
            )
            # The kernel's part is mostly making files; "inode us" is what a new file costs at the
            # end of the minute (disk_ops.inode_cost_us): on ext4 without a journal it rises with
            # what the collector deleted in the minutes before.
            # "waiting": conversations waiting for their next turn (at most IDLE_TARGET).
            # "bare ms/req": the control's CPU per request in the same minute (--control-rate).
            print(
                " min  requests  cpu ms/req  (kernel)  rss MiB  inode us  load1  waiting  bare ms/req  ratio",
                flush=True,
            )
            inflight: set[asyncio.Task[None]] = set()
            start = time.monotonic()
            # The minutes are counted from half a collection interval after the first collection
            # that shipped something, so that each minute holds one whole collection in its middle
            # instead of a boundary splitting one between two minutes in shares that vary.
            shipped = asyncio.create_task(first_archive(ingress_dir, 2 * args.interval + 60))
            end = minute_end = float("inf")
            measuring = False
            cpu0 = kernel0 = bare_cpu0 = 0.0
            done0 = bare_done0 = 0
            control: Control | None = None
            control_task: asyncio.Task[None] | None = None
            stop_control = asyncio.Event()
            if bare is not None:
                control = Control(
                    session, f"http://127.0.0.1:{ports['bare']}", args.control_rate, random.Random(2), pid=bare.pid
                )
                control_task = asyncio.create_task(control.run(stop_control))
            sent = 0
            while True:
                now = time.monotonic()
                if end == float("inf") and shipped.done():
                    if (shipped_at := shipped.result()) is None:
                        raise SystemExit("no archive reached the ingress: is the collector shipping?")
                    minute_end = shipped_at + args.interval / 2
                    end = minute_end + args.minutes * 60
                if now >= minute_end and not measuring:
                    measuring = True
                    cpu0, kernel0, _ = cpu_and_rss(service.pid)
                    done0 = load.done
                    if control is not None:
                        bare_cpu0, bare_done0 = control.sample()
                    minute_end += 60
                elif now >= minute_end:
                    cpu, kernel, rss = cpu_and_rss(service.pid)
                    count = load.done - done0
                    per = (cpu - cpu0) * 1000 / count if count else float("nan")
                    per_kernel = (kernel - kernel0) * 1000 / count if count else float("nan")
                    inode = await asyncio.to_thread(inode_cost_us, work / "probes")
                    rows.append((len(rows) + 1, count, per, rss))
                    control_text = ""
                    if control is not None:
                        bare_cpu, bare_done = control.sample()
                        bare_count = bare_done - bare_done0
                        bare_per = (bare_cpu - bare_cpu0) * 1000 / bare_count if bare_count else float("nan")
                        control_rows.append(bare_per)
                        control_text = f"  {bare_per:11.2f}  {per / bare_per:5.2f}"
                        bare_cpu0, bare_done0 = bare_cpu, bare_done
                    print(
                        f"{len(rows):4d} {count:9d} {per:11.2f} {per_kernel:9.2f} {rss:8.1f} {inode:9.0f}"
                        f"  {os.getloadavg()[0]:5.2f}  {len(load.idle):7d}{control_text}",
                        flush=True,
                    )
                    cpu0, kernel0, done0, minute_end = cpu, kernel, load.done, minute_end + 60
                    if service.poll() is not None:
                        raise SystemExit(f"the service exited with {service.returncode}")
                if now >= end:
                    break
                due = start + sent / args.rate
                if due > now:
                    await asyncio.sleep(max(0.0, min(due - now, minute_end - now)))
                    continue
                if len(inflight) < args.max_inflight:
                    task = asyncio.create_task(load.one())
                    inflight.add(task)
                    task.add_done_callback(inflight.discard)
                else:
                    load.failures["skipped: too many in flight"] += 1
                sent += 1
            stop_control.set()
            if inflight:
                await asyncio.wait(inflight, timeout=60)
            if control_task is not None:
                await control_task
    finally:
        if service.poll() is None:
            service.send_signal(signal.SIGTERM)  # a final collection, then exit
            try:
                service.wait(timeout=args.interval + 120)
            except subprocess.TimeoutExpired:
                service.kill()
                service.wait()
        for name in ("fake", "ingress", "bare"):
            if name not in procs:
                continue
            procs[name].send_signal(signal.SIGINT)
            try:
                procs[name].wait(timeout=10)
            except subprocess.TimeoutExpired:
                procs[name].kill()

    leftover = list((work / "data").rglob("*.json"))
    queries, feedback, archives = shipped_markers(ingress_dir)
    lost_q = sorted(load.queries_ok - set(queries))
    lost_f = sorted(load.feedback_ok - set(feedback))
    twice = sum(1 for c in (*queries.values(), *feedback.values()) if c > 1)
    print(
        f"\nanswered: {len(load.queries_ok)} queries, {len(load.feedback_ok)} feedback; "
        f"client-side failures: {dict(load.failures) or 'none'}"
    )
    print(
        f"ingress: {archives} archives; transcripts of answered queries missing: {len(lost_q)}; "
        f"feedback missing: {len(lost_f)}; records received more than once: {twice}; "
        f"records left in the store after the final collection: {len(leftover)}"
    )
    if lost_q[:5] or lost_f[:5]:
        print(f"  first missing: {lost_q[:5]} {lost_f[:5]}")
    ok = not lost_q and not lost_f and not twice
    if len(rows) > BASE_MINUTE:
        base_cpu, base_rss = rows[BASE_MINUTE - 1][2], rows[BASE_MINUTE - 1][3]
        later = rows[BASE_MINUTE:]
        cpu_dev = max(abs(r[2] / base_cpu - 1) for r in later)
        rss_dev = max(abs(r[3] / base_rss - 1) for r in later)
        flat = cpu_dev <= TOLERANCE and rss_dev <= TOLERANCE
        ok &= flat
        print(
            f"after minute {BASE_MINUTE}: CPU per request within {cpu_dev:.1%} of minute {BASE_MINUTE} "
            f"({base_cpu:.2f} ms; median {statistics.median(r[2] for r in later):.2f}), "
            f"RSS within {rss_dev:.1%} ({base_rss:.1f} MiB; last {later[-1][3]:.1f}) "
            f"[{'meets' if flat else 'misses'} target: both within {TOLERANCE:.0%}]"
        )
        if len(control_rows) == len(rows):
            base_bare = control_rows[BASE_MINUTE - 1]
            later_bare = control_rows[BASE_MINUTE:]
            ours = [r[2] for r in later]
            ratios = [a / b for a, b in zip(ours, later_bare, strict=True)]
            base_ratio = rows[BASE_MINUTE - 1][2] / base_bare
            correlation = f"{statistics.correlation(ours, later_bare):.2f}" if len(later) > 1 else "n/a"
            print(
                f"control (bare forwarder, {args.control_rate:g} req/s): CPU per request within "
                f"{max(abs(b / base_bare - 1) for b in later_bare):.1%} of its minute {BASE_MINUTE} "
                f"({base_bare:.2f} ms; median {statistics.median(later_bare):.2f}); correlation with the "
                f"service's, minute by minute: {correlation}; the service's "
                f"CPU per request as a multiple of the control's within "
                f"{max(abs(r / base_ratio - 1) for r in ratios):.1%} of minute {BASE_MINUTE}'s ({base_ratio:.2f}); "
                f"control failures: {control.failures if control else 0}"
            )
            minutes = [r[0] for r in later]
            print(
                f"trend over minutes {BASE_MINUTE + 1}-{len(rows)} (least squares, as a share of the mean): "
                f"service {trend(minutes, ours):+.1%}, control {trend(minutes, later_bare):+.1%}, "
                f"service / control {trend(minutes, ratios):+.1%}"
            )
    else:
        print(f"(flatness is judged against minute {BASE_MINUTE}: run at least {BASE_MINUTE + 1} minutes)")
    print("nothing lost, nothing twice" if ok else "TARGET MISSED")
    return 0 if ok else 1


def trend(minutes: list[int], values: list[float]) -> float:
    """How far a least-squares line through ``values`` moves from the first minute to the last,
    as a share of their mean: a drift, told from one minute's noise."""
    if len(values) < 2:
        return 0.0
    slope = statistics.linear_regression(minutes, values).slope
    return slope * (minutes[-1] - minutes[0]) / statistics.fmean(values)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--minutes", type=int, default=30)
    parser.add_argument("--rate", type=float, default=100.0, help="requests per second (default 100)")
    parser.add_argument("--workers", type=int, default=1)
    parser.add_argument("--interval", type=int, default=60, help="collection interval in seconds (default 60)")
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the fake LLM's answer delay (default 20)")
    parser.add_argument("--max-inflight", type=int, default=64)
    parser.add_argument(
        "--control-rate",
        type=float,
        default=20.0,
        help="requests per second to the bare forwarder beside the service, the machine's control (0: none)",
    )
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--tmpdir", help="where the store and the ingress keep their files")
    parser.add_argument("--keep", action="store_true", help="keep the temporary directory")
    args = parser.parse_args()
    if not 1 <= args.minutes <= 240:
        raise SystemExit("--minutes must be 1 to 240")
    tmp = tempfile.mkdtemp(prefix="lightspeed-soak-", dir=args.tmpdir)
    try:
        return asyncio.run(run(args, Path(tmp)))
    finally:
        if args.keep:
            print(f"kept {tmp}")
        else:
            shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
