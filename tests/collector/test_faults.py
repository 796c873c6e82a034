"""Failures of the ingress: nothing lost, nothing deleted early, retries on the backoff schedule."""

from __future__ import annotations

import asyncio
import itertools
import logging
import re
import socket

import pytest
from aiohttp.test_utils import TestServer

from lightspeed.collector import CollectorTask, UploadOutcome, backoff_delay
from lightspeed.collector.ingress import parse_retry_after
from lightspeed.ingress import Fault
from tests.collector.collector_support import Ingress, MakeHarness, store_records, tree_files


def stored_files(h: object) -> int:
    return len(tree_files(h.feedback_root)) + len(tree_files(h.transcripts_root))  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("fault", "outcome"),
    [
        (Fault(status=500, body="internal error " * 100), UploadOutcome.TRANSIENT),
        (Fault(status=503, retry_after="7"), UploadOutcome.TRANSIENT),
        (Fault(status=429, retry_after="1"), UploadOutcome.TRANSIENT),
        (Fault(status=415), UploadOutcome.REJECTED),
        (Fault(status=401), UploadOutcome.REJECTED),
        (Fault(status=403), UploadOutcome.REJECTED),
        (Fault(status=400), UploadOutcome.REJECTED),
        (Fault(reset=True), UploadOutcome.TRANSIENT),
    ],
    ids=["500", "503-retry-after", "429", "415", "401", "403", "400", "reset-mid-upload"],
)
async def test_a_failed_upload_keeps_everything_and_the_next_cycle_delivers_it(
    harness: MakeHarness, ingress: Ingress, fault: Fault, outcome: UploadOutcome, caplog: pytest.LogCaptureFixture
) -> None:
    h = await harness()
    stored = await store_records(h.storage, 10, 10)
    ingress.emulator.add_fault(fault)

    with caplog.at_level(logging.WARNING, logger="lightspeed.collector"):
        report = await h.collector.run_once()

    assert report.failure is not None and report.failure.outcome is outcome
    assert report.records == 0 and stored_files(h) == 20  # nothing deleted without a 202
    assert h.collector.status.consecutive_failures == 1
    assert h.metric("lightspeed_uploads_total", outcome=outcome.value) == 1
    assert h.metric("lightspeed_upload_consecutive_failures") == 1
    if fault.status is not None:
        assert str(fault.status) in report.failure.message
        # The body excerpt in the log is bounded.
        assert all(len(r.getMessage()) < 1200 for r in caplog.records)
    if outcome is UploadOutcome.REJECTED:
        assert h.collector.status.state == "rejected"
        assert any("REJECTED" in r.getMessage() for r in caplog.records)
    if fault.retry_after is not None:
        assert report.failure.retry_after == float(fault.retry_after)
        assert backoff_delay(h.collector, report.failure) >= float(fault.retry_after)

    report = await h.collector.run_once()  # the ingress is fine again

    assert report.ok and report.records == 20
    assert ingress.received() == {n: [d] for n, d in stored.items()}
    assert stored_files(h) == 0
    assert h.collector.status.state == "ok" and h.metric("lightspeed_upload_consecutive_failures") == 0


async def test_413_splits_the_batch_until_it_fits(harness: MakeHarness, ingress: Ingress) -> None:
    h = await harness()
    stored = await store_records(h.storage, 8, 8)
    ingress.emulator.add_fault(Fault(status=413))
    ingress.emulator.add_fault(Fault(status=413))

    report = await h.collector.run_once()

    assert report.ok and report.uploads == 3  # 16 -> 8 (413) + 8 -> 4 + 4
    assert ingress.received() == {n: [d] for n, d in stored.items()}
    assert h.metric("lightspeed_uploads_total", outcome="too_large") == 2


async def test_413_for_a_single_record_sets_it_aside(harness: MakeHarness, ingress: Ingress) -> None:
    h = await harness()
    await store_records(h.storage, 1, 0)
    ingress.emulator.add_fault(Fault(status=413, repeat=True))

    report = await h.collector.run_once()

    assert report.ok and report.set_aside == 1 and report.remaining == 0
    assert len(tree_files(h.storage.state_root / "aside")) == 2  # the record and its reason


