"""``openshift`` mode end to end: the pull secret and cluster id from the Kubernetes API stand-in
(TLS, a CA made per test), uploads to the local ingress, rotation, 401, and an API that is down."""

from __future__ import annotations

import asyncio
import json
import logging
from pathlib import Path
from typing import Any

import pytest

from lightspeed.collector import Collector, IngressClient, UploadOutcome
from lightspeed.collector.credentials import CredentialsError, OpenShiftProvider
from lightspeed.kube import KubeClient
from tests.collector.collector_support import Harness, Ingress, MakeHarness, store_records, tree_files
from tests.kube_api import KubeApiStandIn

CLUSTER = "5c1f7f2e-0000-4b8e-9d6a-c1a55e7e1d00"


def pull_secret(api: KubeApiStandIn, token: str) -> None:
    api.set_pull_secret(
        {
            "cloud.openshift.com": {"auth": token, "email": "ops@example.com"},
            "quay.io": {"auth": "unrelated-registry-token"},
        }
    )


async def openshift(
    harness: MakeHarness, api: KubeApiStandIn, tmp_path: Path, **auth: object
) -> tuple[Harness, OpenShiftProvider]:
    kubeconfig = api.kubeconfig(tmp_path)
    h = await harness(
        ingress_server_auth_token=None,
        auth={"mode": "openshift", "kubeconfig": str(kubeconfig), "timeout_seconds": 1, **auth},
    )
    dc = h.config.user_data_collection.data_collector
    provider = OpenShiftProvider(config=dc, metrics=h.metrics.collector)
    h.collector = Collector(
        storage=h.storage,
        collection=h.config.user_data_collection,
        uploader=IngressClient(session=h.session, config=dc, credentials=provider),
        metrics=h.metrics.collector,
    )
    return h, provider


async def test_pull_secret_is_the_token_and_cluster_id_the_identity(
    harness: MakeHarness, ingress: Ingress, kube_api: KubeApiStandIn, tmp_path: Path
) -> None:
    pull_secret(kube_api, "pull-token-1")
    ingress.emulator.token = "pull-token-1"
    h, provider = await openshift(harness, kube_api, tmp_path)
    stored = await store_records(h.storage, 3, 2)
    try:
        report = await h.collector.run_once()
    finally:
        await provider.aclose()
    assert report.ok and report.records == 5
    assert ingress.received() == {name: [data] for name, data in stored.items()}
    [upload] = ingress.emulator.uploads
    assert upload["user_agent"] == f"openshift-lightspeed-operator/user-data-collection cluster/{CLUSTER}"
    paths = [c.path for c in kube_api.calls]
    assert paths == [
        "/api/v1/namespaces/openshift-config/secrets/pull-secret",
        "/apis/config.openshift.io/v1/clusterversions/version",
    ]
    assert h.metric("lightspeed_credentials_available", mode="openshift") == 1


async def test_a_rotated_pull_secret_is_used_by_the_next_upload_after_the_interval(
    harness: MakeHarness, ingress: Ingress, kube_api: KubeApiStandIn, tmp_path: Path
) -> None:
    pull_secret(kube_api, "pull-token-1")
    ingress.emulator.token = "pull-token-1"
    h, provider = await openshift(harness, kube_api, tmp_path, refresh_seconds=0.2)
    try:
        await store_records(h.storage, 1, 0)
        assert (await h.collector.run_once()).ok
        pull_secret(kube_api, "pull-token-2")  # rotated in the cluster; the ingress takes only the new one
        ingress.emulator.token = "pull-token-2"
        await asyncio.sleep(0.25)
        await store_records(h.storage, 1, 0)
        report = await h.collector.run_once()
    finally:
        await provider.aclose()
    assert report.ok and report.records == 1
    assert [a["status"] for a in ingress.emulator.attempts] == [202, 202]  # never refused: re-read on schedule
    assert kube_api.calls_to("pull-secret") == 2


async def test_a_401_from_the_ingress_rereads_the_pull_secret_and_retries_at_once(
    harness: MakeHarness, ingress: Ingress, kube_api: KubeApiStandIn, tmp_path: Path
) -> None:
    pull_secret(kube_api, "pull-token-1")
    ingress.emulator.token = "pull-token-1"
    h, provider = await openshift(harness, kube_api, tmp_path)  # refresh_seconds: an hour
    try:
        await store_records(h.storage, 1, 0)
        assert (await h.collector.run_once()).ok
        pull_secret(kube_api, "pull-token-2")
        ingress.emulator.token = "pull-token-2"
        stored = await store_records(h.storage, 2, 1)
        report = await h.collector.run_once()
    finally:
        await provider.aclose()
    assert report.ok and report.records == 3
    assert [a["status"] for a in ingress.emulator.attempts] == [202, 401, 202]
    assert kube_api.calls_to("pull-secret") == 2
    received = ingress.received()
    assert all(received[name] == [data] for name, data in stored.items())
    assert tree_files(h.feedback_root) == [] and tree_files(h.transcripts_root) == []


async def test_a_refused_token_that_is_still_in_the_secret_keeps_the_records(
    harness: MakeHarness, ingress: Ingress, kube_api: KubeApiStandIn, tmp_path: Path
) -> None:
    pull_secret(kube_api, "pull-token-1")
    ingress.emulator.token = "some-other-token"
    h, provider = await openshift(harness, kube_api, tmp_path)
    try:
        await store_records(h.storage, 2, 0)
        report = await h.collector.run_once()
    finally:
        await provider.aclose()
    assert report.failure is not None and report.failure.outcome is UploadOutcome.REJECTED
    assert [a["status"] for a in ingress.emulator.attempts] == [401]  # same token after the re-read: no retry
    assert kube_api.calls_to("pull-secret") == 2
    assert len(tree_files(h.feedback_root)) == 2


