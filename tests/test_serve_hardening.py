"""``lightspeed serve`` under hostile conditions, run for real in subprocesses: a low open-files
limit (set with ``prlimit``), a flood of idle connections beyond ``service.max_connections``,
connections that are all busy, and user ids built to forge or flood the access log."""

from __future__ import annotations

import contextlib
import hashlib
import http.client
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

START_TIMEOUT = 20.0


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def _liveness(base: str, timeout: float = 2.0) -> int:
    with urllib.request.urlopen(f"{base}/liveness", timeout=timeout) as resp:
        return int(resp.status)


@contextlib.contextmanager
def _serve(tmp_path: Path, service: dict[str, Any], *, prefix: Sequence[str] = ()) -> Iterator[tuple[str, Path, int]]:
    """A ``lightspeed serve`` process (after ``prefix``, e.g. prlimit): (base URL, log file, pid)."""
    port = _free_port()
    config = {
        "service": {"host": "127.0.0.1", "port": port, **service},
        "user_data_collection": {
            "feedback_enabled": True,
            "feedback_storage": str(tmp_path / "feedback"),
            "transcripts_enabled": True,
            "transcripts_storage": str(tmp_path / "transcripts"),
        },
        "llm_providers": [{"name": "echo", "type": "echo", "models": ["echo"]}],
    }
    path = tmp_path / "lightspeed-stack.yaml"
    path.write_text(yaml.safe_dump(config))
    log = tmp_path / f"serve-{port}.log"
    env = {k: v for k, v in os.environ.items() if k != "LIGHTSPEED_CONFIG"}
    with log.open("wb") as out:
        proc = subprocess.Popen(
            [*prefix, sys.executable, "-m", "lightspeed", "serve", "-c", str(path)],
            stdout=out,
            stderr=subprocess.STDOUT,
            env=env,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + START_TIMEOUT
        while True:
            assert proc.poll() is None, log.read_text()
            with contextlib.suppress(OSError):
                if _liveness(base) == 200:
                    break
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.05)
        yield base, log, proc.pid
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, log.read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()


def _soft_nofile(pid: int) -> int:
    limits = Path(f"/proc/{pid}/limits").read_text()
    match = re.search(r"^Max open files\s+(\d+)\s+(\d+)", limits, re.MULTILINE)
    assert match, limits
    return int(match.group(1))


needs_prlimit = pytest.mark.skipif(shutil.which("prlimit") is None, reason="prlimit (util-linux) is not installed")


# ------------------------------------------------------------------ open-files limit


@needs_prlimit
def test_the_soft_open_files_limit_is_raised_to_the_hard_one(tmp_path: Path) -> None:
    with _serve(tmp_path, {}, prefix=["prlimit", "--nofile=1024:4096", "--"]) as (_, log, pid):
        assert _soft_nofile(pid) == 4096
        text = log.read_text()
    assert "open-files limit raised from 1024 to 4096 (the hard limit)" in text
    # Two descriptors per client connection at most (its LLM connection), 64 kept for the rest.
    assert "at most 2016 client connections (service.max_connections 10000, lowered" in text


@needs_prlimit
def test_a_hard_limit_of_1024_lowers_the_connection_cap(tmp_path: Path) -> None:
    with _serve(tmp_path, {"max_connections": 5000}, prefix=["prlimit", "--nofile=1024", "--"]) as (_, log, pid):
        assert _soft_nofile(pid) == 1024
        text = log.read_text()
    assert "open-files limit: 1024" in text
    assert "at most 480 client connections (service.max_connections 5000, lowered" in text


# ------------------------------------------------------------------ connection floods


def _closed_by_peer(sock: socket.socket) -> bool:
    sock.setblocking(False)
    try:
        return sock.recv(1) == b""
    except BlockingIOError:
        return False
    except OSError:
        return True


def test_an_idle_flood_beyond_the_cap_never_starves_liveness(tmp_path: Path) -> None:
    cap, flood = 20, 120
    service = {"max_connections": cap, "keepalive_timeout_seconds": 60, "access_log": False}
    with _serve(tmp_path, service) as (base, log, pid):
        host, port = "127.0.0.1", int(base.rsplit(":", 1)[1])
        socks = []
        try:
            for i in range(flood):
                socks.append(socket.create_connection((host, port), timeout=5))
                if i % 30 == 29:  # the probe answers throughout, not only at the end
                    assert _liveness(base) == 200
            for _ in range(5):
                assert _liveness(base) == 200
            time.sleep(0.2)
            open_now = [s for s in socks if not _closed_by_peer(s)]
            # The service holds at most `cap` client connections: the oldest idle ones were closed.
            assert len(open_now) <= cap
            assert set(open_now) <= set(socks[-cap:])
            fds = len(os.listdir(f"/proc/{pid}/fd"))
            assert fds < cap + 60, fds
        finally:
            for s in socks:
                s.close()
    assert "closing the oldest idle ones" in log.read_text()


