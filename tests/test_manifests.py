"""examples/kubernetes/: every file parses, every reference resolves, every embedded lightspeed
configuration passes ``lightspeed check-config``, the RBAC grants exactly the Kubernetes API calls
the code makes, and every metric the alerts and the dashboard use is one ``/metrics`` serves."""

from __future__ import annotations

import json
import re
import shlex
from collections import defaultdict
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestClient, TestServer

from lightspeed.cli import main as lightspeed_main
from lightspeed.config import Config, load_config
from tests.kube_api import KubeApiStandIn

ROOT = Path(__file__).resolve().parent.parent
EXAMPLES = ROOT / "examples" / "kubernetes"
NAMESPACE = "lightspeed"
#: Namespaces the examples use but do not create (OpenShift's own).
EXTERNAL_NAMESPACES = {"openshift-config"}
CLUSTER_SCOPED = {"Namespace", "ClusterRole", "ClusterRoleBinding"}
OUR_IMAGE = re.compile(r"(^|/)lightspeed/lightspeed:")
_ENV_REF = re.compile(r"\$\{env\.([A-Za-z_][A-Za-z0-9_]*)")


def manifests() -> list[tuple[Path, dict[str, Any]]]:
    docs: list[tuple[Path, dict[str, Any]]] = []
    for path in sorted(EXAMPLES.rglob("*.yaml")):
        for doc in yaml.safe_load_all(path.read_text()):
            if doc is not None:
                docs.append((path, doc))
    return docs


def objects() -> dict[tuple[str, str, str], dict[str, Any]]:
    out: dict[tuple[str, str, str], dict[str, Any]] = {}
    for path, doc in manifests():
        key = (doc["kind"], doc["metadata"].get("namespace", ""), doc["metadata"]["name"])
        assert key not in out, f"{path}: {key} defined twice"
        out[key] = doc
    return out


def pod_templates() -> Iterator[tuple[dict[str, Any], dict[str, Any]]]:
    """(workload, pod template) of every Deployment, StatefulSet and CronJob."""
    for doc in objects().values():
        if doc["kind"] in ("Deployment", "StatefulSet"):
            yield doc, doc["spec"]["template"]
        elif doc["kind"] == "CronJob":
            yield doc, doc["spec"]["jobTemplate"]["spec"]["template"]


