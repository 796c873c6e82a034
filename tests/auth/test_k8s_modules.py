"""``k8s`` and ``trusted-proxy`` against the Kubernetes API stand-in (HTTPS, a CA made per test)."""

from __future__ import annotations

from typing import Any

import pytest

from lightspeed.auth.k8s import K8sAuth
from lightspeed.auth.trusted_proxy import TrustedProxyAuth
from lightspeed.state import auth_from
from tests.kube_api import KubeApiStandIn

UNAUTHORIZED = "Missing or invalid credentials provided by client"


def bearer(token: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {token}"}


@pytest.fixture
def cluster(in_cluster: KubeApiStandIn) -> KubeApiStandIn:
    in_cluster.add_user(
        "alice-token", username="alice", uid="0b1e6a3c-uid-alice", groups=["system:authenticated", "devs"]
    )
    in_cluster.add_user("bob-token", username="bob", uid="uid-bob", groups=["system:authenticated"])
    in_cluster.add_user("admin-token", username="kube:admin", groups=["system:cluster-admins"])
    in_cluster.allow("group:devs")
    in_cluster.allow("group:system:cluster-admins")
    return in_cluster


async def test_k8s_user_id_is_the_uid_and_access_needs_ls_access(cluster: KubeApiStandIn, make_client: Any) -> None:
    client = await make_client(authentication={"module": "k8s"})
    resp = await client.post("/authorized", headers=bearer("alice-token"))
    assert resp.status == 200
    assert await resp.json() == {"user_id": "0b1e6a3c-uid-alice", "username": "alice", "skip_userid_check": False}
    sar = next(c for c in cluster.calls if "subjectaccessreviews" in c.path)
    assert sar.body["spec"]["nonResourceAttributes"] == {"path": "/ls-access", "verb": "get"}
    assert sar.body["spec"]["user"] == "alice" and sar.body["spec"]["groups"] == ["system:authenticated", "devs"]

    resp = await client.post("/authorized", headers=bearer("bob-token"))  # valid token, no RBAC grant
    assert resp.status == 403
    assert await resp.json() == {
        "detail": {
            "response": "User does not have permission to access this endpoint",
            "cause": "User uid-bob is not authorized to access this endpoint.",
        }
    }
    resp = await client.post("/authorized", headers=bearer("stolen"))
    assert resp.status == 401
    assert await resp.json() == {"detail": {"response": UNAUTHORIZED, "cause": "Invalid or expired Kubernetes token"}}
    resp = await client.post("/authorized")
    assert resp.status == 401 and (await resp.json())["detail"]["cause"] == "No Authorization header found"


async def test_kube_admin_is_the_cluster_id(cluster: KubeApiStandIn, make_client: Any) -> None:
    client = await make_client(authentication={"module": "k8s"})
    for _ in range(2):
        resp = await client.post("/authorized", headers=bearer("admin-token"))
        assert resp.status == 200
        assert (await resp.json())["user_id"] == cluster.cluster_id
    assert cluster.calls_to("clusterversions") == 1  # read once


async def test_results_are_cached_by_token_hash(cluster: KubeApiStandIn, make_client: Any) -> None:
    client = await make_client(authentication={"module": "k8s", "k8s_cache_ttl_seconds": 60})
    for _ in range(5):
        assert (await client.get("/v1/info", headers=bearer("alice-token"))).status == 200
    assert cluster.calls_to("tokenreviews") == 1 and cluster.calls_to("subjectaccessreviews") == 1
    module = auth_from(client.app)
    assert isinstance(module, K8sAuth)
    assert len(module.cache) == 1
    assert all(b"alice-token" not in key for key in module.cache._entries)  # only the digest is kept
    module.cache.clear()
    assert (await client.get("/v1/info", headers=bearer("alice-token"))).status == 200
    assert cluster.calls_to("tokenreviews") == 2


async def test_no_cache_when_ttl_is_zero(cluster: KubeApiStandIn, make_client: Any) -> None:
    client = await make_client(authentication={"module": "k8s", "k8s_cache_ttl_seconds": 0})
    for _ in range(3):
        assert (await client.get("/v1/info", headers=bearer("alice-token"))).status == 200
    assert cluster.calls_to("tokenreviews") == 3


async def test_the_cache_is_bounded(cluster: KubeApiStandIn, make_client: Any) -> None:
    for i in range(5):
        cluster.add_user(f"t{i}", username=f"u{i}", uid=f"uid{i}", groups=["devs"])
    client = await make_client(authentication={"module": "k8s", "k8s_cache_max_entries": 3})
    for i in range(5):
        assert (await client.get("/v1/info", headers=bearer(f"t{i}"))).status == 200
    module = auth_from(client.app)
    assert isinstance(module, K8sAuth) and len(module.cache) == 3


@pytest.mark.parametrize("fault", ["error", "hang"])
async def test_an_unavailable_api_is_503_and_never_a_pass(
    cluster: KubeApiStandIn, make_client: Any, fault: str
) -> None:
    client = await make_client(authentication={"module": "k8s", "k8s_timeout_seconds": 0.3})
    cluster.fault = fault
    resp = await client.post("/v1/query", json={"query": "hi"}, headers=bearer("alice-token"))
    assert resp.status == 503
    body = await resp.json()
    assert body["detail"]["response"] == "Unable to connect to Kubernetes API"
    assert "secret-looking" not in str(body)
    cluster.fault = None  # a failure is not cached: the next request asks again
    assert (await client.get("/v1/info", headers=bearer("alice-token"))).status == 200


async def test_our_credentials_refused_is_500(cluster: KubeApiStandIn, make_client: Any) -> None:
    client = await make_client(authentication={"module": "k8s"})
    cluster.fault = "forbid"
    resp = await client.get("/v1/info", headers=bearer("alice-token"))
    assert resp.status == 500
    assert await resp.json() == {
        "detail": {"response": "Internal server error", "cause": "Kubernetes API request failed (status 403)"}
    }


async def test_health_probes_and_metrics_may_skip_authentication(cluster: KubeApiStandIn, make_client: Any) -> None:
    strict = await make_client(authentication={"module": "k8s"})
    for path in ("/liveness", "/readiness", "/metrics"):
        assert (await strict.get(path)).status == 401
    lenient = await make_client(
        authentication={"module": "k8s", "skip_for_health_probes": True, "skip_for_metrics": True},
        authorization={"access_rules": [{"role": "*", "actions": ["query"]}]},
    )
    for path in ("/liveness", "/readiness", "/metrics"):
        assert (await lenient.get(path)).status == 200, path
    assert (await lenient.get("/v1/info")).status == 401  # only the probes and /metrics
    assert cluster.calls == []


async def test_explicit_server_and_ca(
    kube_api: KubeApiStandIn, make_client: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """k8s_cluster_api and k8s_ca_cert_path replace what a kubeconfig says (its token is kept)."""
    kube_api.add_user("alice-token", username="alice", uid="uid-a", groups=["devs"])
    kube_api.allow("group:devs")
    kubeconfig = kube_api.kubeconfig(kube_api.workdir)
    text = kubeconfig.read_text().replace(kube_api.url, "https://127.0.0.1:1")
    kubeconfig.write_text(text)
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    monkeypatch.delenv("KUBERNETES_SERVICE_HOST", raising=False)
    client = await make_client(
        authentication={"module": "k8s", "k8s_cluster_api": kube_api.url, "k8s_ca_cert_path": str(kube_api.ca_path)}
    )
    resp = await client.post("/authorized", headers=bearer("alice-token"))
    assert resp.status == 200 and (await resp.json())["user_id"] == "uid-a"


# --------------------------------------------------------------------------- trusted-proxy


def proxy_auth(**extra: Any) -> dict[str, Any]:
    return {"module": "trusted-proxy", "trusted_proxy_config": extra}


@pytest.fixture
def proxies(in_cluster: KubeApiStandIn) -> KubeApiStandIn:
    in_cluster.add_user("gw-token", username="system:serviceaccount:gateway:proxy", uid="sa-gw")
    in_cluster.add_user("other-sa", username="system:serviceaccount:tenant:app", uid="sa-other")
    in_cluster.add_user("human", username="alice", uid="uid-alice")
    return in_cluster


async def test_trusted_proxy_forwards_the_user(proxies: KubeApiStandIn, make_client: Any) -> None:
    client = await make_client(authentication=proxy_auth())
    headers = {**bearer("gw-token"), "X-Forwarded-User": "carol@example.com"}
    resp = await client.post("/authorized", headers=headers)
    assert resp.status == 200
    assert await resp.json() == {
        "user_id": "carol@example.com",
        "username": "carol@example.com",
        "skip_userid_check": True,
    }
    assert (await client.post("/authorized", headers=headers)).status == 200
    assert proxies.calls_to("tokenreviews") == 1  # cached
    assert proxies.calls_to("subjectaccessreviews") == 0


async def test_trusted_proxy_refusals(proxies: KubeApiStandIn, make_client: Any) -> None:
    client = await make_client(
        authentication=proxy_auth(allowed_service_accounts=[{"namespace": "gateway", "name": "proxy"}])
    )
    user = {"X-Forwarded-User": "carol"}

    async def answer(headers: dict[str, str]) -> tuple[int, Any]:
        resp = await client.post("/authorized", headers=headers)
        return resp.status, (await resp.json())["detail"]

    assert await answer(user) == (401, {"response": UNAUTHORIZED, "cause": "Missing Authorization header"})
    assert await answer({**bearer("forged"), **user}) == (
        401,
        {"response": UNAUTHORIZED, "cause": "Invalid or expired proxy service account token"},
    )
    status, detail = await answer({**bearer("other-sa"), **user})
    assert (
        status == 403
        and detail["cause"] == "User system:serviceaccount:tenant:app is not authorized to access this endpoint."
    )
    assert await answer(bearer("gw-token")) == (
        401,
        {"response": UNAUTHORIZED, "cause": "Missing required header 'X-Forwarded-User'"},
    )
    # An empty allow-list accepts any service account, never a person's token.
    open_client = await make_client(authentication=proxy_auth(user_header="X-Remote-User"))
    assert (await open_client.post("/authorized", headers={**bearer("other-sa"), "X-Remote-User": "d"})).status == 200
    assert (await open_client.post("/authorized", headers={**bearer("human"), "X-Remote-User": "d"})).status == 403


async def test_trusted_proxy_api_unavailable_is_503(proxies: KubeApiStandIn, make_client: Any) -> None:
    client = await make_client(authentication={**proxy_auth(), "k8s_timeout_seconds": 0.3})
    proxies.fault = "hang"
    resp = await client.post("/authorized", headers={**bearer("gw-token"), "X-Forwarded-User": "carol"})
    assert resp.status == 503


async def test_module_objects(proxies: KubeApiStandIn, make_client: Any) -> None:
    client = await make_client(authentication=proxy_auth())
    assert isinstance(auth_from(client.app), TrustedProxyAuth)