async def test_a_server_that_does_not_answer_in_time_is_a_transient_failure(
    harness: MakeHarness, ingress: Ingress
) -> None:
    h = await harness(connection_timeout_seconds=1)
    stored = await store_records(h.storage, 2, 2)
    ingress.emulator.add_fault(Fault(delay=1.5, status=500))

    report = await h.collector.run_once()

    assert report.failure is not None and report.failure.outcome is UploadOutcome.TRANSIENT
    assert "within 1 s" in report.failure.message
    assert stored_files(h) == 4
    assert (await h.collector.run_once()).ok
    assert ingress.received() == {n: [d] for n, d in stored.items()}


async def test_a_timeout_after_the_ingress_stored_the_upload_sends_it_again_and_loses_nothing(
    harness: MakeHarness, ingress: Ingress
) -> None:
    """At least once: the ingress keeps the archive but answers too late; the collector cannot
    know, keeps the records, and the next cycle sends them again under the same names."""
    h = await harness(connection_timeout_seconds=1)
    stored = await store_records(h.storage, 3, 3)
    ingress.emulator.add_fault(Fault(delay_after_store=1.5))

    report = await h.collector.run_once()

    assert report.failure is not None and report.failure.outcome is UploadOutcome.TRANSIENT
    assert "within 1 s" in report.failure.message
    assert len(ingress.emulator.uploads) == 1  # the ingress has it...
    assert stored_files(h) == 6  # ...and the collector, not knowing, deleted nothing

    report = await h.collector.run_once()

    assert report.ok and report.records == 6
    assert len(ingress.emulator.uploads) == 2
    # Every record arrived twice, byte for byte under the same name: downstream deduplicates by id.
    assert ingress.received() == {n: [d, d] for n, d in stored.items()}
    assert stored_files(h) == 0


async def test_ingress_down_for_a_while_then_back(harness: MakeHarness, ingress: Ingress) -> None:
    h = await harness()
    stored = await store_records(h.storage, 5, 5)
    port = ingress.server.port
    await ingress.server.close()

    for _ in range(2):
        report = await h.collector.run_once()
        assert report.failure is not None and "cannot upload" in report.failure.message
    assert stored_files(h) == 10 and h.collector.status.consecutive_failures == 2

    server = TestServer(ingress.emulator.make_app(), host="127.0.0.1", port=port)
    await server.start_server()
    try:
        assert (await h.collector.run_once()).ok
    finally:
        await server.close()
    assert ingress.received() == {n: [d] for n, d in stored.items()}


async def test_the_loop_backs_off_with_jitter_and_honours_retry_after(
    harness: MakeHarness, ingress: Ingress, caplog: pytest.LogCaptureFixture
) -> None:
    h = await harness(retry_base_seconds=0.1, collection_interval=3600, shutdown_timeout_seconds=5)
    stored = await store_records(h.storage, 3, 3)
    for fault in (Fault(status=503, retry_after="1"), Fault(status=500), Fault(status=500), Fault(reset=True)):
        ingress.emulator.add_fault(fault)
    task = CollectorTask(collector=h.collector, shutdown_timeout=5)

    with caplog.at_level(logging.INFO, logger="lightspeed.collector"):
        task.start()
        for _ in range(200):
            if ingress.emulator.uploads:
                break
            await asyncio.sleep(0.05)
        await task.stop()

    assert ingress.received() == {n: [d] for n, d in stored.items()}
    attempts = [a["at"] for a in ingress.emulator.attempts]
    assert len(attempts) == 5
    delays = [
        float(m.group(1))
        for r in caplog.records
        if (m := re.match(r"next collection attempt in ([0-9.]+) s", r.getMessage()))
    ]
    assert len(delays) == 4
    assert delays[0] >= 1.0  # Retry-After honoured
    for n, delay in enumerate(delays[1:], start=2):
        assert delay <= 0.1 * 2 ** (n - 1)  # full jitter under the exponential cap
    for (before, after), delay in zip(itertools.pairwise(attempts), delays, strict=True):
        assert after - before >= delay - 0.01  # the log timestamps show the wait


def test_retry_after_accepts_seconds_and_http_dates() -> None:
    assert parse_retry_after("120") == 120.0
    assert parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now=1445412480.0 - 60) == 60.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


async def test_an_unreachable_port_is_a_transient_failure(harness: MakeHarness) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    h = await harness(ingress_server_url=f"http://127.0.0.1:{port}/api/ingress/v1/upload")
    await store_records(h.storage, 1, 0)
    report = await h.collector.run_once()
    assert report.failure is not None and report.failure.outcome is UploadOutcome.TRANSIENT
    assert stored_files(h) == 1