def matches(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return all(labels.get(k) == v for k, v in selector.items())


def test_every_file_parses_and_every_object_is_complete() -> None:
    files = sorted(p for p in EXAMPLES.rglob("*") if p.is_file())
    assert {p.suffix for p in files} <= {".yaml", ".json"}, files
    json.loads((EXAMPLES / "monitoring" / "grafana-dashboard.json").read_text())
    docs = manifests()
    assert len(docs) >= 25
    for path, doc in docs:
        assert {"apiVersion", "kind", "metadata"} <= set(doc), path
        namespace = doc["metadata"].get("namespace")
        if doc["kind"] in CLUSTER_SCOPED:
            assert namespace is None, f"{path}: {doc['kind']} is cluster-scoped"
        else:
            assert namespace in {NAMESPACE} | EXTERNAL_NAMESPACES, f"{path}: {doc['kind']} in {namespace!r}"
    kinds = {doc["kind"] for _, doc in docs}
    wanted = {"Deployment", "Service", "ConfigMap", "Secret", "PersistentVolumeClaim", "CronJob", "ServiceMonitor"}
    assert wanted | {"PrometheusRule", "Role", "ClusterRole", "RoleBinding", "ClusterRoleBinding"} <= kinds


def test_every_reference_resolves() -> None:
    objs = objects()

    def has(kind: str, name: str, namespace: str = NAMESPACE) -> bool:
        return (kind, "" if kind in CLUSTER_SCOPED else namespace, name) in objs

    def secret_keys(name: str) -> set[str]:
        doc = objs[("Secret", NAMESPACE, name)]
        return set(doc.get("stringData", {})) | set(doc.get("data", {}))

    assert has("Namespace", NAMESPACE)
    templates = list(pod_templates())
    for workload, template in templates:
        where = f"{workload['kind']} {workload['metadata']['name']}"
        spec = template["spec"]
        labels = template["metadata"]["labels"]
        if workload["kind"] != "CronJob":
            assert matches(workload["spec"]["selector"]["matchLabels"], labels), where
        if "serviceAccountName" in spec:
            assert has("ServiceAccount", spec["serviceAccountName"]), where
        if workload["kind"] == "StatefulSet":
            assert has("Service", workload["spec"]["serviceName"]), where
        volumes = {v["name"]: v for v in spec.get("volumes", [])}
        claim_templates = {t["metadata"]["name"] for t in workload["spec"].get("volumeClaimTemplates", [])}
        for volume in volumes.values():
            if "configMap" in volume:
                assert has("ConfigMap", volume["configMap"]["name"]), where
            if "secret" in volume:
                assert has("Secret", volume["secret"]["secretName"]), where
            if "persistentVolumeClaim" in volume:
                assert has("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"]), where
        for affinity in (
            spec.get("affinity", {}).get("podAffinity", {}).get("requiredDuringSchedulingIgnoredDuringExecution", [])
        ):
            selector = affinity["labelSelector"]["matchLabels"]
            assert any(matches(selector, t["metadata"]["labels"]) for _, t in templates), where
        for container in spec["containers"]:
            ports = {p["name"] for p in container.get("ports", []) if "name" in p}
            for probe in ("livenessProbe", "readinessProbe"):
                port = container.get(probe, {}).get("httpGet", {}).get("port")
                if isinstance(port, str):
                    assert port in ports, f"{where}: {probe} port {port}"
            for mount in container.get("volumeMounts", []):
                assert mount["name"] in volumes or mount["name"] in claim_templates, f"{where}: {mount['name']}"
                volume = volumes.get(mount["name"], {})
                if "subPath" in mount and "configMap" in volume:
                    data = objs[("ConfigMap", NAMESPACE, volume["configMap"]["name"])]["data"]
                    assert mount["subPath"] in data, f"{where}: subPath {mount['subPath']}"
            for env in container.get("env", []):
                ref = env.get("valueFrom", {}).get("secretKeyRef")
                if ref:
                    assert ref["key"] in secret_keys(ref["name"]), f"{where}: {ref}"

    for (kind, namespace, name), doc in objs.items():
        if kind == "Service":
            selected = [t for _, t in templates if matches(doc["spec"]["selector"], t["metadata"]["labels"])]
            assert selected, f"Service {name} selects no pod"
            pod_ports = {p.get("name") for t in selected for c in t["spec"]["containers"] for p in c.get("ports", [])}
            for port in doc["spec"]["ports"]:
                target = port.get("targetPort")
                assert not isinstance(target, str) or target in pod_ports, f"Service {name}: {target}"
        if kind in ("RoleBinding", "ClusterRoleBinding"):
            ref = doc["roleRef"]
            assert has(ref["kind"], ref["name"], namespace), f"{kind} {name}: {ref}"
            for subject in doc["subjects"]:
                if subject["kind"] == "ServiceAccount":
                    assert has("ServiceAccount", subject["name"], subject["namespace"]), f"{kind} {name}"
        if kind == "PodDisruptionBudget":
            assert any(matches(doc["spec"]["selector"]["matchLabels"], t["metadata"]["labels"]) for _, t in templates)
        if kind == "ServiceMonitor":
            services = [
                d
                for (k, _, _), d in objs.items()
                if k == "Service" and matches(doc["spec"]["selector"]["matchLabels"], d["metadata"].get("labels", {}))
            ]
            assert len(services) >= 3, "the service, the sidecar and the PostgreSQL variant are scraped"
            for endpoint in doc["spec"]["endpoints"]:
                assert any(p["name"] == endpoint["port"] for s in services for p in s["spec"]["ports"]), endpoint


# --------------------------------------------------------------------------- embedded configurations


def lightspeed_configs() -> Iterator[tuple[str, str]]:
    """(where, YAML) of every lightspeed-stack.yaml in a ConfigMap."""
    for (kind, _, name), doc in objects().items():
        if kind == "ConfigMap":
            for key, text in doc["data"].items():
                if key.endswith("lightspeed-stack.yaml"):
                    yield f"{name}/{key}", text