@pytest.mark.parametrize("fault", ["error", "hang"])
async def test_an_api_that_is_down_keeps_records_pending_and_says_so(
    harness: MakeHarness,
    ingress: Ingress,
    kube_api: KubeApiStandIn,
    tmp_path: Path,
    fault: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    pull_secret(kube_api, "pull-token-1")
    kube_api.fault = fault
    h, provider = await openshift(harness, kube_api, tmp_path, timeout_seconds=0.3)
    await store_records(h.storage, 2, 1)
    try:
        report = await h.collector.run_once()
    finally:
        await provider.aclose()
    assert report.failure is not None and report.failure.outcome is UploadOutcome.NO_CREDENTIALS
    expected = "answered 500" if fault == "error" else "did not answer within"
    assert expected in report.failure.message
    assert ingress.emulator.attempts == []  # no upload without credentials
    assert len(tree_files(h.feedback_root)) == 2 and len(tree_files(h.transcripts_root)) == 1
    assert report.remaining == 3
    status = provider.status.to_dict()
    assert status["status"] == "failing" and expected in status["last_error"]
    assert h.metric("lightspeed_credentials_available", mode="openshift") == 0
    assert h.metric("lightspeed_credentials_refreshes_total", mode="openshift", outcome="failure") >= 1
    assert any(r.levelno == logging.ERROR and "openshift credentials" in r.getMessage() for r in caplog.records)
    assert "secret-looking" not in caplog.text  # the API's own text stays out

    kube_api.fault = None  # the API is back: the next cycle ships everything
    h2, provider2 = await openshift(harness, kube_api, tmp_path)
    ingress.emulator.token = "pull-token-1"
    try:
        assert (await h2.collector.run_once()).records == 3
    finally:
        await provider2.aclose()


async def test_missing_permissions_name_the_rbac_to_grant(kube_api: KubeApiStandIn, tmp_path: Path) -> None:
    from tests.collector.test_credentials import collector_config

    kube_api.fault = "forbid"
    kube = KubeClient(kube_api.credentials())
    provider = OpenShiftProvider(config=collector_config({"mode": "openshift"}), kube=kube)
    try:
        with pytest.raises(CredentialsError) as info:
            await provider.get()
    finally:
        await kube.aclose()
    assert "403" in str(info.value) and "secrets/pull-secret in openshift-config" in str(info.value)
    assert "clusterversions.config.openshift.io" in str(info.value)


async def test_a_pull_secret_without_the_cloud_entry_is_explained(kube_api: KubeApiStandIn, tmp_path: Path) -> None:
    from tests.collector.test_credentials import collector_config

    kube_api.set_pull_secret({"quay.io": {"auth": "x"}})
    kube = KubeClient(kube_api.credentials())
    provider = OpenShiftProvider(config=collector_config({"mode": "openshift"}), kube=kube)
    try:
        with pytest.raises(CredentialsError, match=r"has no auths\['cloud.openshift.com'\].auth"):
            await provider.get()
    finally:
        await kube.aclose()


async def test_no_kubernetes_credentials_at_all_is_a_reported_failure(tmp_path: Path) -> None:
    from tests.collector.test_credentials import collector_config

    provider = OpenShiftProvider(
        config=collector_config({"mode": "openshift", "kubeconfig": str(tmp_path / "no-such-kubeconfig")})
    )
    with pytest.raises(CredentialsError, match="no Kubernetes API credentials"):
        await provider.get()
    assert provider.status.state == "failing"


async def test_the_service_stays_ready_and_reports_missing_credentials(
    kube_api: KubeApiStandIn, ingress: Ingress, tmp_path: Path
) -> None:
    from aiohttp.test_utils import TestClient, TestServer

    from lightspeed import create_app
    from lightspeed.config import parse_config

    kube_api.fault = "error"
    udc = {
        "feedback_enabled": True,
        "feedback_storage": str(tmp_path / "feedback"),
        "transcripts_enabled": True,
        "transcripts_storage": str(tmp_path / "transcripts"),
        "data_collector": {
            "enabled": True,
            "ingress_server_url": ingress.url,
            "ingress_content_service_name": "lightspeed-test",
            "retry_base_seconds": 60,
            "auth": {"mode": "openshift", "kubeconfig": str(kube_api.kubeconfig(tmp_path)), "timeout_seconds": 1},
        },
    }
    config = parse_config({"user_data_collection": udc}, env={})
    client = TestClient(TestServer(create_app(config), host="127.0.0.1"))
    await client.start_server()
    try:
        body: dict[str, Any] = {}
        for _ in range(100):  # the first cycle runs at start
            body = await (await client.get("/readiness")).json()
            if body.get("data_collector", {}).get("status") == "no_credentials":
                break
            await asyncio.sleep(0.05)
        response = await client.get("/readiness")
        body = await response.json()
        assert response.status == 200 and body["ready"] is True  # the API still works
        assert body["data_collector"]["status"] == "no_credentials"
        assert body["data_collector"]["credentials"]["status"] == "failing"
        [check] = body["checks"]
        assert check["component"] == "data_collector" and check["status"] == "degraded"
        assert "openshift" in check["reason"] and "records stay pending" in check["reason"]
        assert body["impacts"] == [check["reason"]]
        assert "secret-looking" not in json.dumps(body)
        metrics = await (await client.get("/metrics")).text()
        assert 'lightspeed_credentials_available{mode="openshift"} 0.0' in metrics
        assert ingress.emulator.attempts == []
    finally:
        await client.close()
