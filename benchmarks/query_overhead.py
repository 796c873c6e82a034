"""Overhead of ``/v1/query`` and ``/v1/streaming_query`` over calling the LLM directly (issue 3).

One run starts, on 127.0.0.1:

* the fake OpenAI-compatible LLM of the tests (``tests/query/fake_llm.py``), in its own
  process, answering after ``--delay-ms`` (a stand-in for the model's thinking time);
* ``python -m lightspeed serve`` with one worker, its default provider that fake LLM,
  transcripts on (filesystem store in a temporary directory), access log off;

then, after ``sync`` and 2 s of warm-up per endpoint, drives, with ``wrk`` at
``--connections`` connections (one wrk thread), in turn for each round: the fake's
``/v1/chat/completions`` directly (non-streaming, then streaming), and lightspeed's
``/v1/query`` and ``/v1/streaming_query`` in two mixes:

* ``single``: each request a new conversation (an owner, a history turn and a transcript
  stored per request: the worst case);
* ``multi``: conversations of 1 to 6 turns, uniformly (3.5 on average): each answer's
  ``conversation_id`` goes back into a queue that the next requests continue, so most
  requests read a history and append a turn to it, as a chat client does.

It prints requests per second and p50/p99 latency of each, the p50 latency lightspeed adds,
its p99 as a multiple of the direct call's, its throughput as a share of the direct call's,
and the service process's CPU time per answered request (user + system, all its threads,
from ``/proc``: the steadiest figure on a shared machine, where throughput follows the load);
medians over the rounds. Every answer is stored before it is sent (answered means
stored), so the figures include the store's durability.

Targets (issue 9), at 32 connections on one worker, fake LLM 20 ms, on ext4:

* multi-turn mix, ``/v1/query`` and ``/v1/streaming_query``: throughput at least 75% of the
  direct call's, added p50 at most 3 ms, p99 at most 2x the direct call's;
* one turn per conversation: throughput at least 60% of the direct call's.

Needs ``wrk`` on PATH. Run from the repository root::

    .venv/bin/python benchmarks/query_overhead.py                       # 20 ms LLM, 3 rounds x 5 s
    .venv/bin/python benchmarks/query_overhead.py --delay-ms 0 --rounds 1 --duration 10
    .venv/bin/python benchmarks/query_overhead.py --delay-ms 100 --no-transcripts   # the transcripts' share
    .venv/bin/python benchmarks/query_overhead.py --tmpdir /dev/shm     # the store on tmpfs: no disk
    .venv/bin/python benchmarks/query_overhead.py --mix multi --check   # exit 1 when a target is missed
    .venv/bin/python benchmarks/query_overhead.py --store memory        # in-process store: HTTP + LLM only
    .venv/bin/python benchmarks/query_overhead.py --only query-multi,streaming_query-multi
    .venv/bin/python benchmarks/query_overhead.py --store memory --bare  # both upper bounds
    .venv/bin/python benchmarks/query_overhead.py --mix multi --vs ../other/.venv/bin/python  # A/B

``--store memory`` runs the service on the in-process example backend
(``examples/storage_plugin_skeleton``, installed by ``make install-test``): no disk and no
thread hand-offs, the upper bound of what the HTTP side and the LLM call allow.
``--vs PYTHON`` (repeatable) also starts the service of another checkout (the python of its
venv, or a script that sets ``PYTHONPATH``), with its own port and store, and measures it in
the same rounds right after this one's, so a change is compared under the same conditions.
``--bare`` also measures ``benchmarks/bare_query_server.py``, one aiohttp handler per endpoint
that forwards the query to the fake LLM and answers (SSE token events for the stream), with no
validation, authentication, metrics or store: what HTTP and the LLM call cost alone, in CPU
per request of that process.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import yaml
from disk_ops import inode_cost_us, settle_disk

ROOT = Path(__file__).resolve().parent.parent
FAKE = ROOT / "tests" / "query" / "fake_llm.py"
BARE = ROOT / "benchmarks" / "bare_query_server.py"
QUESTION = "What is Kubernetes and how does it schedule pods?"
#: (throughput share of the direct call's, added p50 ms, p99 as a multiple of the direct call's)
TARGETS = {"multi": (0.75, 3.0, 2.0), "single": (0.60, None, None)}


def service_config(
    work: Path, port: int, llm_url: str, *, store: str = "filesystem", transcripts: bool = True
) -> dict[str, Any]:
    """The service's configuration in the benchmarks: one worker on ``port``, records under
    ``work``, the fake LLM at ``llm_url`` its default provider, access log off."""
    return {
        "service": {"host": "127.0.0.1", "port": port, "workers": 1, "access_log": False, "log_level": "warning"},
        "user_data_collection": {
            "feedback_enabled": True,
            "feedback_storage": str(work / "feedback"),
            "transcripts_enabled": transcripts,
            "transcripts_storage": str(work / "transcripts"),
            "storage": {"backend": store},
        },
        "inference": {"default_provider": "fake", "default_model": "fake-model"},
        "llm_providers": [{"name": "fake", "type": "openai", "url": llm_url, "models": ["fake-model"]}],
    }


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_ready(url: str, proc: subprocess.Popen[bytes], *, method: str = "GET", timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise SystemExit(f"server exited with {proc.returncode} before it was ready ({url})")
        try:
            req = urllib.request.Request(url, method=method)
            with urllib.request.urlopen(req, timeout=1):
                return
        except urllib.error.HTTPError:
            return  # it answers
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    raise SystemExit(f"{url} not ready within {timeout} s")


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def conversation_lua(question: str, *, max_turns: int) -> str:
    """A wrk script that holds conversations of 1 to ``max_turns`` turns.

    Each query carries its conversation's length and its turn (``[turns=L k=K]``); the fake
    LLM repeats the query in its answer, so :func:`response` learns both, with the
    ``conversation_id``, and queues the conversation's next turn, which the next
    :func:`request` on any connection sends (wrk gives no connection identity to scripts).
    """
    q = json.dumps(question)[1:-1]
    return f"""
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
local ready = {{}}
local first = 1
math.randomseed(9)
function request()
  local c = ready[first]
  if c ~= nil then
    ready[first] = nil
    first = first + 1
    local body = '{{"query": "{q} [turns=' .. c.l .. ' k=' .. c.k .. ']", "conversation_id": "' .. c.cid .. '"}}'
    return wrk.format(nil, nil, nil, body)
  end
  local l = math.random(1, {max_turns})
  return wrk.format(nil, nil, nil, '{{"query": "{q} [turns=' .. l .. ' k=1]"}}')
