"""One collection cycle against the real ingress emulator: what arrives, what is left behind."""

from __future__ import annotations

import asyncio
import os
import tarfile
import uuid
from pathlib import Path
from typing import Any

import attrs
import pytest

from lightspeed.records import RecordKind, hash_user_id
from tests.collector.collector_support import (
    Ingress,
    MakeHarness,
    feedback,
    random_text,
    store_records,
    transcript,
    tree_dirs,
    tree_files,
)


async def test_every_record_arrives_once_byte_for_byte_and_the_files_are_gone(
    harness: MakeHarness, ingress: Ingress
) -> None:
    h = await harness()
    stored = await store_records(h.storage, 25, 40)

    report = await h.collector.run_once()

    assert report.ok, report.summary()
    assert (report.records, report.remaining) == (65, 0)
    got = ingress.received()
    assert got == {name: [data] for name, data in stored.items()}
    assert tree_files(h.feedback_root) == []
    # Emptied user and conversation folders are removed too; the roots stay.
    assert tree_dirs(h.transcripts_root) == []
    assert h.feedback_root.is_dir() and h.transcripts_root.is_dir()
    assert h.metric("lightspeed_records_uploaded_total", kind="feedback") == 25
    assert h.metric("lightspeed_records_uploaded_total", kind="transcripts") == 40
    assert h.metric("lightspeed_uploads_total", outcome="success") == report.uploads == 1
    assert h.metric("lightspeed_uploaded_bytes_total") == ingress.emulator.uploads[0]["size"]
    assert h.metric("lightspeed_last_successful_upload_timestamp_seconds") > 0
    assert h.metric("lightspeed_records_pending", kind="feedback") == 0


async def test_the_upload_follows_the_ingress_contract(harness: MakeHarness, ingress: Ingress) -> None:
    h = await harness(identity_id="cluster-42", ingress_content_service_name="openshift-lightspeed")
    ingress.emulator.token = "secret-token"  # enforce the Bearer token
    await store_records(h.storage, 1, 1)

    assert (await h.collector.run_once()).ok

    (entry,) = ingress.emulator.uploads
    assert entry["user_agent"] == "openshift-lightspeed-operator/user-data-collection cluster/cluster-42"
    assert entry["content_type"] == "application/vnd.redhat.openshift-lightspeed.periodic+tar"
    assert entry["filename"].endswith(".tar.gz")
    with tarfile.open(ingress.emulator.store / entry["file"], "r:gz") as tar:
        names = sorted(tar.getnames())
    assert names[0].startswith("feedback/") and names[0].endswith(".json")
    user, conv, file = names[1].split("/")[1:]
    assert len(user) == 64 and uuid.UUID(conv) and file.endswith(".json")


async def test_cleanup_after_send_false_keeps_the_files_and_never_sends_them_again(
    harness: MakeHarness, ingress: Ingress
) -> None:
    h = await harness(cleanup_after_send=False)
    stored = await store_records(h.storage, 5, 5)

    assert (await h.collector.run_once()).records == 10
    files_after = tree_files(h.feedback_root) + tree_files(h.transcripts_root)
    assert len(files_after) == 10
    assert (await h.collector.run_once()).records == 0  # marked exported: not re-sent

    newer = await h.storage.put(feedback(99))
    report = await h.collector.run_once()
    assert report.records == 1 and report.remaining == 0
    got = ingress.received()
    assert set(got) == set(stored) | {newer.name}
    assert all(len(v) == 1 for v in got.values())


async def test_many_batches_each_record_once(harness: MakeHarness, ingress: Ingress) -> None:
    h = await harness()
    stored = await store_records(h.storage, 20, 23)
    h.collector.batch_records = 6

    report = await h.collector.run_once()

    assert report.ok and report.uploads == 8
    assert ingress.received() == {n: [d] for n, d in stored.items()}


