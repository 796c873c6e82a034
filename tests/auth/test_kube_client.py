"""The Kubernetes API client against the TLS stand-in: each credential source, each call, each failure."""

from __future__ import annotations

import base64
import json
from pathlib import Path
from typing import Any

import pytest
import trustme

from lightspeed.kube import (
    KubeClient,
    KubeConfigError,
    KubeCredentials,
    KubeNotFound,
    KubeRejected,
    KubeUnavailable,
    KubeUser,
)
from tests.kube_api import DEFAULT_CLIENT_TOKEN, KubeApiStandIn


async def test_token_review_and_access_review_over_tls(kube_api: KubeApiStandIn) -> None:
    kube_api.add_user("alice-token", username="alice", uid="uid-1", groups=["devs"], extra={"scopes": ["user:full"]})
    kube_api.allow("group:devs")
    async with KubeClient(kube_api.credentials()) as client:
        review = await client.token_review("alice-token")
        assert review.authenticated
        assert review.user == KubeUser(
            username="alice", uid="uid-1", groups=("devs",), extra={"scopes": ("user:full",)}
        )
        assert await client.subject_access_review(review.user, path="/ls-access") is True
        assert await client.subject_access_review(review.user, path="/other") is False
        assert (await client.token_review("nobody")).authenticated is False
    sar = kube_api.calls[1]
    assert sar.client_token == DEFAULT_CLIENT_TOKEN
    assert sar.body["spec"] == {
        "user": "alice",
        "groups": ["devs"],
        "uid": "uid-1",
        "extra": {"scopes": ["user:full"]},
        "nonResourceAttributes": {"path": "/ls-access", "verb": "get"},
    }


async def test_cluster_id_and_pull_secret(kube_api: KubeApiStandIn) -> None:
    kube_api.set_pull_secret({"cloud.openshift.com": {"auth": "dG9rZW4=", "email": "x@example.com"}})
    async with KubeClient(kube_api.credentials()) as client:
        assert await client.cluster_id() == kube_api.cluster_id
        secret = await client.get_secret("openshift-config", "pull-secret")
        assert json.loads(secret[".dockerconfigjson"])["auths"]["cloud.openshift.com"]["auth"] == "dG9rZW4="
        with pytest.raises(KubeNotFound):
            await client.get_secret("openshift-config", "missing")
        kube_api.cluster_id = None
        with pytest.raises(KubeNotFound):
            await client.cluster_id()


async def test_in_cluster_credentials(kube_api: KubeApiStandIn, tmp_path: Path) -> None:
    env, sa_dir = kube_api.in_cluster(tmp_path)
    creds = KubeCredentials.in_cluster_config(env=env, service_account_dir=sa_dir)
    assert creds.in_cluster and creds.ca_file == str(sa_dir / "ca.crt")
    async with KubeClient(creds) as client:
        assert await client.cluster_id() == kube_api.cluster_id
    assert kube_api.calls[-1].client_token == DEFAULT_CLIENT_TOKEN
    with pytest.raises(KubeConfigError, match="not running in a cluster"):
        KubeCredentials.in_cluster_config(env={}, service_account_dir=sa_dir)


@pytest.mark.parametrize("embed_ca", [True, False])
async def test_kubeconfig_current_context(kube_api: KubeApiStandIn, tmp_path: Path, embed_ca: bool) -> None:
    path = kube_api.kubeconfig(tmp_path, embed_ca=embed_ca)
    creds = KubeCredentials.from_kubeconfig(env={"KUBECONFIG": f"{tmp_path / 'absent'}:{path}"})
    assert not creds.in_cluster
    async with KubeClient(creds) as client:
        assert await client.cluster_id() == kube_api.cluster_id


async def test_kubeconfig_client_certificate(tmp_path: Path) -> None:
    """A client certificate from kubeconfig data is loaded (the stand-in asks for none, so TLS still succeeds)."""
    ca = trustme.CA()
    leaf = ca.issue_cert("lightspeed")
    doc: dict[str, Any] = {
        "current-context": "c",
        "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
        "clusters": [{"name": "k", "cluster": {"server": "https://127.0.0.1:1"}}],
        "users": [
            {
                "name": "u",
                "user": {
                    "client-certificate-data": base64.b64encode(leaf.cert_chain_pems[0].bytes()).decode(),
                    "client-key-data": base64.b64encode(leaf.private_key_pem.bytes()).decode(),
                },
            }
        ],
    }
    (tmp_path / "kc").write_text(json.dumps(doc))
    creds = KubeCredentials.from_kubeconfig(tmp_path / "kc")
    KubeClient(creds)  # loads the certificate and key, or raises
    doc["users"][0]["user"]["client-key-data"] = base64.b64encode(b"not a key").decode()
    (tmp_path / "kc").write_text(json.dumps(doc))
    with pytest.raises(KubeConfigError, match="client certificate"):
        KubeClient(KubeCredentials.from_kubeconfig(tmp_path / "kc"))


