"""A storage directory that cannot be created or written does not stop ``lightspeed serve``
(a real process on 127.0.0.1): it starts, logs one error line per bad directory, ``/readiness``
is 503 naming it, what needs it answers the upstream's 500 bodies, everything else works, and
it heals without a restart once the directory can be used. A configuration error still stops it.
The upstream refuses to start when a storage path exists but is not a writable directory; the
README lists this as a deliberate difference."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path
from typing import Any

import aiohttp
import pytest
import yaml

from tests.service_process import ECHO, NOBODY, Service, command

#: The upstream's 500 bodies for a query whose records could not be stored.
QUERY_500 = (
    {"response": "Internal server error", "cause": "An unexpected error occurred while processing the request."},
    {"response": "Database query failed", "cause": "Failed to query the database"},
)


def _config(feedback: Path, transcripts: Path, state: Path | None = None, **service: Any) -> dict[str, Any]:
    udc: dict[str, Any] = {
        "feedback_enabled": True,
        "feedback_storage": str(feedback),
        "transcripts_enabled": True,
        "transcripts_storage": str(transcripts),
    }
    if state is not None:
        udc["storage"] = {"backend": "filesystem", "options": {"state_path": str(state)}}
    return {**ECHO, "service": service, "user_data_collection": udc}


class Api:
    def __init__(self, http: aiohttp.ClientSession, base: str) -> None:
        self.http = http
        self.base = base

    async def call(self, method: str, path: str, body: Any = None) -> tuple[int, Any]:
        """The status and the JSON body (the text of one that is not JSON: ``/metrics``)."""
        async with self.http.request(method, f"{self.base}{path}", json=body) as resp:
            text = await resp.text()
        try:
            return resp.status, json.loads(text)
        except ValueError:
            return resp.status, text

    async def query(self) -> tuple[int, Any]:
        return await self.call("POST", "/v1/query", {"query": "what is a pod?"})

    async def feedback(self, cid: str) -> tuple[int, Any]:
        body = {"conversation_id": cid, "user_question": "q", "llm_response": "a", "sentiment": 1}
        return await self.call("POST", "/v1/feedback", body)


def _errors_about(log: str, setting: str) -> list[str]:
    return [
        line
        for line in log.splitlines()
        if " ERROR " in line and "lightspeed.storage.filesystem" in line and setting in line
    ]


@pytest.mark.parametrize("workers", [1, 2])
async def test_a_feedback_root_under_a_file_starts_the_service_and_heals(tmp_path: Path, workers: int) -> None:
    blocker = tmp_path / "data"
    blocker.write_bytes(b"")  # a regular file where the feedback directory's parent belongs
    feedback = blocker / "feedback"
    service = Service(tmp_path, _config(feedback, tmp_path / "transcripts", tmp_path / "state", workers=workers))
    async with aiohttp.ClientSession() as http:
        await service.start(http)
        try:
            api = Api(http, service.base)
            status, body = await api.call("GET", "/readiness")
            assert (status, body["ready"], body["overall_status"]) == (503, False, "unhealthy"), body
            cause = f"feedback_storage {feedback} cannot be written: Not a directory (ENOTDIR) ({blocker})"
            assert cause in body["reason"], body
            assert body["impacts"] == [body["reason"]]
            assert [(c["component"], c["status"], c["reason"]) for c in body["checks"]] == [
                ("storage", "unhealthy", body["reason"])
            ]

            status, body = await api.query()  # transcripts and the state database are fine
            assert status == 200, body
            cid = body["conversation_id"]
            status, body = await api.feedback(cid)
            assert (status, body) == (
                500,
                {
                    "detail": {
                        "response": "Failed to store feedback",
                        "cause": f"Failed to store feedback at directory: {feedback}",
                    }
                },
            )
            for path in ("/liveness", "/v1/info", "/v1/models", "/v1/config", "/metrics", "/v1/conversations"):
                assert (await api.call("GET", path))[0] == 200, path

            blocker.unlink()  # the operator fixes the volume: no restart
            assert (await api.call("GET", "/readiness"))[0] == 200
            assert await api.feedback(cid) == (200, {"response": "feedback received"})
            assert [p.suffix for p in feedback.iterdir()] == [".json"]
        finally:
            service.stop()
    log = service.log.read_text()
    errors = _errors_about(log, "feedback_storage")
    pids = [m.group(1) for line in errors if (m := re.search(r"\[pid (\d+)\]", line))]
    assert 1 <= len(pids) == len(set(pids)) <= workers, log  # one line per bad directory, in each worker
    assert cause in errors[0] and "feedback writes fail until this is fixed" in errors[0], errors
    assert not _errors_about(log, "transcripts_storage") and not _errors_about(log, "state_path")
    assert "Traceback" not in log


async def test_a_state_directory_under_a_file_fails_what_needs_it_and_heals(tmp_path: Path) -> None:
    blocker = tmp_path / "volume"
    blocker.write_bytes(b"")
    state = blocker / "state"
    service = Service(tmp_path, _config(tmp_path / "feedback", tmp_path / "transcripts", state))
    async with aiohttp.ClientSession() as http:
        await service.start(http)
        try:
            api = Api(http, service.base)
            status, body = await api.call("GET", "/readiness")
            assert status == 503 and f"state_path {state} cannot be written: Not a directory" in body["reason"], body
            status, body = await api.query()
            assert status == 500 and body["detail"] in QUERY_500, body
            assert (await api.call("GET", "/v1/conversations"))[0] >= 500
            for path in ("/liveness", "/v1/info", "/v1/models", "/v1/config", "/metrics"):
                assert (await api.call("GET", path))[0] == 200, path

            blocker.unlink()
            assert (await api.call("GET", "/readiness"))[0] == 200
            status, body = await api.query()
            assert status == 200, body
            cid = body["conversation_id"]
            assert await api.feedback(cid) == (200, {"response": "feedback received"})
            status, body = await api.call("GET", "/v1/conversations")
            assert [c["conversation_id"] for c in body["conversations"]] == [cid]
        finally:
            service.stop()
    errors = _errors_about(service.log.read_text(), "state_path")
    assert len(errors) == 1 and "queries, feedback and conversations" in errors[0], errors


async def test_read_only_roots_start_the_service_and_heal(unprivileged_base: Path) -> None:
    """Existing directories that the service's user cannot write (the upstream refuses to start)."""
    roots = [unprivileged_base / "feedback", unprivileged_base / "transcripts"]
    for root in roots:
        root.mkdir(mode=0o500)
        os.chown(root, NOBODY, NOBODY)
    config = _config(roots[0], roots[1], unprivileged_base / "state")
    service = Service(unprivileged_base, config, unprivileged=True)
    async with aiohttp.ClientSession() as http:
        await service.start(http)
        try:
            api = Api(http, service.base)
            status, body = await api.call("GET", "/readiness")
            assert status == 503, body
            for setting, root in zip(("feedback_storage", "transcripts_storage"), roots, strict=True):
                assert f"{setting} {root} cannot be written: Permission denied (EACCES)" in body["reason"], body
            status, body = await api.query()  # its transcript cannot be stored: not answered
            assert status == 500 and body["detail"] == QUERY_500[0], body
            assert (await api.call("GET", "/v1/conversations"))[0] == 200  # the state database is fine
            for root in roots:
                root.chmod(0o700)
            assert (await api.call("GET", "/readiness"))[0] == 200
            status, body = await api.query()
            assert status == 200, body
            assert await api.feedback(body["conversation_id"]) == (200, {"response": "feedback received"})
        finally:
            service.stop()
    log = service.log.read_text()
    assert len(_errors_about(log, "feedback_storage")) == 1 and len(_errors_about(log, "transcripts_storage")) == 1


def test_a_configuration_error_still_stops_the_start(tmp_path: Path) -> None:
    (tmp_path / "data").write_bytes(b"")
    config = _config(tmp_path / "data" / "feedback", tmp_path / "transcripts")
    config["user_data_collection"]["feedback_storge"] = "typo"
    config["service"] = {"port": "not a number"}
    path = tmp_path / "lightspeed-stack.yaml"
    path.write_text(yaml.safe_dump(config))
    env = {k: v for k, v in os.environ.items() if k != "LIGHTSPEED_CONFIG"}
    done = subprocess.run([*command(), "serve", "-c", str(path)], capture_output=True, text=True, timeout=60, env=env)
    assert done.returncode == 2, done.stderr
    assert "user_data_collection.feedback_storge: unknown key" in done.stderr
    assert re.search(r"service\.port: .*integer", done.stderr), done.stderr
    assert "Traceback" not in done.stderr