end
local last = 0
function response(status, headers, body)
  if status ~= 200 then
    io.stderr:write("status " .. status .. "\\n")
    return
  end
  local cid = string.match(body, '"conversation_id": *"([%w_%-]+)"')
  local l, k = string.match(body, "%[turns=(%d+) k=(%d+)%]")
  if cid and l and tonumber(k) < tonumber(l) then
    last = last + 1
    ready[last] = {{cid = cid, l = tonumber(l), k = tonumber(k) + 1}}
  end
end
"""


def lua(body: dict[str, Any]) -> str:
    payload = json.dumps(json.dumps(body))  # a Lua string literal is close enough to a JSON one
    return (
        'wrk.method = "POST"\n'
        f"wrk.body = {payload}\n"
        'wrk.headers["Content-Type"] = "application/json"\n'
        "function response(status, headers, body)\n"
        '  if status ~= 200 then io.stderr:write("status " .. status .. "\\n") end\n'
        "end\n"
    )


def _ms(text: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s)", text)
    if not m:
        raise ValueError(f"unexpected latency {text!r} in wrk output")
    value, unit = float(m.group(1)), m.group(2)
    return value / 1000 if unit == "us" else value * 1000 if unit == "s" else value


def cpu_seconds(pid: int) -> tuple[float, float]:
    """User + system CPU time of process ``pid`` (all its threads) and of its reaped children,
    and the system (kernel) part of it."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    # After the command: state is field 3; utime, stime, cutime, cstime are fields 14 to 17.
    tick = os.sysconf("SC_CLK_TCK")
    return sum(int(f) for f in fields[11:15]) / tick, (int(fields[12]) + int(fields[14])) / tick