async def test_a_cycle_starts_with_a_small_batch_and_doubles_it(harness: MakeHarness, ingress: Ingress) -> None:
    """The first archive of a cycle is small, so its upload and deletion start early; each
    next one doubles, up to batch_records."""
    h = await harness()
    stored = await store_records(h.storage, 12, 13)
    h.collector.first_batch_records = 2
    h.collector.batch_records = 8

    report = await h.collector.run_once()

    assert report.ok and report.records == 25
    sizes = []
    for entry in ingress.emulator.uploads:
        with tarfile.open(ingress.emulator.store / entry["file"], "r:gz") as tar:
            sizes.append(len(tar.getnames()))
    assert sizes == [2, 4, 8, 8, 3]
    assert ingress.received() == {n: [d] for n, d in stored.items()}


@pytest.mark.parametrize("level", [1, 9])
async def test_compression_level_is_the_configured_gzip_level(
    harness: MakeHarness, ingress: Ingress, level: int
) -> None:
    """``compression_level`` sets the archives' gzip level (the gzip header says which: 4 for
    the fastest, 2 for the best); the content arrives the same."""
    h = await harness(compression_level=level)
    stored = await store_records(h.storage, 30, 30)

    assert (await h.collector.run_once()).ok

    [entry] = ingress.emulator.uploads
    header = (ingress.emulator.store / entry["file"]).read_bytes()[:10]
    assert header[8] == (4 if level == 1 else 2)  # XFL: RFC 1952
    assert ingress.received() == {n: [d] for n, d in stored.items()}


async def test_a_steady_stream_of_new_records_does_not_keep_a_cycle_going(
    harness: MakeHarness, ingress: Ingress
) -> None:
    """Records written during a cycle may join it, but the cycle ends once the store has run
    dry twice in a row; the rest waits for the next cycle instead of one upload of a few
    records after another for as long as users keep asking. Here a new record is stored
    just before every claim, so the store is never empty when the collector looks."""
    h = await harness()
    stored = await store_records(h.storage, 6, 4)
    h.collector.first_batch_records = 4
    h.collector.batch_records = 4
    written: list[str] = []
    claim = h.storage.claim

    async def claim_while_users_keep_asking(**kw: Any) -> Any:
        written.append((await h.storage.put(feedback(1000 + len(written)))).name)
        return await claim(**kw)

    h.storage.claim = claim_while_users_keep_asking  # type: ignore[method-assign]
    report = await asyncio.wait_for(h.collector.run_once(), 20)

    assert report.ok
    got = ingress.received()
    assert set(stored) <= set(got)  # everything pending when the cycle began
    assert all(len(v) == 1 for v in got.values())
    assert report.uploads <= 6  # 4 + 4 + 3 of them (with new ones), then two short batches at most
    h.storage.claim = claim  # type: ignore[method-assign]
    assert (await h.collector.run_once()).ok  # the next cycle takes whatever is left
    assert set(ingress.received()) == set(stored) | set(written)