@needs_prlimit
def test_the_probe_survives_1124_idle_connections_on_a_1024_descriptor_limit(tmp_path: Path) -> None:
    """The reported case: before, /liveness failed until the flood went away."""
    service = {"keepalive_timeout_seconds": 60, "access_log": False}
    with _serve(tmp_path, service, prefix=["prlimit", "--nofile=1024", "--"]) as (base, log, pid):
        port = int(base.rsplit(":", 1)[1])
        socks = []
        try:
            for i in range(1124):
                socks.append(socket.create_connection(("127.0.0.1", port), timeout=5))
                if i % 250 == 249:
                    assert _liveness(base) == 200
            assert _liveness(base) == 200
            assert len(os.listdir(f"/proc/{pid}/fd")) < 480 + 60  # the cap the limit allows, and a few
        finally:
            for s in socks:
                s.close()
    assert "at most 480 client connections" in log.read_text()


def test_when_every_connection_is_busy_the_excess_gets_503(tmp_path: Path) -> None:
    cap = 4
    with _serve(tmp_path, {"max_connections": cap, "keepalive_timeout_seconds": 60}) as (base, log, _):
        host, port = "127.0.0.1", int(base.rsplit(":", 1)[1])
        busy = []
        try:
            for _ in range(cap):  # requests whose bodies never come: in progress, not idle
                s = socket.create_connection((host, port), timeout=5)
                s.sendall(
                    b"POST /v1/feedback HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                    b"Content-Length: 100\r\n\r\n{"
                )
                busy.append(s)
            time.sleep(0.3)
            conn = http.client.HTTPConnection(host, port, timeout=5)
            conn.request("GET", "/liveness")
            resp = conn.getresponse()
            assert resp.status == 503
            assert resp.getheader("Retry-After") == "1"
            assert b"service.max_connections" in resp.read()
            conn.close()
        finally:
            for s in busy:
                s.close()
        # Room again once they are gone.
        deadline = time.monotonic() + 5
        while True:
            with contextlib.suppress(OSError):
                if _liveness(base) == 200:
                    break
            assert time.monotonic() < deadline
            time.sleep(0.05)
    assert "all 4 connections are busy: refusing new ones with 503" in log.read_text()


def test_idle_connections_are_closed_after_the_keepalive_timeout(tmp_path: Path) -> None:
    with _serve(tmp_path, {"keepalive_timeout_seconds": 0.3}) as (base, _, _):
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.settimeout(5)
            started = time.monotonic()
            assert s.recv(1) == b""  # closed by the service, not by our timeout
            assert time.monotonic() - started < 4


# ------------------------------------------------------------------ the access log


def test_user_ids_never_reach_the_log_and_cannot_forge_lines(tmp_path: Path) -> None:
    forged = "alice\n2026-01-01 00:00:00,000 INFO    lightspeed [pid 1] forged admin login"
    ansi = "bob\x1b[2J\x1b[31mred\r"
    long_id = "carol-" + "x" * 7000  # near the 8 KiB request line limit
    ids = [forged, ansi, long_id]
    with _serve(tmp_path, {"log_level": "info"}) as (base, log, _):
        for user_id in ids:
            q = urllib.parse.urlencode({"user_id": user_id})
            req = urllib.request.Request(f"{base}/liveness?{q}", headers={"User-Agent": 'agent "quoted"'})
            with urllib.request.urlopen(req, timeout=5) as resp:
                assert resp.status == 200
        # An admin action logs who did it: by hash, never the id.
        q = urllib.parse.urlencode({"user_id": forged})
        req = urllib.request.Request(
            f"{base}/v1/feedback/status?{q}",
            data=b'{"status": false}',
            method="PUT",
            headers={"Content-Type": "application/json"},
        )
        with urllib.request.urlopen(req, timeout=5) as resp:
            assert resp.status == 200
        # aiohttp refuses control characters; its warning quotes the request line, but not the id.
        port = int(base.rsplit(":", 1)[1])
        with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
            s.sendall(b"GET /liveness?user_id=mallory\x01raw-id HTTP/1.1\r\nHost: x\r\n\r\n")
            assert s.recv(100).startswith(b"HTTP/1.0 400")
        time.sleep(0.1)
        raw = log.read_bytes()
    text = raw.decode()
    assert b"\x1b" not in raw and b"\r" not in raw
    for line in text.splitlines():
        assert re.match(r"\d{4}-\d\d-\d\d \d\d:\d\d:\d\d,\d{3} [A-Z]+ ", line), line  # every line is a record
        assert len(line) < 4000
    assert "forged admin login" not in text
    assert "[31mred" not in text
    assert "xxxxxxxxxx" not in text
    assert "mallory" not in text and "Invalid char in url query" in text
    for user_id in ids:
        digest = hashlib.sha256(user_id.encode()).hexdigest()
        assert f"/liveness?user_id=sha256:{digest} HTTP/1.1" in text
    assert f"by user {hashlib.sha256(forged.encode()).hexdigest()}" in text
    assert '"agent \\"quoted\\""' in text


# ------------------------------------------------------------------ stalled readers


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    match = re.search(r"^VmRSS:\s+(\d+) kB", status, re.MULTILINE)
    assert match, status
    return int(match.group(1)) / 1024


def _stalled_request(port: int, path: str, body: bytes) -> socket.socket:
    """Send a request, then never read: a tiny receive buffer fills at once."""
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    s.connect(("127.0.0.1", port))
    head = f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    s.sendall(head.encode() + body)
    return s


def _transcripts(root: Path) -> list[dict[str, Any]]:
    return [json.loads(p.read_bytes()) for p in root.rglob("*.json")] if root.is_dir() else []


def _wait_for(predicate: Any, timeout: float) -> float:
    started = time.monotonic()
    while not predicate():
        assert time.monotonic() - started < timeout, "timed out"
        time.sleep(0.05)
    return time.monotonic() - started


def test_stalled_readers_are_cut_off_their_transcripts_stored_and_memory_stays_flat(tmp_path: Path) -> None:
    timeout, wave = 1.0, 8
    service = {
        "write_timeout_seconds": timeout,
        "write_buffer_bytes": 16384,
        "max_request_body_bytes": 4 * 1024 * 1024,
        "access_log": False,
    }
    words = " ".join(f"w{i:05d}" for i in range(30000))  # about 2 MB of events: more than the socket buffers
    body = json.dumps({"query": words}).encode()
    root = tmp_path / "transcripts"
    with _serve(tmp_path, service) as (base, log, pid):
        port = int(base.rsplit(":", 1)[1])
        req = urllib.request.Request(
            f"{base}/v1/streaming_query", data=body, headers={"Content-Type": "application/json"}
        )
        with urllib.request.urlopen(req, timeout=30) as resp:  # a reader that reads: the whole answer
            assert resp.read().endswith(b"\n\n")
        _wait_for(lambda: len(_transcripts(root)) == 1, 10)
        assert _transcripts(root)[0]["truncated"] is False
        baseline = _rss_mib(pid)

        rss = []
        for n in (1, 2, 3, 4):
            socks = [_stalled_request(port, "/v1/streaming_query", body) for _ in range(wave)]
            try:
                took = _wait_for(lambda n=n: len(_transcripts(root)) == 1 + n * wave, 10 * timeout + 10)
                assert _liveness(base) == 200
            finally:
                for s in socks:
                    s.close()
            rss.append(_rss_mib(pid))
        stored = _transcripts(root)
        cut = [t for t in stored if t["truncated"]]
        assert len(cut) == 4 * wave
        assert all(0 < len(t["llm_response"]) < len(words) for t in cut)  # what had gone out, then cut
        assert took < 10 * timeout + 10
        # Memory is freed: once the allocator has settled (two waves), two more waves of stalled
        # readers add less than half of what the first one did; held streams would add as much again each.
        assert rss[3] - rss[1] < (rss[0] - baseline) / 2, (baseline, rss)

        # A slow reader of a whole (non-streaming) answer is cut off the same way.
        stalled_before = log.read_text().count("read nothing for 1 s")
        big = json.dumps({"query": " ".join(f"w{i:05d}" for i in range(300000))}).encode()
        s = _stalled_request(port, "/v1/query", big)
        try:
            _wait_for(lambda: log.read_text().count("read nothing for 1 s") > stalled_before, 10 * timeout + 10)
        finally:
            s.close()
    assert log.read_text().count("read nothing for 1 s (service.write_timeout_seconds): aborted") == 4 * wave + 1
