"""The seed's "How to Test Locally" steps 1-5, with curl, against a real ``lightspeed serve`` process.

The seed's step 3 names provider ``openai`` and model ``gpt-4``; the configuration below
maps that name to the offline ``echo`` provider, so the steps run on a machine with no LLM.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from tests.query.query_support import free_port

pytestmark = pytest.mark.skipif(shutil.which("curl") is None, reason="curl is not installed")

CONFIG = """\
service:
  host: 127.0.0.1
  port: {port}
user_data_collection:            # step 1
  feedback_enabled: true
  feedback_storage: "{data}/feedback"
  transcripts_enabled: true
  transcripts_storage: "{data}/transcripts"
inference:
  default_provider: openai
  default_model: gpt-4
llm_providers:
  - name: openai                 # the name the seed's curl uses ...
    type: echo                   # ... answered offline; use type: openai and a url for a real LLM
    models: [gpt-4]
"""


def curl(*args: str) -> str:
    done = subprocess.run(["curl", "-sS", "--fail-with-body", *args], capture_output=True, text=True, timeout=10)
    assert done.returncode == 0, done.stderr + done.stdout
    return done.stdout


def wait_until_live(base: str, proc: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        assert proc.poll() is None, "the service exited"
        try:
            with urllib.request.urlopen(f"{base}/liveness", timeout=1) as resp:
                if resp.status == 200:
                    return
        except (urllib.error.URLError, ConnectionError):
            time.sleep(0.05)
    raise AssertionError("the service did not come up within 15 s")


def test_the_seed_steps_work_with_curl(tmp_path: Path) -> None:
    port = free_port()
    data = tmp_path / "data"
    config = tmp_path / "lightspeed-stack.yaml"
    config.write_text(CONFIG.format(port=port, data=data))
    base = f"http://127.0.0.1:{port}"
    env = {k: v for k, v in os.environ.items() if k != "LIGHTSPEED_CONFIG"}
    # Step 2: start the service.
    proc = subprocess.Popen(
        [sys.executable, "-m", "lightspeed", "serve", "-c", str(config)],
        cwd=tmp_path,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    try:
        wait_until_live(base, proc)
        # Step 3: a query.
        answer = json.loads(
            curl(
                "-X", "POST", f"{base}/query",
                "-H", "Content-Type: application/json",
                "-d", '{"query": "What is Kubernetes?", "provider": "openai", "model": "gpt-4"}',
            )
        )  # fmt: skip
        assert answer["response"] == "What is Kubernetes?"
        cid = answer["conversation_id"]
        # Step 4: feedback on that conversation ("your-conversation-id" in the seed).
        feedback = {
            "conversation_id": cid,
            "user_question": "What is Kubernetes?",
            "llm_response": "Kubernetes is...",
            "sentiment": 1,
            "user_feedback": "Very helpful response",
        }
        got = curl(
            "-X", "POST", f"{base}/feedback", "-H", "Content-Type: application/json", "-d", json.dumps(feedback)
        )  # fmt: skip
        assert json.loads(got) == {"response": "feedback received"}
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        assert proc.stderr is not None
        log = proc.stderr.read().decode()
        proc.stderr.close()
    # Step 5: the stored data.
    [fb] = list((data / "feedback").glob("*.json"))
    assert json.loads(fb.read_text())["conversation_id"] == cid
    [tr] = list((data / "transcripts").rglob("*.json"))
    transcript = json.loads(tr.read_text())
    assert transcript["metadata"]["provider"] == "openai"
    assert transcript["metadata"]["model"] == "gpt-4"
    assert transcript["metadata"]["query_provider"] == "openai"
    assert transcript["llm_response"] == "What is Kubernetes?"
    assert tr.parent.name == cid
    assert proc.returncode == 0, log