async def test_the_token_file_is_read_again_before_each_upload(
    harness: MakeHarness, ingress: Ingress, tmp_path: Path
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("first\n")
    h = await harness(ingress_server_auth_token=None, ingress_server_auth_token_path=str(token_file))
    ingress.emulator.token = "first"
    await h.storage.put(feedback(1))
    assert (await h.collector.run_once()).ok

    token_file.write_text("second")  # rotated by the platform
    ingress.emulator.token = "second"
    await h.storage.put(feedback(2))
    assert (await h.collector.run_once()).ok
    assert len(ingress.emulator.uploads) == 2


async def test_only_enabled_kinds_are_collected(harness: MakeHarness, ingress: Ingress) -> None:
    writer = await harness()
    await store_records(writer.storage, 3, 4)
    h = await harness({"transcripts_enabled": False})

    report = await h.collector.run_once()

    assert report.records == 3
    assert {n.split("/")[0] for n in ingress.received()} == {"feedback"}
    assert len(tree_files(h.transcripts_root)) == 4


async def test_writer_temp_files_and_symbolic_links_are_never_collected(
    harness: MakeHarness, ingress: Ingress, tmp_path: Path
) -> None:
    h = await harness()
    stored = await store_records(h.storage, 2, 2)
    outside = tmp_path / "outside"
    outside.mkdir()
    secret = outside / "secret.json"
    secret.write_text('{"secret": true}')
    rid = str(uuid.uuid4())
    (h.feedback_root / f".{rid}.123.1.tmp").write_text("{partial")
    (h.feedback_root / f"{rid}.json.tmp").write_text("{partial")
    os.symlink(secret, h.feedback_root / f"{uuid.uuid4()}.json")
    user = hash_user_id("mallory")
    os.symlink(outside, h.transcripts_root / user)  # a user folder that points outside the root
    (outside / str(uuid.uuid4())).mkdir()

    report = await h.collector.run_once()

    assert report.ok
    assert set(ingress.received()) == set(stored)
    assert secret.read_text() == '{"secret": true}'
    assert (h.feedback_root / f".{rid}.123.1.tmp").exists() and (h.feedback_root / f"{rid}.json.tmp").exists()
    assert (h.transcripts_root / user).is_symlink()


async def test_a_record_too_large_for_any_upload_is_set_aside_not_deleted(
    harness: MakeHarness, ingress: Ingress
) -> None:
    h = await harness(max_payload_bytes=4000)
    small = await store_records(h.storage, 3, 0)
    big = await h.storage.put(attrs.evolve(feedback(7), llm_response=random_text(8000)))

    report = await h.collector.run_once()

    assert report.ok and report.set_aside == 1
    assert set(ingress.received()) == set(small)
    aside = h.storage.state_root / "aside" / f"{big.name}.aside"  # never *.json in the state directory
    reason = h.storage.state_root / "aside" / f"{big.name}.reason"
    assert aside.is_file() and "max_payload_bytes" in reason.read_text()
    assert h.metric("lightspeed_records_set_aside_total", kind="feedback") == 1
    assert (await h.storage.pending_stats()).records[RecordKind.FEEDBACK] == 0


async def test_an_archive_over_the_limit_is_split(harness: MakeHarness, ingress: Ingress) -> None:
    h = await harness(max_payload_bytes=9000)
    names = {}
    for i in range(6):
        rec = attrs.evolve(feedback(i), llm_response=random_text(2500, seed=i))
        names[(await h.storage.put(rec)).name] = rec.to_json()

    report = await h.collector.run_once()

    assert report.ok and report.set_aside == 0 and report.uploads >= 2
    assert ingress.received() == {n: [d] for n, d in names.items()}
    assert all(u["size"] <= 9000 for u in ingress.emulator.uploads)


async def test_max_pending_bytes_drops_the_oldest_with_an_error(
    harness: MakeHarness, ingress: Ingress, caplog: object
) -> None:
    h = await harness(max_pending_bytes=2000)
    recs = []
    for i in range(10):
        stored = await h.storage.put(feedback(i))
        path = h.feedback_root / stored.name.split("/")[1]
        os.utime(path, ns=(1_000_000_000 * (i + 1), 1_000_000_000 * (i + 1)))  # oldest first
        recs.append((stored, path.stat().st_size))
    total = sum(s for _, s in recs)
    kept_bytes = 0
    kept = []
    for stored, size in reversed(recs):
        if kept_bytes + size > 2000:
            break
        kept_bytes += size
        kept.append(stored.name)

    report = await h.collector.run_once()

    assert total > 2000 and report.dropped == 10 - len(kept)
    assert sorted(ingress.received()) == sorted(kept)
    assert h.metric("lightspeed_records_dropped_total", kind="feedback") == report.dropped


async def test_transcripts_in_shared_conversations_leave_no_empty_folders(harness: MakeHarness) -> None:
    h = await harness()
    user, conv = hash_user_id("u"), str(uuid.uuid4())
    for i in range(5):
        await h.storage.put(transcript(i, user=user, conversation=conv))
    assert (await h.collector.run_once()).records == 5
    assert tree_dirs(h.transcripts_root) == []


async def test_an_unreadable_token_file_is_a_loud_failure_that_keeps_the_data(
    harness: MakeHarness, ingress: Ingress, tmp_path: Path
) -> None:
    missing = tmp_path / "no-such-token"
    h = await harness(ingress_server_auth_token=None, ingress_server_auth_token_path=str(missing))
    await store_records(h.storage, 2, 0)

    report = await h.collector.run_once()

    assert report.failure is not None and str(missing) in report.failure.message
    assert h.collector.status.state == "no_credentials"
    assert ingress.emulator.attempts == [] and len(tree_files(h.feedback_root)) == 2
