"""One collection cycle over N stored records, beside ``tar czf`` over the same files.

For each size (default 10,000 and 100,000 records; half feedback of about 400 B, half
transcripts of about 3 KB, in the seed's layout) this script, in a fresh temporary
directory that it removes afterwards:

1. generates the records as files (``feedback/{id}.json``, ``transcripts/{user}/{conv}/{id}.json``);
2. runs ``tar czf`` over them and times it (wall time and peak RSS of the process);
3. starts the local ingress (``python -m lightspeed.ingress``) in its own process;
4. runs ``python -m lightspeed collect --once`` (claim, archive, upload, ack with deletion
   of every file and emptied folder), timing the whole process and its peak RSS;
5. checks that every record arrived exactly once and that the storage roots are empty.

Peak RSS comes from ``os.wait4`` on each child. Our time includes interpreter start-up,
the upload over loopback and the deletion; ``tar czf`` only reads and compresses. The
cycle's own time (printed by ``collect --once``) is shown too: the same work without the
interpreter's start-up, imports and exit (about 0.2 s).

Each run works on a fresh copy (``cp -a``) of one generated data set, with its own ``tar czf``
beside it; ``--rounds N`` repeats that and quotes medians, and ``--vs PYTHON`` (repeatable) runs
another checkout's collector (the python of its venv, from a neutral folder so that it imports
its own code) on the same data, taking turns: an A/B in one run, with the CPU seconds (user +
system) of each process, steadier than wall times on a shared machine.

Run: ``python benchmarks/collector_cycle.py [--records 10000 100000] [--dir /tmp] [--compression-level N]
[--rounds N] [--vs OTHER/.venv/bin/python]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

_LETTERS = "abcdefghijklmnopqrstuvwxyz"


def vocabulary(rnd: random.Random, size: int = 3000) -> list[str]:
    """Made-up words, so the text compresses about as well as English prose (3-4x), not 20x."""
    return ["".join(rnd.choices(_LETTERS, k=rnd.randint(2, 10))) for _ in range(size)]


def text(rnd: random.Random, vocab: list[str], length: int) -> str:
    words: list[str] = []
    n = 0
    while n < length:
        w = rnd.choice(vocab)
        words.append(w)
        n += len(w) + 1
    return " ".join(words)[:length]


def generate(root: Path, n: int, rnd: random.Random) -> int:
    """Write n records; return their total size in bytes."""
    fb, tr = root / "feedback", root / "transcripts"
    fb.mkdir(parents=True)
    tr.mkdir()
    users = [uuid.UUID(int=rnd.getrandbits(128)).hex * 2 for _ in range(50)]
    vocab = vocabulary(rnd)
    # A pool of texts, reused with a random suffix: generation stays fast, files stay distinct.
    short = [text(rnd, vocab, 120) for _ in range(500)]
    long = [text(rnd, vocab, 2400) for _ in range(500)]
    total = 0
    conv_dir: Path | None = None
    for i in range(n):
        rid = str(uuid.UUID(int=rnd.getrandbits(128), version=4))
        ts = f"2026-01-01T12:{i // 6000 % 60:02d}:{i // 100 % 60:02d}.{i % 1000000:06d}Z"
        if i % 2 == 0:
            body = {
                "user_id": users[i % 50],
                "timestamp": ts,
                "conversation_id": str(uuid.uuid4()),
                "user_question": f"What is Kubernetes? ({i})",
                "llm_response": f"{rnd.choice(short)} {rnd.random()}",
                "sentiment": 1,
                "user_feedback": "This response was very helpful",
                "categories": ["helpful"],
            }
            path = fb / f"{rid}.json"
        else:
            if conv_dir is None or i % 20 == 1:
                conv_dir = tr / users[i % 50] / str(uuid.uuid4())
                conv_dir.mkdir(parents=True, exist_ok=True)
            body = {
                "metadata": {
                    "provider": "openai",
                    "model": "gpt-4",
                    "query_provider": "openai",
                    "query_model": "gpt-4",
                    "user_id": users[i % 50],
                    "conversation_id": conv_dir.name,
                    "timestamp": ts,
                },
                "redacted_query": f"How do I scale deployment number {i}?",
                "query_is_valid": True,
                "llm_response": f"{rnd.choice(long)} {rnd.random()}",
                "rag_chunks": [],
                "truncated": False,
                "attachments": [],
            }
            path = conv_dir / f"{rid}.json"
        data = json.dumps(body, indent=2).encode()
        path.write_bytes(data)
        total += len(data)
    return total


@dataclass
class Run:
    """One whole process: wall and CPU seconds (user + system, its threads included), peak RSS,
    and the system (kernel) part of its CPU seconds."""

    wall: float
    cpu: float
    rss_mb: float
    kernel: float


def run_child(cmd: list[str], **kw: Any) -> tuple[Run, int]:
    """Run cmd; return its figures and exit status."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, **kw)
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.perf_counter() - started
    return Run(wall, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, usage.ru_stime), proc.returncode