def service_cpu_seconds(pid: int) -> tuple[float, float]:
    """CPU time (all, kernel) of the service process and of its worker processes (``service.workers`` > 1)."""
    total, kernel = cpu_seconds(pid)
    for task in Path(f"/proc/{pid}/task").iterdir():
        for child in (task / "children").read_text().split():
            try:
                more, more_kernel = cpu_seconds(int(child))
            except FileNotFoundError:
                continue  # gone meanwhile
            total, kernel = total + more, kernel + more_kernel
    return total, kernel


def parse_wrk(output: str) -> dict[str, float]:
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", output).group(1))  # type: ignore[union-attr]
    requests = float(re.search(r"(\d+) requests in", output).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"\s50%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"\s99%\s+(\S+)", output).group(1))  # type: ignore[union-attr]
    errors = re.search(r"Non-2xx or 3xx responses:\s+(\d+)", output)
    socket_errors = re.search(r"Socket errors: (.*)", output)
    return {
        "rps": rps,
        "requests": requests,
        "p50": p50,
        "p99": p99,
        "non2xx": float(errors.group(1)) if errors else 0.0,
        "socket_errors": 1.0 if socket_errors else 0.0,
    }


def run_wrk(url: str, script: Path, args: argparse.Namespace, service_pid: int | None = None) -> dict[str, float]:
    """One wrk run; with ``service_pid``, also the service's CPU milliseconds per request."""
    cmd = ["wrk", "-t1", f"-c{args.connections}", f"-d{args.duration}s", "--latency", "-s", str(script), url]
    before = service_cpu_seconds(service_pid) if service_pid is not None else (0.0, 0.0)
    done = subprocess.run(cmd, capture_output=True, text=True, timeout=args.duration + 60)
    after = service_cpu_seconds(service_pid) if service_pid is not None else (0.0, 0.0)
    if done.returncode != 0:
        raise SystemExit(f"wrk failed: {done.stderr}")
    result = parse_wrk(done.stdout)
    result["cpu_ms"] = (after[0] - before[0]) * 1000 / result["requests"]
    result["kernel_ms"] = (after[1] - before[1]) * 1000 / result["requests"]
    if result["non2xx"] or result["socket_errors"]:
        print(f"  warning: {url}: {int(result['non2xx'])} non-2xx answers; wrk: {done.stdout[-300:]}", flush=True)
    return result


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--delay-ms", type=float, default=20.0, help="the fake LLM's answer delay (default 20)")
    parser.add_argument("--connections", type=int, default=32)
    parser.add_argument("--duration", type=int, default=5, help="seconds per measurement (default 5)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument(
        "--no-transcripts", action="store_true", help="transcripts off (history is still stored): the store's share"
    )
    parser.add_argument(
        "--tmpdir", help="where the store's files go (default: the system temp dir; /dev/shm: no disk at all)"
    )
    parser.add_argument(
        "--mix",
        choices=("both", "multi", "single"),
        default="both",
        help="conversations of 1-6 turns (multi), one turn each (single), or both (default)",
    )
    parser.add_argument(
        "--store",
        choices=("filesystem", "memory"),
        default="filesystem",
        help="the storage backend: filesystem (default) or memory (the in-process example backend)",
    )
    parser.add_argument(
        "--bare",
        action="store_true",
        help="also measure benchmarks/bare_query_server.py (HTTP and the LLM call alone: the upper bound)",
    )
    parser.add_argument(
        "--only", help="comma-separated runs to make, e.g. direct,query-multi (default: every one of the mix)"
    )
    parser.add_argument("--check", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument(
        "--vs",
        action="append",
        default=[],
        metavar="PYTHON",
        help="also run the service of another checkout (the python of its venv) in the same rounds, taking turns",
    )
    parser.add_argument(
        "--no-settle",
        action="store_true",
        help="measure at once, without first waiting for the disk to settle after recent deletions (disk_ops.py)",
    )
    args = parser.parse_args()
    if shutil.which("wrk") is None:
        raise SystemExit("wrk is not on PATH (Debian: apt-get install -y wrk)")

    with tempfile.TemporaryDirectory(prefix="lightspeed-bench-", dir=args.tmpdir) as tmp:
        work = Path(tmp)
        # On ext4 without a journal, files deleted in the last minutes (another run's) make every
        # new file cost up to ~1 ms of kernel CPU: say what the disk was like, and wait for it.
        (work / "probes").mkdir()
        settle_disk(work / "probes", rounds=0 if args.no_settle else 6)
        llm_port, ls_port = free_port(), free_port()
        llm_url = f"http://127.0.0.1:{llm_port}/v1"
        # This checkout's service, then one per --vs (each with its own port and store).
        services = [("", sys.executable, ls_port, work)]
        services += [(f"@vs{i + 1}", python, free_port(), work / f"vs{i + 1}") for i, python in enumerate(args.vs)]
        for _, _, port, home in services:
            home.mkdir(exist_ok=True)
            config = service_config(home, port, llm_url, store=args.store, transcripts=not args.no_transcripts)
            (home / "config.yaml").write_text(yaml.safe_dump(config))
        messages = [
            {"role": "system", "content": "You are a helpful assistant"},
            {"role": "user", "content": QUESTION},
        ]
        scripts = {
            "direct": lua({"model": "fake-model", "messages": messages, "stream": False}),
            "direct-stream": lua(
                {"model": "fake-model", "messages": messages, "stream": True, "stream_options": {"include_usage": True}}
            ),
        }
        urls = {"direct": f"{llm_url}/chat/completions", "direct-stream": f"{llm_url}/chat/completions"}
        mixes = ("single", "multi") if args.mix == "both" else (args.mix,)
        for mix in mixes:
            for endpoint in ("query", "streaming_query"):
                scripts[f"{endpoint}-{mix}"] = conversation_lua(QUESTION, max_turns=6 if mix == "multi" else 1)
                urls[f"{endpoint}-{mix}"] = f"http://127.0.0.1:{ls_port}/v1/{endpoint}"
        if args.bare:
            bare_port = free_port()
            for endpoint in ("query", "streaming_query"):
                scripts[f"bare-{endpoint}"] = conversation_lua(QUESTION, max_turns=1)
                urls[f"bare-{endpoint}"] = f"http://127.0.0.1:{bare_port}/v1/{endpoint}"
        if args.only:
            only = set(args.only.split(","))
            unknown = only - set(scripts)
            if unknown:
                raise SystemExit(f"--only: unknown runs {sorted(unknown)} (known: {', '.join(scripts)})")
            # Each run's direct call stays: its ratios need it.
            only |= {"direct-stream" if "streaming" in n else "direct" for n in only}
            for name in [n for n in scripts if n not in only]:
                del scripts[name]
        for suffix, _, port, _ in services[1:]:  # each --vs service runs what this one runs
            for name in [n for n in scripts if not n.startswith(("direct", "bare-"))]:
                scripts[name + suffix] = scripts[name]
                urls[name + suffix] = urls[name].replace(f":{ls_port}/", f":{port}/")
        paths = {}
        for name, text in scripts.items():
            paths[name] = work / f"{name}.lua"
            paths[name].write_text(text)
        env = {k: v for k, v in os.environ.items() if k != "LIGHTSPEED_CONFIG"}
        fake = subprocess.Popen(
            [sys.executable, str(FAKE), "--port", str(llm_port), "--delay-ms", str(args.delay_ms)],
            stdout=subprocess.DEVNULL,
            env=env,
        )
        running = {
            suffix: subprocess.Popen(
                [python, "-m", "lightspeed", "serve", "-c", str(home / "config.yaml")],
                cwd=home,
                env=env,
                stdout=subprocess.DEVNULL,
            )
            for suffix, python, _, home in services
        }
        bare = None
        if args.bare:
            bare = subprocess.Popen(
                [sys.executable, str(BARE), "--port", str(bare_port), "--llm-url", llm_url],
                env=env,
                stdout=subprocess.DEVNULL,
            )
        try:
            wait_ready(f"{llm_url}/chat/completions", fake)
            for suffix, _, port, _ in services:
                wait_ready(f"http://127.0.0.1:{port}/liveness", running[suffix])
            if bare is not None:
                wait_ready(f"http://127.0.0.1:{bare_port}/v1/query", bare)
            print(
                f"fake LLM delay {args.delay_ms:g} ms, {args.connections} connections, one worker, "
                f"transcripts {'off' if args.no_transcripts else 'on'}, {args.store} store in {work}, "
                f"{args.rounds} round(s) x {args.duration} s per endpoint",
                flush=True,
            )
            for suffix, python, _, _ in services[1:]:
                print(f"  {suffix[1:]}: {python}", flush=True)
            os.sync()  # the disk finishes what came before (another run's deletions), not during round 1
            for name in scripts:  # warm-up, not measured: connection pools fill, folders exist
                run_wrk(urls[name], paths[name], argparse.Namespace(**{**vars(args), "duration": 2}))
            results: dict[str, list[dict[str, float]]] = {name: [] for name in scripts}
            for rnd in range(1, args.rounds + 1):
                for name in scripts:
                    variant = name[name.find("@") :] if "@" in name else ""
                    pid = None if name.startswith("direct") else running[variant].pid
                    if name.startswith("bare-") and bare is not None:
                        pid = bare.pid
                    r = run_wrk(urls[name], paths[name], args, pid)
                    results[name].append(r)
                    cpu = f"  CPU {r['cpu_ms']:5.3f} ms/req (kernel {r['kernel_ms']:5.3f})" if pid is not None else ""
                    print(
                        f"round {rnd} {name:22s} {r['rps']:9.0f} req/s  p50 {r['p50']:7.2f} ms  "
                        f"p99 {r['p99']:7.2f} ms{cpu}  (load {os.getloadavg()[0]:.1f})",
                        flush=True,
                    )
        finally:
            for proc in running.values():
                stop(proc)
            if bare is not None:
                stop(bare)
            stop(fake)
        print(f"disk after the runs: a new inode costs {inode_cost_us(work / 'probes'):.0f} us of CPU")

    def med(name: str, key: str) -> float:
        return statistics.median(r[key] for r in results[name])

    print("\nmedians over the rounds:")
    for name in scripts:
        if name.startswith("bare-"):
            direct = "direct-stream" if "streaming" in name else "direct"
            print(
                f"{name:23s} {med(name, 'rps'):8.0f} req/s vs {med(direct, 'rps'):8.0f} direct "
                f"({med(name, 'rps') / med(direct, 'rps'):6.1%});  p50 {med(name, 'p50'):6.2f} ms "
                f"(added {med(name, 'p50') - med(direct, 'p50'):+.2f} ms);  p99 {med(name, 'p99'):7.2f} ms;  "
                f"CPU {med(name, 'cpu_ms'):.3f} ms/req (the bare handler's process)"
            )
    ok = True
    for name in scripts:
        if name.startswith(("direct", "bare-")):
            continue
        base, _, variant = name.partition("@")
        endpoint, mix = base.rsplit("-", 1)
        direct = "direct-stream" if endpoint == "streaming_query" else "direct"
        ratio = med(name, "rps") / med(direct, "rps")
        added = med(name, "p50") - med(direct, "p50")
        p99x = med(name, "p99") / med(direct, "p99")
        min_ratio, max_added, max_p99x = TARGETS[mix]
        passed = ratio >= min_ratio
        wanted = [f"throughput >= {min_ratio:.0%}"]
        if max_added is not None:
            passed &= added <= max_added
            wanted.append(f"added p50 <= {max_added:g} ms")
        if max_p99x is not None:
            passed &= p99x <= max_p99x
            wanted.append(f"p99 <= {max_p99x:g}x direct")
        ok &= passed
        print(
            f"/v1/{endpoint:16s} {mix:6s} {variant:4s} {med(name, 'rps'):8.0f} req/s "
            f"vs {med(direct, 'rps'):8.0f} direct "
            f"({ratio:6.1%});  p50 {med(name, 'p50'):6.2f} ms vs {med(direct, 'p50'):6.2f} ms "
            f"(added {added:+.2f} ms);  p99 {med(name, 'p99'):7.2f} ms vs {med(direct, 'p99'):6.2f} ms "
            f"({p99x:.2f}x);  CPU {med(name, 'cpu_ms'):.3f} ms/req (kernel {med(name, 'kernel_ms'):.3f})  "
            f"[{'meets' if passed else 'misses'} target: {', '.join(wanted)}]"
        )
    return 0 if ok or not args.check else 1


if __name__ == "__main__":
    sys.exit(main())
