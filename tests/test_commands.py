"""The ``lightspeed`` command, run for real in subprocesses: ``check-config`` output and exit
codes, ``serve`` on the embedded defaults, ``--host/--port``, ``LIGHTSPEED_CONFIG``, and
``service.workers: 2`` stopped by SIGTERM."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import subprocess
import sys
import textwrap
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

LIGHTSPEED = str(Path(sys.executable).with_name("lightspeed"))
START_TIMEOUT = 20.0
HttpJson = Callable[..., tuple[int, Any]]


def env_without_config(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "LIGHTSPEED_CONFIG"}
    env.update(extra)
    return env


def run(args: Sequence[str], cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [LIGHTSPEED, *args],
        cwd=cwd,
        env=env or env_without_config(),
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def write(path: Path, text: str) -> Path:
    path.write_text(textwrap.dedent(text), encoding="utf-8")
    return path


class Server:
    """A ``lightspeed serve`` process; its stderr goes to a file so it never blocks."""

    def __init__(self, args: Sequence[str], cwd: Path, port: int, env: dict[str, str] | None = None) -> None:
        self.base = f"http://127.0.0.1:{port}"
        self.log_path = cwd / f"serve-{port}.log"
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "lightspeed", *args],
            cwd=cwd,
            env=env or env_without_config(),
            stdout=self._log,
            stderr=subprocess.STDOUT,
        )

    @property
    def log(self) -> str:
        return self.log_path.read_text(errors="replace")

    def wait_ready(self) -> None:
        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise AssertionError(f"server exited with {self.proc.returncode}:\n{self.log}")
            try:
                with urllib.request.urlopen(f"{self.base}/liveness", timeout=2) as resp:
                    if resp.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.05)
        raise AssertionError(f"server did not start:\n{self.log}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        finally:
            self._log.close()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


@contextlib.contextmanager
def serving(args: Sequence[str], cwd: Path, port: int, env: dict[str, str] | None = None) -> Iterator[Server]:
    server = Server(args, cwd, port, env)
    try:
        server.wait_ready()
        yield server
    finally:
        server.kill()


VALID = """
name: from-file
service:
  port: 8081
user_data_collection:
  feedback_enabled: true
  feedback_storage: "./fb"
  transcripts_enabled: false
  data_collector:
    enabled: true
    ingress_server_url: "https://ingress.example.com/upload"
    ingress_server_auth_token: "${env.LS_TEST_TOKEN}"
    ingress_content_service_name: "lightspeed-stack"