@dataclass
class Result:
    tar: Run
    ours: Run
    cycle_s: float
    archives: int
    archive_mb: float
    tar_mb: float
    load: float


def collect_once(python: str, root: Path, data: Path, n: int, level: int | None) -> Result:
    """``tar czf`` over ``data``, then ``python -m lightspeed collect --once`` against a local
    ingress; checks that every record arrived exactly once and the roots are empty."""
    load = os.getloadavg()[0]
    tar, code = run_child(["tar", "czf", str(root / "tar.tar.gz"), "-C", str(data), "feedback", "transcripts"])
    assert code == 0
    tar_size = (root / "tar.tar.gz").stat().st_size
    (root / "tar.tar.gz").unlink()

    store = root / "ingress"
    ingress = subprocess.Popen(
        [sys.executable, "-m", "lightspeed.ingress", "--port", "0", "--store", str(store)],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        assert ingress.stdout is not None
        url = re.search(r"http://\S+", ingress.stdout.readline())
        assert url
        config = {
            "service": {"log_level": "warning"},
            "user_data_collection": {
                "feedback_enabled": True,
                "feedback_storage": str(data / "feedback"),
                "transcripts_enabled": True,
                "transcripts_storage": str(data / "transcripts"),
                "data_collector": {
                    "ingress_server_url": url.group(0),
                    "ingress_server_auth_token": "bench",
                    "ingress_content_service_name": "lightspeed-bench",
                    **({} if level is None else {"compression_level": level}),
                },
            },
        }
        cfg = root / "config.yaml"
        cfg.write_text(yaml.safe_dump(config))
        out_path = root / "collect.out"
        with out_path.open("w") as out:
            # From a neutral folder: ``-m`` puts the working directory first on sys.path, and the
            # interpreter must import its own checkout's lightspeed.
            command = [python, "-m", "lightspeed", "collect", "--once", "-c", str(cfg)]
            ours, code = run_child(command, stdout=out, cwd=root)
        summary = out_path.read_text()
        assert code == 0, f"collect exited {code}: {summary}"
        took = re.search(r"took (\d+\.\d+) s", summary)
        assert took, summary
    finally:
        ingress.send_signal(signal.SIGINT)
        ingress.wait(30)

    uploads = [json.loads(line) for line in (store / "uploads.jsonl").read_text().splitlines()]
    names: list[str] = []
    for entry in uploads:
        with tarfile.open(store / entry["file"], "r:gz") as tar_file:
            names += tar_file.getnames()
    assert len(names) == len(set(names)) == n, (len(names), len(set(names)), n)
    left = [p for p in data.rglob("*") if ".lightspeed-state" not in p.parts]
    assert sorted(str(p.relative_to(data)) for p in left) == ["feedback", "transcripts"], left[:5]
    ours_size = sum(int(u["size"]) for u in uploads)
    shutil.rmtree(store)
    return Result(tar, ours, float(took.group(1)), len(uploads), ours_size / 1e6, tar_size / 1e6, load)


def show(label: str, r: Result) -> None:
    print(
        f"  {label}: load {r.load:4.1f}; tar czf {r.tar.wall:6.2f} s (cpu {r.tar.cpu:5.2f} s,"
        f" kernel {r.tar.kernel:5.2f}, {r.tar.rss_mb:.1f} MB); collect {r.ours.wall:6.2f} s"
        f" (cpu {r.ours.cpu:5.2f} s, kernel {r.ours.kernel:5.2f},"
        f" {r.ours.rss_mb:5.1f} MB), cycle {r.cycle_s:6.2f} s,"
        f" {r.archives} archive(s) {r.archive_mb:.1f} MB; rate vs tar {r.tar.wall / r.ours.wall:4.0%}"
        f" (cycle {r.tar.wall / r.cycle_s:4.0%})",
        flush=True,
    )


def summarize(label: str, n: int, mb: float, results: list[Result]) -> None:
    def med(values: list[float]) -> float:
        return statistics.median(values)

    ours = med([r.ours.wall for r in results])
    print(
        f"  {label} median of {len(results)}: tar czf {med([r.tar.wall for r in results]):.2f} s;"
        f" collect {ours:.2f} s, {n / ours:.0f} rec/s, {mb / ours:.1f} MB/s,"
        f" cpu {med([r.ours.cpu for r in results]):.2f} s (tar {med([r.tar.cpu for r in results]):.2f} s),"
        f" peak RSS {max(r.ours.rss_mb for r in results):.1f} MB (largest);"
        f" rate vs tar czf {med([r.tar.wall / r.ours.wall for r in results]):.0%} whole process"
        f" (min {min(r.tar.wall / r.ours.wall for r in results):.0%}),"
        f" {med([r.tar.wall / r.cycle_s for r in results]):.0%} cycle",
        flush=True,
    )


def bench(n: int, base: str | None, level: int | None, rounds: int, variants: list[tuple[str, str]]) -> None:
    rnd = random.Random(n)
    with tempfile.TemporaryDirectory(prefix="lightspeed-bench-", dir=base) as tmp:
        root = Path(tmp)
        pristine = root / "pristine"
        t0 = time.perf_counter()
        raw = generate(pristine, n, rnd)
        mb = raw / 1e6
        print(f"\n{n} records, {mb:.1f} MB, generated in {time.perf_counter() - t0:.1f} s", flush=True)
        results: dict[str, list[Result]] = {label: [] for label, _ in variants}
        for i in range(rounds):
            # Taking turns, each round starting with the next variant: a machine that slows down
            # part-way hurts them alike.
            for label, python in variants[i % len(variants) :] + variants[: i % len(variants)]:
                data = root / "data"
                # A real copy of the data set (not hard links, whose unlinking would free nothing).
                subprocess.run(["cp", "-a", str(pristine), str(data)], check=True)
                os.sync()  # write the copy back now, so neither measurement pays for it
                result = collect_once(python, root, data, n, level)
                shutil.rmtree(data)
                results[label].append(result)
                show(f"round {i + 1} {label}", result)
        for label, _ in variants:
            summarize(label, n, mb, results[label])
        if len(variants) > 1:
            first, *others = variants
            for label, _ in others:
                pairs = [a.ours.wall / b.ours.wall for a, b in zip(results[first[0]], results[label], strict=True)]
                cpus = [a.ours.cpu / b.ours.cpu for a, b in zip(results[first[0]], results[label], strict=True)]
                print(
                    f"  {first[0]} / {label}, round by round: wall {statistics.median(pairs):.2f}"
                    f" ({', '.join(f'{x:.2f}' for x in pairs)}), cpu {statistics.median(cpus):.2f}",
                    flush=True,
                )


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dir", help="where to make the temporary data set (default: the system temp dir)")
    p.add_argument("--compression-level", type=int, help="data_collector.compression_level (default: the service's)")
    p.add_argument("--rounds", type=int, default=1, help="runs of each variant per size (medians are quoted)")
    p.add_argument(
        "--vs",
        metavar="PYTHON",
        action="append",
        default=[],
        help="also run the collector of another checkout (the python of its venv) on the same data, taking turns",
    )
    args = p.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs, load average {os.getloadavg()[0]:.2f}")
    variants = [("this", sys.executable)] + [(f"vs{i + 1}", python) for i, python in enumerate(args.vs)]
    for label, python in variants[1:]:
        print(f"  {label}: {python}")
    for n in args.records:
        bench(n, args.dir, args.compression_level, args.rounds, variants)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
