"""The local ingress enforces the contract as Red Hat's does."""

from __future__ import annotations

import io
import json

import aiohttp
import pytest

from tests.collector.collector_support import Ingress

GOOD_TYPE = "application/vnd.redhat.lightspeed-test.periodic+tar"


def form(*, name: str = "file", content_type: str = GOOD_TYPE, data: bytes = b"archive") -> aiohttp.FormData:
    f = aiohttp.FormData()
    f.add_field(name, io.BytesIO(data), filename="x.tar.gz", content_type=content_type)
    return f


async def post(ingress: Ingress, data: object, headers: dict[str, str] | None = None) -> tuple[int, str, str]:
    async with (
        aiohttp.ClientSession() as session,
        session.post(ingress.url, data=data, headers=headers or {}) as resp,
    ):
        return resp.status, resp.content_type, await resp.text()


async def test_an_upload_that_follows_the_contract_gets_202_with_a_request_id(ingress: Ingress) -> None:
    ingress.emulator.token = "t0k"
    status, ctype, text = await post(ingress, form(data=b"abc"), {"Authorization": "Bearer t0k"})
    assert (status, ctype) == (202, "text/plain")  # as the real ingress labels it
    request_id = json.loads(text)["request_id"]
    (entry,) = ingress.emulator.uploads
    assert entry["request_id"] == request_id and entry["service"] == "lightspeed-test"
    assert (ingress.emulator.store / entry["file"]).read_bytes() == b"abc"


@pytest.mark.parametrize(
    ("kwargs", "headers", "expected"),
    [
        ({"name": "upload"}, {"Authorization": "Bearer t0k"}, 400),
        ({"content_type": "application/gzip"}, {"Authorization": "Bearer t0k"}, 415),
        ({"content_type": "application/vnd.redhat.Bad_Name.periodic+tar"}, {"Authorization": "Bearer t0k"}, 415),
        ({}, {}, 401),
        ({}, {"Authorization": "Bearer wrong"}, 401),
        ({"data": b"x" * 2048}, {"Authorization": "Bearer t0k"}, 413),
    ],
    ids=["part-name", "content-type", "service-name", "no-token", "wrong-token", "too-large"],
)
async def test_the_contract_is_enforced(
    ingress: Ingress, kwargs: dict[str, object], headers: dict[str, str], expected: int
) -> None:
    ingress.emulator.token = "t0k"
    ingress.emulator.max_bytes = 1024
    status, _, text = await post(ingress, form(**kwargs), headers)  # type: ignore[arg-type]
    assert status == expected
    if expected == 415:
        assert text == ""  # the real ingress answers 415 with an empty body
    assert ingress.emulator.uploads == []
    assert list(ingress.emulator.store.glob("*.tar.gz")) == []


async def test_faults_come_from_the_control_endpoint(ingress: Ingress) -> None:
    control = str(ingress.server.make_url("/control"))
    async with aiohttp.ClientSession() as session:
        async with session.post(control, json={"faults": [{"status": 503, "retry_after": 2}]}) as resp:
            assert resp.status == 200
        async with session.post(control, json={"faults": [{"nope": 1}]}) as resp:
            assert resp.status == 400 and "nope" in (await resp.json())["error"]
        for delay in (-1, "soon", 1e9):
            async with session.post(control, json={"faults": [{"status": 500, "delay": delay}]}) as resp:
                assert resp.status == 400 and "delay" in (await resp.json())["error"]
        for bad in ({"delay_after_store": -1}, {"delay_after_store": 1, "status": 500}):
            async with session.post(control, json={"faults": [bad]}) as resp:
                assert resp.status == 400 and "delay_after_store" in (await resp.json())["error"]
        async with session.post(ingress.url, data=form()) as resp:
            assert (resp.status, resp.headers["Retry-After"]) == (503, "2")
        async with session.post(ingress.url, data=form()) as resp:
            assert resp.status == 202
        async with session.get(control) as resp:
            state = await resp.json()
    assert [a["status"] for a in state["attempts"]] == [503, 202]
    assert len(state["uploads"]) == 1 and state["faults"] == []
