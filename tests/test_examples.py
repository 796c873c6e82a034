"""The files in ``examples/`` run as documented: each server is started for real, asked a
few questions on 127.0.0.1, and stopped with SIGTERM."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import yaml

from lightspeed.config import load_config

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"
SEED_CONFIG = EXAMPLES / "lightspeed-stack.yaml"
HttpJson = Callable[..., tuple[int, Any]]


def config_for(tmp_path: Path, port: int) -> Path:
    """The seed's example configuration, on ``port`` and with its records under ``tmp_path``."""
    data = yaml.safe_load(SEED_CONFIG.read_text())
    data["service"].update(host="127.0.0.1", port=port)
    udc = data["user_data_collection"]
    udc["feedback_storage"] = str(tmp_path / "data" / "feedback")
    udc["transcripts_storage"] = str(tmp_path / "data" / "transcripts")
    path = tmp_path / "lightspeed-stack.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


@contextmanager
def running(args: list[str], cwd: Path, base: str) -> Iterator[subprocess.Popen[bytes]]:
    env = {k: v for k, v in os.environ.items() if k != "LIGHTSPEED_CONFIG"}
    log = (cwd / "server.log").open("wb")
    proc = subprocess.Popen([sys.executable, *args], cwd=cwd, env=env, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 20
        while True:
            assert proc.poll() is None, (cwd / "server.log").read_text()
            assert time.monotonic() < deadline, (cwd / "server.log").read_text()
            try:
                urllib.request.urlopen(f"{base}/", timeout=1).close()
                break
            except urllib.error.HTTPError:
                break  # answering
            except OSError:
                time.sleep(0.05)
        yield proc
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0, (cwd / "server.log").read_text()
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        log.close()
    text = (cwd / "server.log").read_text()
    assert "Traceback" not in text, text


def test_seed_configuration_is_the_seed() -> None:
    data = yaml.safe_load(SEED_CONFIG.read_text())
    assert data["user_data_collection"] == {
        "feedback_enabled": True,
        "feedback_storage": "/tmp/data/feedback",
        "transcripts_enabled": True,
        "transcripts_storage": "/tmp/data/transcripts",
        "data_collector": {
            "enabled": False,
            "ingress_server_url": None,
            "ingress_server_auth_token": None,
            "ingress_content_service_name": None,
            "collection_interval": 7200,
            "cleanup_after_send": True,
            "connection_timeout_seconds": 30,
        },
    }
    config = load_config(SEED_CONFIG, env={})
    assert config.inference.default_provider == "echo"
    assert config.service.log_level == "info"


def test_seed_configuration_passes_check_config(tmp_path: Path) -> None:
    lightspeed = str(Path(sys.executable).with_name("lightspeed"))
    result = subprocess.run(
        [lightspeed, "check-config", "-c", str(SEED_CONFIG)],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "data").exists()


@pytest.mark.parametrize("how", ["minimal_server", "lightspeed"])
def test_minimal_server(tmp_path: Path, how: str, unused_tcp_port: int, http_json: HttpJson) -> None:
    path = config_for(tmp_path, unused_tcp_port)
    port = unused_tcp_port
    base = f"http://127.0.0.1:{port}"
    args = (
        [str(EXAMPLES / "minimal_server.py"), str(path)]
        if how == "minimal_server"
        else ["-m", "lightspeed", "-c", str(path)]
    )
    with running(args, tmp_path, base):
        assert http_json("GET", f"{base}/liveness") == (200, {"alive": True})
        assert http_json("GET", f"{base}/readiness")[0] == 200
        assert http_json("GET", f"{base}/v1/info")[1]["name"] == "lightspeed-stack"
        status, body = http_json("POST", f"{base}/feedback", {"conversation_id": str(uuid.uuid4())})
        assert status == 422 and body["detail"][0]["loc"] == ["body", "user_question"]
        # The seed's step 3, as written, is answered offline by the example's stand-in provider.
        seed_query = {"query": "What is Kubernetes?", "provider": "openai", "model": "gpt-4"}
        status, body = http_json("POST", f"{base}/query", seed_query)
        assert status == 200, body
        assert body["response"] and body["conversation_id"]
    assert (tmp_path / "data" / "feedback").is_dir()


def test_embed_as_subapp(tmp_path: Path, unused_tcp_port: int, http_json: HttpJson) -> None:
    path = config_for(tmp_path, unused_tcp_port)
    port = unused_tcp_port
    base = f"http://127.0.0.1:{port}"
    with running([str(EXAMPLES / "embed_as_subapp.py"), str(path)], tmp_path, base):
        assert http_json("GET", f"{base}/") == (200, {"service": "host", "lightspeed": "/lightspeed/v1/feedback"})
        assert http_json("GET", f"{base}/lightspeed/liveness") == (200, {"alive": True})
        status, body = http_json("GET", f"{base}/lightspeed/v1/feedback/status")
        assert (status, body) == (200, {"functionality": "feedback", "status": {"enabled": True}})
        cid = str(uuid.uuid4())
        feedback = {"conversation_id": cid, "user_question": "q", "llm_response": "a", "sentiment": 1}
        status, body = http_json("POST", f"{base}/lightspeed/v1/feedback", feedback)
        assert status == 404
        assert body == {
            "detail": {"response": "Conversation not found", "cause": f"Conversation with ID {cid} does not exist"}
        }
        assert http_json("GET", f"{base}/lightspeed/nope") == (404, {"detail": "Not Found"})