@pytest.mark.parametrize(
    ("doc", "message"),
    [
        ({"contexts": []}, "no current-context"),
        ({"current-context": "x"}, "is not defined"),
        (
            {
                "current-context": "c",
                "contexts": [{"name": "c", "context": {"cluster": "k", "user": "u"}}],
                "clusters": [{"name": "k", "cluster": {"server": "https://h"}}],
                "users": [{"name": "u", "user": {"exec": {"command": "oc"}}}],
            },
            "exec or auth-provider",
        ),
    ],
)
def test_kubeconfig_problems_are_clear(tmp_path: Path, doc: dict[str, object], message: str) -> None:
    (tmp_path / "kc").write_text(json.dumps(doc))
    with pytest.raises(KubeConfigError, match=message):
        KubeCredentials.from_kubeconfig(tmp_path / "kc")


def test_discover_prefers_in_cluster_then_overrides(kube_api: KubeApiStandIn, tmp_path: Path) -> None:
    env, sa_dir = kube_api.in_cluster(tmp_path)
    creds = KubeCredentials.discover(server="https://api.example:6443", env=env, service_account_dir=sa_dir)
    assert creds.server == "https://api.example:6443" and creds.token_file == str(sa_dir / "token")
    with pytest.raises(KubeConfigError, match="no Kubernetes credentials"):
        KubeCredentials.discover(env={"HOME": str(tmp_path)}, service_account_dir=tmp_path / "none")


async def test_server_error_and_rate_limit_are_unavailable(kube_api: KubeApiStandIn) -> None:
    kube_api.fault = "error"
    async with KubeClient(kube_api.credentials()) as client:
        with pytest.raises(KubeUnavailable) as info:
            await client.token_review("t")
    assert info.value.status == 500
    assert "secret-looking" not in str(info.value)  # the API's own text is never repeated


async def test_a_hanging_api_is_unavailable_within_the_timeout(kube_api: KubeApiStandIn) -> None:
    kube_api.fault = "hang"
    async with KubeClient(kube_api.credentials(), timeout=0.3) as client:
        with pytest.raises(KubeUnavailable, match="did not answer"):
            await client.token_review("t")


async def test_our_credentials_rejected(kube_api: KubeApiStandIn) -> None:
    async with KubeClient(kube_api.credentials(token="wrong")) as client:
        with pytest.raises(KubeRejected) as info:
            await client.token_review("t")
    assert info.value.status == 401 and info.value.reason == "Unauthorized"
    kube_api.fault = "forbid"
    async with KubeClient(kube_api.credentials()) as client:
        with pytest.raises(KubeRejected) as info:
            await client.subject_access_review(KubeUser(username="a"), path="/ls-access")
    assert info.value.status == 403


async def test_untrusted_certificate_is_unavailable(kube_api: KubeApiStandIn, tmp_path: Path) -> None:
    other = trustme.CA()
    other.cert_pem.write_to_path(str(tmp_path / "other.crt"))
    creds = KubeCredentials(server=kube_api.url, token=DEFAULT_CLIENT_TOKEN, ca_file=str(tmp_path / "other.crt"))
    async with KubeClient(creds) as client:
        with pytest.raises(KubeUnavailable, match="TLS"):
            await client.token_review("t")
    insecure = KubeCredentials(server=kube_api.url, token=DEFAULT_CLIENT_TOKEN, verify=False)
    async with KubeClient(insecure) as client:
        assert (await client.token_review("t")).authenticated is False


async def test_unreachable_api_is_unavailable() -> None:
    async with KubeClient(KubeCredentials(server="https://127.0.0.1:9", token="t"), timeout=2) as client:
        with pytest.raises(KubeUnavailable, match="cannot reach"):
            await client.token_review("t")


async def test_token_file_is_reread(kube_api: KubeApiStandIn, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import lightspeed.kube.client

    env, sa_dir = kube_api.in_cluster(tmp_path)
    monkeypatch.setattr(lightspeed.kube.client, "TOKEN_FILE_REREAD_SECONDS", 0.0)
    async with KubeClient(KubeCredentials.in_cluster_config(env=env, service_account_dir=sa_dir)) as client:
        await client.token_review("t")
        (sa_dir / "token").write_text("rotated")
        kube_api.client_tokens.add("rotated")
        await client.token_review("t")
    assert [c.client_token for c in kube_api.calls] == [DEFAULT_CLIENT_TOKEN, "rotated"]
