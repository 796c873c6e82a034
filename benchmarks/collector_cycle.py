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

Run: ``python benchmarks/collector_cycle.py [--records 10000 100000] [--dir /tmp] [--compression-level N]``
"""

from __future__ import annotations

import argparse
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tarfile
import tempfile
import time
import uuid
from pathlib import Path

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


def run_child(cmd: list[str], **kw: object) -> tuple[float, float, int]:
    """Run cmd; return (wall seconds, peak RSS in MB, exit status)."""
    started = time.perf_counter()
    proc = subprocess.Popen(cmd, **kw)  # type: ignore[call-overload]
    _, status, usage = os.wait4(proc.pid, 0)
    proc.returncode = os.waitstatus_to_exitcode(status)
    return time.perf_counter() - started, usage.ru_maxrss / 1024, proc.returncode


def bench(n: int, base: str | None, level: int | None) -> dict[str, float]:
    rnd = random.Random(n)
    with tempfile.TemporaryDirectory(prefix="lightspeed-bench-", dir=base) as tmp:
        root = Path(tmp)
        data = root / "data"
        t0 = time.perf_counter()
        raw = generate(data, n, rnd)
        os.sync()  # write the data set back now, so neither measurement pays for it
        print(f"\n{n} records, {raw / 1e6:.1f} MB, generated in {time.perf_counter() - t0:.1f} s", flush=True)

        tar_s, tar_rss, code = run_child(
            ["tar", "czf", str(root / "tar.tar.gz"), "-C", str(data), "feedback", "transcripts"]
        )
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
                ours_s, ours_rss, code = run_child(
                    [sys.executable, "-m", "lightspeed", "collect", "--once", "-c", str(cfg)], stdout=out
                )
            summary = out_path.read_text()
            assert code == 0, f"collect exited {code}: {summary}"
            took = re.search(r"took (\d+\.\d+) s", summary)
            assert took, summary
            cycle_s = float(took.group(1))
        finally:
            ingress.send_signal(signal.SIGINT)
            ingress.wait(30)

        uploads = [json.loads(line) for line in (store / "uploads.jsonl").read_text().splitlines()]
        names: list[str] = []
        for entry in uploads:
            with tarfile.open(store / entry["file"], "r:gz") as tar:
                names += tar.getnames()
        assert len(names) == len(set(names)) == n, (len(names), len(set(names)), n)
        left = [p for p in data.rglob("*") if p.name != "lightspeed-state" and ".lightspeed-state" not in p.parts]
        assert sorted(str(p.relative_to(data)) for p in left) == ["feedback", "transcripts"], left[:5]
        ours_size = sum(int(u["size"]) for u in uploads)
        shutil.rmtree(data)

    mb = raw / 1e6
    print(f"  tar czf : {tar_s:6.2f} s  {n / tar_s:8.0f} rec/s  {mb / tar_s:6.1f} MB/s  peak RSS {tar_rss:6.1f} MB"
          f"  archive {tar_size / 1e6:.1f} MB")  # fmt: skip
    print(f"  collect : {ours_s:6.2f} s  {n / ours_s:8.0f} rec/s  {mb / ours_s:6.1f} MB/s  peak RSS {ours_rss:6.1f} MB"
          f"  {len(uploads)} archive(s) {ours_size / 1e6:.1f} MB, upload + ack + deletion included")  # fmt: skip
    print(f"  cycle   : {cycle_s:6.2f} s  {n / cycle_s:8.0f} rec/s  {mb / cycle_s:6.1f} MB/s"
          "  (the collector's own timing: the process less interpreter start-up, imports and exit)")  # fmt: skip
    print(f"  collect / tar czf rate: {tar_s / ours_s:.0%} (whole process), {tar_s / cycle_s:.0%} (cycle)", flush=True)
    return {"n": n, "tar_s": tar_s, "ours_s": ours_s, "cycle_s": cycle_s, "ours_rss": ours_rss}


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--records", type=int, nargs="+", default=[10_000, 100_000])
    p.add_argument("--dir", help="where to make the temporary data set (default: the system temp dir)")
    p.add_argument("--compression-level", type=int, help="data_collector.compression_level (default: the service's)")
    args = p.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} CPUs")
    for n in args.records:
        bench(n, args.dir, args.compression_level)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