"""


# ------------------------------------------------------------------ check-config


def test_check_config_prints_effective_config_with_secrets_masked(tmp_path: Path) -> None:
    path = write(tmp_path / "conf.yaml", VALID)
    result = run(["check-config", "-c", str(path)], tmp_path, env_without_config(LS_TEST_TOKEN="tok-s3cret"))
    assert result.returncode == 0, result.stderr
    assert "tok-s3cret" not in result.stdout + result.stderr
    first, _, rest = result.stdout.partition("\n")
    assert first == f"# effective configuration from {path} (secrets masked)"
    shown = yaml.safe_load(rest)
    assert shown["name"] == "from-file"
    assert shown["service"]["port"] == 8081
    dc = shown["user_data_collection"]["data_collector"]
    assert dc["ingress_server_auth_token"] == "********"
    assert dc["collection_interval"] == 7200 and dc["cleanup_after_send"] is True
    assert dc["connection_timeout_seconds"] == 30


def test_check_config_lists_every_problem(tmp_path: Path) -> None:
    path = write(
        tmp_path / "lightspeed-stack.yaml",
        """
        service:
          port: "8080"
          log_leve: debug
        user_data_collection:
          feedback_enabled: true
          data_collector:
            colection_interval: 60
            ingress_content_service_name: Bad_Name
        authentication:
          module: ldap
        """,
    )
    result = run(["check-config"], tmp_path)
    assert result.returncode == 1
    assert result.stdout == ""
    err = result.stderr
    assert f"invalid configuration in {path.name}" in err
    for line in (
        "  - service.log_leve: unknown key",
        "  - service.port: expected an integer, got a string",
        "  - user_data_collection.data_collector.colection_interval: unknown key",
    ):
        assert line in err.splitlines(), err
    assert "Traceback" not in err


def test_check_config_semantic_problems(tmp_path: Path) -> None:
    write(
        tmp_path / "lightspeed-stack.yaml",
        """
        user_data_collection:
          feedback_enabled: true
          data_collector:
            ingress_content_service_name: Bad_Name
        authentication:
          module: ldap
        """,
    )
    result = run(["check-config"], tmp_path)
    assert result.returncode == 1
    lines = result.stderr.splitlines()
    assert "(3 problem(s))" in lines[0]
    assert "  - user_data_collection.feedback_storage: required when feedback_enabled is true" in lines
    assert any(ln.startswith("  - user_data_collection.data_collector.ingress_content_service_name:") for ln in lines)
    assert any(ln.startswith("  - authentication.module: must be one of noop,") for ln in lines)
    assert any(ln.endswith("trusted-proxy, got 'ldap'") for ln in lines)


def test_check_config_storage_problems(tmp_path: Path) -> None:
    path = write(
        tmp_path / "a.yaml",
        """
        user_data_collection:
          storage:
            backend: nosuch
        """,
    )
    result = run(["check-config", "--config", str(path)], tmp_path)
    assert result.returncode == 1
    assert "user_data_collection.storage.backend: unknown storage backend 'nosuch'" in result.stderr
    assert "installed backends: filesystem" in result.stderr
    write(
        path,
        """
        user_data_collection:
          feedback_enabled: true
          feedback_storage: ./fb
          storage:
            options: {durability: never, colour: red}
        """,
    )
    result = run(["check-config", "--config", str(path)], tmp_path)
    assert result.returncode == 1
    assert "  - user_data_collection.storage.options.colour: unknown key" in result.stderr
    assert "  - user_data_collection.storage.options.durability: must be one of rename, fsync" in result.stderr


def test_config_file_resolution(tmp_path: Path) -> None:
    write(tmp_path / "lightspeed-stack.yaml", "name: local\n")
    env_file = write(tmp_path / "env.yaml", "name: from-env\n")
    flag_file = write(tmp_path / "flag.yaml", "name: from-flag\n")

    def name_of(args: list[str], env: dict[str, str]) -> str:
        result = run(["check-config", *args], tmp_path, env)
        assert result.returncode == 0, result.stderr
        return str(yaml.safe_load(result.stdout)["name"])

    assert name_of([], env_without_config()) == "local"
    assert name_of([], env_without_config(LIGHTSPEED_CONFIG=str(env_file))) == "from-env"
    assert name_of(["-c", str(flag_file)], env_without_config(LIGHTSPEED_CONFIG=str(env_file))) == "from-flag"
    (tmp_path / "lightspeed-stack.yaml").unlink()
    result = run(["check-config"], tmp_path)
    assert result.returncode == 0
    assert result.stdout.startswith("# effective configuration from the embedded defaults")
    assert yaml.safe_load(result.stdout)["user_data_collection"]["feedback_storage"] == "./data/feedback"


@pytest.mark.parametrize("command", [[], ["serve"], ["check-config"]])
def test_named_missing_file_is_an_error(tmp_path: Path, command: list[str]) -> None:
    write(tmp_path / "lightspeed-stack.yaml", "name: local\n")
    result = run([*command, "-c", "missing.yaml"], tmp_path)
    assert result.returncode == (1 if command == ["check-config"] else 2)
    assert "'missing.yaml' (from --config) does not exist" in result.stderr
    result = run(command, tmp_path, env_without_config(LIGHTSPEED_CONFIG="gone.yaml"))
    assert result.returncode != 0
    assert "'gone.yaml' (from $LIGHTSPEED_CONFIG) does not exist" in result.stderr
    assert not (tmp_path / "data").exists()


def test_serve_with_a_bad_config_exits_2(tmp_path: Path) -> None:
    write(tmp_path / "lightspeed-stack.yaml", "service: {prot: 1, workers: 0}\n")
    result = run([], tmp_path)
    assert result.returncode == 2
    assert "service.prot: unknown key" in result.stderr
    assert "service.workers: must be at least 1, got 0" in result.stderr
    result = run(["--port", "70000"], tmp_path)
    assert result.returncode == 2


@pytest.mark.parametrize("module", ["k8s", "trusted-proxy"])
def test_serve_without_kubernetes_credentials_fails_in_one_line(tmp_path: Path, module: str) -> None:
    """No k8s_cluster_api, no pod service account, no kubeconfig: one error line saying what to set."""
    write(tmp_path / "lightspeed-stack.yaml", f"authentication: {{module: {module}}}\n")
    env = {k: v for k, v in env_without_config().items() if not k.startswith("KUBERNETES_SERVICE_")}
    env.update(HOME=str(tmp_path), KUBECONFIG=str(tmp_path / "absent-kubeconfig"))
    result = run([], tmp_path, env)
    assert result.returncode == 2
    errors = [line for line in result.stderr.splitlines() if "error" in line.lower()]
    assert len(errors) == 1, result.stderr
    assert errors[0].startswith(f"lightspeed: error: authentication.module {module}: no Kubernetes credentials: ")
    for named in ("KUBERNETES_SERVICE_HOST", "absent-kubeconfig", "a pod with a service account", "$KUBECONFIG"):
        assert named in errors[0], named
    assert "authentication.k8s_cluster_api and k8s_ca_cert_path" in errors[0]
    assert "Traceback" not in result.stderr


def test_version_and_help(tmp_path: Path) -> None:
    result = run(["--version"], tmp_path)
    assert result.returncode == 0 and result.stdout.startswith("lightspeed ")
    result = subprocess.run(
        [sys.executable, "-m", "lightspeed", "check-config", "--help"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 0 and "--config" in result.stdout


# ------------------------------------------------------------------ serve


def test_serve_on_embedded_defaults(tmp_path: Path, unused_tcp_port: int, http_json: HttpJson) -> None:
    port = unused_tcp_port
    server = Server(["--host", "127.0.0.1", "--port", str(port)], tmp_path, port)
    try:
        server.wait_ready()
        assert http_json("GET", f"{server.base}/readiness")[0] == 200
        status, body = http_json("GET", f"{server.base}/v1/feedback/status")
        assert (status, body) == (200, {"functionality": "feedback", "status": {"enabled": True}})
        status, body = http_json("POST", f"{server.base}/v1/feedback", {"conversation_id": "../../etc"})
        assert status == 422
        assert (tmp_path / "data" / "feedback").is_dir() and (tmp_path / "data" / "transcripts").is_dir()
        assert http_json("GET", f"{server.base}/v1/info")[1]["name"] == "lightspeed"
    finally:
        code = server.stop()
    log = server.log
    assert code == 0, log
    assert "starting on the embedded defaults" in log
    assert f"listening on http://127.0.0.1:{port}" in log
    assert "storage backend 'filesystem' closed" in log
    assert "Traceback" not in log


def test_serve_host_and_port_override_the_file(tmp_path: Path, unused_tcp_port: int, http_json: HttpJson) -> None:
    port = unused_tcp_port
    write(
        tmp_path / "lightspeed-stack.yaml",
        """
        name: overridden
        service: {host: 192.0.2.1, port: 1, access_log: false}
        user_data_collection: {feedback_enabled: true, feedback_storage: ./fb}
        """,
    )
    with serving(["serve", "--host", "127.0.0.1", "--port", str(port)], tmp_path, port) as server:
        assert http_json("GET", f"{server.base}/v1/info")[1]["name"] == "overridden"
        assert server.stop() == 0
    assert "configuration loaded from lightspeed-stack.yaml" in server.log
    assert "GET /v1/info" not in server.log  # service.access_log: false


def test_serve_uses_lightspeed_config(tmp_path: Path, unused_tcp_port: int, http_json: HttpJson) -> None:
    port = unused_tcp_port
    conf = write(
        tmp_path / "elsewhere.yaml",
        f"""
        name: from-env-var
        service: {{host: 127.0.0.1, port: {port}}}
        user_data_collection: {{feedback_enabled: false, feedback_storage: ./fb}}
        """,
    )
    with serving([], tmp_path, port, env_without_config(LIGHTSPEED_CONFIG=str(conf))) as server:
        assert http_json("GET", f"{server.base}/v1/info")[1]["name"] == "from-env-var"
        assert http_json("GET", f"{server.base}/v1/feedback/status")[1]["status"]["enabled"] is False
        assert server.stop() == 0


# ------------------------------------------------------------------ workers


def _pids_of(log: str, pattern: str) -> set[int]:
    return {
        int(m.group(1))
        for line in log.splitlines()
        if pattern in line
        for m in [re.search(r"\[pid (\d+)\]", line)]
        if m
    }


def test_two_workers_share_the_store_and_stop_on_sigterm(
    tmp_path: Path, unused_tcp_port: int, http_json: HttpJson
) -> None:
    port = unused_tcp_port
    write(
        tmp_path / "lightspeed-stack.yaml",
        f"""
        service: {{host: 127.0.0.1, port: {port}, workers: 2}}
        user_data_collection:
          feedback_enabled: true
          feedback_storage: ./data/feedback
        """,
    )
    server = Server([], tmp_path, port)
    try:
        server.wait_ready()
        deadline = time.monotonic() + START_TIMEOUT
        while len(_pids_of(server.log, "GET /liveness")) < 2:  # until both workers listen
            assert time.monotonic() < deadline, server.log
            http_json("GET", f"{server.base}/liveness")
        workers = _pids_of(server.log, "storage backend 'filesystem' open")
        assert len(workers) == 2
        assert http_json("PUT", f"{server.base}/v1/feedback/status", {"status": False})[0] == 200
        # Each request is a new connection, which SO_REUSEPORT hands to either worker.
        answers = [http_json("GET", f"{server.base}/v1/feedback/status")[1]["status"]["enabled"] for _ in range(40)]
        assert answers == [False] * 40
        assert _pids_of(server.log, "GET /v1/feedback/status") == workers, "both workers must have answered"
    finally:
        code = server.stop()
    log = server.log
    assert code == 0, log
    assert "received SIGTERM: stopping 2 worker(s)" in log
    assert "all workers stopped" in log
    assert _pids_of(log, "storage backend 'filesystem' closed") == workers
    assert "Traceback" not in log and "killing it" not in log
    for pid in workers:
        with contextlib.suppress(FileNotFoundError):
            state = Path(f"/proc/{pid}/status").read_text()
            assert "State:\tZ" in state, f"worker {pid} still running"