def test_every_embedded_lightspeed_configuration_passes_check_config(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    configs = list(lightspeed_configs())
    assert len(configs) == 4  # the service, the CronJob, the PostgreSQL variant, and the upstream's own
    for where, text in configs:
        for name in _ENV_REF.findall(text):
            monkeypatch.setenv(name, "postgresql://u:p@127.0.0.1:9/db")
        path = tmp_path / where.replace("/", "-")
        path.write_text(text)
        code = lightspeed_main(["check-config", "-c", str(path)])
        out = capsys.readouterr()
        assert code == 0, f"{where}: {out.err}"


def test_the_exporter_sidecar_runs_on_its_configuration_and_arguments(tmp_path: Path) -> None:
    from lightspeed.exporter import parse_exporter_args

    objs = objects()
    deployment = objs[("Deployment", NAMESPACE, "lightspeed-stack")]
    [container] = [c for c in deployment["spec"]["template"]["spec"]["containers"] if OUR_IMAGE.search(c["image"])]
    assert container["command"] == ["lightspeed-exporter"]
    config_text = objs[("ConfigMap", NAMESPACE, "lightspeed-stack-config")]["data"]["exporter-config.yaml"]
    config = tmp_path / "config.yaml"
    config.write_text(config_text)
    args = [str(config) if a == "/etc/config/config.yaml" else a for a in container["args"]]
    args = [str(tmp_path) if a == "/tmp/data" else a for a in args]
    settings, _ = parse_exporter_args(args, env={})
    assert settings.mode == "openshift" and settings.metrics_port == 9090
    ports = {p["containerPort"] for p in container["ports"]}
    assert settings.metrics_port in ports
    # The service writes where the exporter reads.
    lcs = yaml.safe_load(objs[("ConfigMap", NAMESPACE, "lightspeed-stack-config")]["data"]["lightspeed-stack.yaml"])
    mounts = {
        m["name"]: m["mountPath"]
        for c in deployment["spec"]["template"]["spec"]["containers"]
        for m in c["volumeMounts"]
    }
    assert lcs["user_data_collection"]["feedback_storage"].startswith(mounts["data"])
    assert mounts["data"] == "/tmp/data"


# --------------------------------------------------------------------------- RBAC


#: The KubeClient methods that call the API; a new one must be added here, with its RBAC.
KUBE_CALLS = ("token_review", "subject_access_review", "cluster_version", "cluster_id", "get_secret")


def _code_calls() -> dict[str, set[str]]:
    """Which KubeClient methods each part of the code calls: ``openshift`` (the credential provider),
    ``k8s`` and ``trusted-proxy`` (the authentication modules)."""
    from lightspeed.kube import KubeClient

    public = {n for n in vars(KubeClient) if not n.startswith("_") and callable(getattr(KubeClient, n))}
    assert public - {"aclose", "server", "in_cluster"} <= set(KUBE_CALLS), "a new Kubernetes API call needs RBAC"
    parts = {
        "openshift": [ROOT / "lightspeed" / "collector" / "credentials" / "openshift.py"],
        "k8s": [ROOT / "lightspeed" / "auth" / "k8s.py"],
        "trusted-proxy": [ROOT / "lightspeed" / "auth" / "trusted_proxy.py"],
    }
    out: dict[str, set[str]] = {}
    for part, files in parts.items():
        text = "".join(f.read_text() for f in files if f.exists())
        out[part] = {m for m in KUBE_CALLS if re.search(rf"\.{m}\(", text)}
    assert out["openshift"] == {"get_secret", "cluster_id"}
    return out


def _attributes(method: str, path: str) -> tuple[str, str, str, str, str]:
    """(namespace, apiGroup, resource, name, verb) of one request, as RBAC sees it."""
    parts = path.strip("/").split("/")
    group = "" if parts[0] == "api" else parts[1]
    rest = parts[2:] if parts[0] == "api" else parts[3:]
    namespace = ""
    if rest and rest[0] == "namespaces" and len(rest) > 2:
        namespace, rest = rest[1], rest[2:]
    resource, name = rest[0], rest[1] if len(rest) > 1 else ""
    verb = {"GET": "get" if name else "list", "POST": "create"}[method]
    return namespace, group, resource, name, verb


async def _recorded(api: KubeApiStandIn, methods: set[str]) -> set[tuple[str, str, str, str, str]]:
    from lightspeed.kube import KubeClient, KubeUser

    api.calls.clear()
    api.set_pull_secret({"cloud.openshift.com": {"auth": "t"}})
    client = KubeClient(api.credentials())
    try:
        for method in sorted(methods):
            if method == "token_review":
                await client.token_review("someone's-token")
            elif method == "subject_access_review":
                await client.subject_access_review(KubeUser(username="u"), path="/ls-access")
            elif method in ("cluster_version", "cluster_id"):
                await getattr(client, method)()
            elif method == "get_secret":
                await client.get_secret("openshift-config", "pull-secret")
    finally:
        await client.aclose()
    return {_attributes(c.method, c.path) for c in api.calls}


def _needs(workload_template: dict[str, Any], objs: dict[tuple[str, str, str], dict[str, Any]]) -> set[str]:
    """Which parts of the code (openshift, k8s, trusted-proxy) a pod's lightspeed containers run."""
    parts: set[str] = set()
    volumes = {v["name"]: v for v in workload_template["spec"].get("volumes", [])}
    for container in workload_template["spec"]["containers"]:
        if not OUR_IMAGE.search(container["image"]):
            continue
        args = container.get("command", []) + container.get("args", [])
        if args and args[0] == "lightspeed-exporter":
            mode = args[args.index("--mode") + 1] if "--mode" in args else "manual"
            parts |= {mode} & {"openshift"}
            continue
        config_path = args[args.index("-c") + 1]
        mount = next(m for m in container["volumeMounts"] if config_path.startswith(m["mountPath"]))
        cm = objs[("ConfigMap", NAMESPACE, volumes[mount["name"]]["configMap"]["name"])]
        text = cm["data"][Path(config_path).name]
        data = yaml.safe_load(_ENV_REF.sub("${env.X", text))
        module = data.get("authentication", {}).get("module", "noop")
        parts |= {module} & {"k8s", "trusted-proxy"}
        dc = data["user_data_collection"].get("data_collector", {})
        collects = dc.get("enabled") or args[0] == "collect"
        if collects and dc.get("auth", {}).get("mode") == "openshift":
            parts.add("openshift")
    return parts


def _granted(objs: dict[tuple[str, str, str], dict[str, Any]]) -> dict[str, list[tuple[str, dict[str, Any]]]]:
    """Service account -> [(namespace the rule applies in, "" for everywhere; the rule)]."""
    out: dict[str, list[tuple[str, dict[str, Any]]]] = defaultdict(list)
    for (kind, namespace, _), binding in objs.items():
        if kind not in ("RoleBinding", "ClusterRoleBinding"):
            continue
        ref = binding["roleRef"]
        role = objs[(ref["kind"], namespace if ref["kind"] == "Role" else "", ref["name"])]
        for subject in binding["subjects"]:
            if subject["kind"] != "ServiceAccount":
                continue  # users and groups: who may call the service (lightspeed-users)
            for rule in role["rules"]:
                out[subject["name"]].append((namespace if kind == "RoleBinding" else "", rule))
    return out


def _covers(scope: str, rule: dict[str, Any], call: tuple[str, str, str, str, str]) -> bool:
    namespace, group, resource, name, verb = call
    return (
        (scope == "" or scope == namespace)
        and group in rule.get("apiGroups", [])
        and resource in rule.get("resources", [])
        and verb in rule["verbs"]
        and (not rule.get("resourceNames") or name in rule["resourceNames"])
    )


async def test_rbac_grants_exactly_the_kubernetes_api_calls_the_code_makes(kube_api: KubeApiStandIn) -> None:
    objs = objects()
    code = _code_calls()
    calls = {part: await _recorded(kube_api, methods) for part, methods in code.items()}
    needed: dict[str, set[tuple[str, str, str, str, str]]] = defaultdict(set)
    for _, template in pod_templates():
        account = template["spec"].get("serviceAccountName", "default")
        for part in _needs(template, objs):
            needed[account] |= calls[part]
    assert needed["lightspeed"] >= calls["openshift"] | calls["k8s"]
    assert needed["lightspeed-exporter"] == calls["openshift"] == needed["lightspeed-collect"]

    granted = _granted(objs)
    assert set(granted) == set(needed), "a service account is granted something its pods never call"
    for account, rules in granted.items():
        for call in needed[account]:
            assert any(_covers(scope, rule, call) for scope, rule in rules), f"{account} lacks {call}"
        for scope, rule in rules:
            assert "*" not in json.dumps(rule), f"{account}: wildcard in {rule}"
            used = [c for c in needed[account] if _covers(scope, rule, c)]
            assert used, f"{account}: {rule} is granted but never used"
            assert set(rule["verbs"]) == {c[4] for c in used}, f"{account}: verbs beyond the calls in {rule}"
            if rule.get("resourceNames"):
                assert set(rule["resourceNames"]) == {c[3] for c in used}, rule
            else:  # only calls that name no object (creates) may go without resourceNames
                assert all(not c[3] for c in used), f"{account}: {rule} should name its objects"


# --------------------------------------------------------------------------- metrics


def _used_metrics() -> set[str]:
    texts: list[str] = []
    rules = objects()[("PrometheusRule", NAMESPACE, "lightspeed")]
    texts += [r["expr"] for g in rules["spec"]["groups"] for r in g["rules"]]
    dashboard = json.loads((EXAMPLES / "monitoring" / "grafana-dashboard.json").read_text())
    texts += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    texts += [v.get("query", "") for v in dashboard["templating"]["list"]]
    return {m for t in texts for m in re.findall(r"\b((?:lightspeed|ls)_[a-z_]+)\b", t)}


def _served(text: str) -> set[str]:
    served: set[str] = set()
    for kind_line in re.findall(r"^# TYPE (\S+) (\S+)$", text, re.M):
        name, kind = kind_line
        served.add(f"{name}_total" if kind == "counter" and not name.endswith("_total") else name)
    return served


async def test_every_metric_the_alerts_and_the_dashboard_use_is_served(tmp_path: Path) -> None:
    from lightspeed import create_app

    used = _used_metrics()
    alerts = {
        r["alert"] for g in objects()[("PrometheusRule", NAMESPACE, "lightspeed")]["spec"]["groups"] for r in g["rules"]
    }
    assert alerts == {
        "LightspeedNoSuccessfulUpload",
        "LightspeedPendingBytesGrowing",
        "LightspeedUploadsRejected",
        "LightspeedCredentialsFailing",
        "LightspeedStorageUnavailable",
    }
    config_text = dict(lightspeed_configs())["lightspeed-config/lightspeed-stack.yaml"]
    data = yaml.safe_load(config_text)
    data["authentication"] = {"module": "noop"}
    data["llm_providers"] = [{"name": "openai", "type": "echo", "models": ["gpt-4o-mini"]}]
    udc = data["user_data_collection"]
    udc.update(feedback_storage=str(tmp_path / "f"), transcripts_storage=str(tmp_path / "t"))
    udc["storage"]["options"]["state_path"] = str(tmp_path / "s")
    udc["data_collector"].update(ingress_server_url="http://127.0.0.1:9/upload", auth={"mode": "manual"})
    udc["data_collector"]["ingress_server_auth_token"] = "t"
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(data))
    config: Config = load_config(path)
    client = TestClient(TestServer(create_app(config), host="127.0.0.1"))
    await client.start_server()
    try:
        text = await (await client.get("/metrics")).text()
    finally:
        await client.close()
    missing = used - _served(text)
    assert not missing, f"used by alerts or the dashboard but not served: {sorted(missing)}"
    assert len(used) >= 10


def test_the_sidecar_arguments_are_the_upstream_examples() -> None:
    """The upstream example's arguments (--mode openshift --config ... --log-level INFO --data-dir ...) are kept."""
    deployment = objects()[("Deployment", NAMESPACE, "lightspeed-stack")]
    [container] = [
        c for c in deployment["spec"]["template"]["spec"]["containers"] if c["name"] == "lightspeed-exporter"
    ]
    line = shlex.join(container["args"])
    assert line == "--mode openshift --config /etc/config/config.yaml --log-level INFO --data-dir /tmp/data"
