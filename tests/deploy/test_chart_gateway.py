"""The chart's gateway (templates/gateway.yaml and its NetworkPolicy): its objects render and
validate, its probes, flags and environment reach the gateway's own config code, several replicas
keep each client on one pod, the Ingress follows its values, and the NetworkPolicies let the
gateway reach the scheduler and nothing else.

The NetworkPolicies are judged by `connects`, which evaluates them as Kubernetes does for pod to
pod traffic: a pod selected by a policy of a direction is isolated in that direction and admits
only what one of the rules of those policies allows (ports by name or number, peers by pod and
namespace selectors). ipBlock peers match no pod (they are for addresses outside the cluster).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import jsonschema
import pytest
import yaml
from helm_python.chart import Chart
from helm_python.errors import HelmRenderError

from treadle_gateway.config import GatewayConfig
from treadle_runtime.config import load_config

from .conftest import CHART, of_kind, render, validate

NAMESPACE = "training"
GATEWAY = "ml-treadle-gateway"
BEHIND_INGRESS = yaml.safe_load((CHART / "ci" / "gateway-ingress-values.yaml").read_text())
INGRESS = {"enabled": True, "host": "tinker.example.com"}


def gateway_objects(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The gateway's own objects by kind; its metrics Service as `MetricsService`."""
    found = {}
    for doc in docs:
        name, kind = doc["metadata"]["name"], doc["kind"]
        if name == f"{GATEWAY}-metrics":
            found["MetricsService"] = doc
        elif name == GATEWAY and kind != "NetworkPolicy":
            found[kind] = doc
    return found


def container(docs: list[dict[str, Any]]) -> dict[str, Any]:
    (deployment,) = [d for d in of_kind(docs, "Deployment") if d["metadata"]["name"] == GATEWAY]
    (gateway,) = deployment["spec"]["template"]["spec"]["containers"]
    return dict(gateway)


def gateway_config(docs: list[dict[str, Any]]) -> GatewayConfig:
    """The gateway's config as the gateway loads it from the container's flags and env."""
    gateway = container(docs)
    env = {e["name"]: e["value"] for e in gateway["env"]}
    return load_config(GatewayConfig, gateway["args"], env, service="gateway")


def notes(chart: Chart, values: dict[str, Any]) -> str:
    files = chart.render(values, name="ml", namespace=NAMESPACE, is_install=True)
    return str(files["treadle/templates/NOTES.txt"])


# ---------------------------------------------------------------------- NetworkPolicy evaluation
@dataclass
class Pod:
    """A pod as NetworkPolicies see it: namespace, labels and named container ports."""

    name: str
    namespace: str
    labels: dict[str, str]
    ports: list[dict[str, Any]] = field(default_factory=list)


def release_pods(docs: list[dict[str, Any]]) -> dict[str, Pod]:
    """Every pod the release runs, by its workload's name."""
    return {
        d["metadata"]["name"]: Pod(
            d["metadata"]["name"],
            NAMESPACE,
            d["spec"]["template"]["metadata"]["labels"],
            [
                {"protocol": "TCP", **port}
                for c in d["spec"]["template"]["spec"]["containers"]
                for port in c.get("ports", [])
            ],
        )
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    }


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) <= {"matchLabels"}, f"unsupported selector {selector}"
    return selector.get("matchLabels", {}).items() <= labels.items()


def _peer_matches(peer: dict[str, Any], policy_namespace: str, pod: Pod) -> bool:
    if "ipBlock" in peer:
        return False
    if "namespaceSelector" in peer:
        namespace_labels = {"kubernetes.io/metadata.name": pod.namespace}
        if not _selects(peer["namespaceSelector"], namespace_labels):
            return False
    elif pod.namespace != policy_namespace:
        return False
    return _selects(peer.get("podSelector", {}), pod.labels)


def _port_matches(rule: dict[str, Any], port: dict[str, Any]) -> bool:
    if not rule.get("ports"):
        return True
    return any(
        p.get("protocol", "TCP") == port["protocol"]
        and p["port"] in (port.get("name"), port["containerPort"])
        for p in rule["ports"]
    )


def _admits(
    policies: list[dict[str, Any]], direction: str, pod: Pod, peer: Pod, port: dict[str, Any]
) -> bool:
    """Whether `pod`'s policies of `direction` (Ingress or Egress) let traffic to `port` pass
    between it and `peer`."""
    selecting = [
        p
        for p in policies
        if p["metadata"]["namespace"] == pod.namespace
        and _selects(p["spec"]["podSelector"], pod.labels)
        and direction in p["spec"]["policyTypes"]
    ]
    if not selecting:
        return True
    side = "from" if direction == "Ingress" else "to"
    return any(
        _port_matches(rule, port)
        and (
            not rule.get(side)
            or any(_peer_matches(x, policy["metadata"]["namespace"], peer) for x in rule[side])
        )
        for policy in selecting
        for rule in policy["spec"].get(direction.lower(), [])
    )


def connects(policies: list[dict[str, Any]], source: Pod, target: Pod, port_name: str) -> bool:
    """Whether `source` may open a connection to `target`'s port called `port_name`."""
    (port,) = [p for p in target.ports if p.get("name") == port_name]
    return _admits(policies, "Egress", source, target, port) and _admits(
        policies, "Ingress", target, source, port
    )


KUBE_DNS = Pod(
    "coredns",
    "kube-system",
    {"k8s-app": "kube-dns"},
    [
        {"name": "dns", "containerPort": 53, "protocol": "UDP"},
        {"name": "dns-tcp", "containerPort": 53, "protocol": "TCP"},
    ],
)
INGRESS_CONTROLLER = Pod(
    "ingress-nginx-controller",
    "ingress-nginx",
    {"app.kubernetes.io/name": "ingress-nginx"},
    [{"name": "https", "containerPort": 443, "protocol": "TCP"}],
)
CLIENT = Pod("notebook", "research", {"app": "notebook"}, [])
WEB = Pod(
    "web", "research", {"app": "web"}, [{"name": "http", "containerPort": 80, "protocol": "TCP"}]
)


# ---------------------------------------------------------------------- the objects
@pytest.mark.parametrize(
    "values",
    [
        {},
        BEHIND_INGRESS,
        {"gateway": {"replicas": 2, "service": {"type": "LoadBalancer"}}},
        {"gateway": {"ingress": INGRESS}, "monitoring": {"serviceMonitor": {"enabled": True}}},
    ],
    ids=["default", "behind-ingress", "load-balancer", "ingress-without-tls"],
)
def test_gateway_objects_render_and_validate(chart: Chart, values: dict[str, Any]) -> None:
    docs = render(chart, values)
    objects = gateway_objects(docs)
    assert {"Deployment", "Service", "MetricsService", "PodDisruptionBudget"} <= set(objects)
    assert ("Ingress" in objects) == bool(values.get("gateway", {}).get("ingress"))
    policies = [p for p in of_kind(docs, "NetworkPolicy") if p["metadata"]["name"] == GATEWAY]
    for doc in [*objects.values(), *policies]:
        try:
            validate(doc)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{doc['kind']}/{doc['metadata']['name']}: {exc.path}: {exc.message}")
    selector = objects["Deployment"]["spec"]["selector"]["matchLabels"]
    for service in ("Service", "MetricsService"):
        assert objects[service]["spec"]["selector"] == selector


def test_probes_ports_and_flags(chart: Chart) -> None:
    docs = render(chart, {})
    gateway = container(docs)
    assert gateway["image"] == "ghcr.io/treadle/treadle-gateway:0.1.0"
    ports = {p["name"]: p["containerPort"] for p in gateway["ports"]}
    assert ports == {"http": 8480, "metrics": 9400}
    for probe in ("readinessProbe", "livenessProbe"):
        assert gateway[probe]["httpGet"] == {"path": "/api/v1/healthz", "port": "http"}, probe
    (scheduler,) = [
        s for s in of_kind(docs, "Service") if s["metadata"]["name"].endswith("-scheduler")
    ]
    (grpc,) = scheduler["spec"]["ports"]
    config = gateway_config(docs)
    assert config.scheduler == f"{scheduler['metadata']['name']}:{grpc['port']}"
    assert (config.host, config.port, config.metrics_port) == ("0.0.0.0", 8480, 9400)
    assert config.public_url == ""  # without an Ingress: the request's own URL


def test_config_map_becomes_the_gateways_environment(chart: Chart) -> None:
    values = {
        "gateway": {
            "port": 9480,
            "config": {
                "long_poll_seconds": 20,
                "max_body_bytes": 16777216,
                "session_polling": False,
                "log_level": "debug",
            },
            "extraEnv": [{"name": "TZ", "value": "UTC"}],
        }
    }
    docs = render(chart, values)
    env = {e["name"]: e["value"] for e in container(docs)["env"]}
    assert env["TREADLE_GATEWAY_LONG_POLL_SECONDS"] == "20"
    assert env["TREADLE_GATEWAY_MAX_BODY_BYTES"] == "16777216"  # no exponent notation
    assert env["TZ"] == "UTC"
    config = gateway_config(docs)
    assert config.long_poll_seconds == 20.0 and config.max_body_bytes == 16777216
    assert config.session_polling is False and config.log_level == "debug"
    # get_info names tokenizers by their public ids: the trainers' folders are not in this pod
    assert config.local_tokenizers is False
    assert config.port == 9480
    (service,) = [s for s in of_kind(docs, "Service") if s["metadata"]["name"] == GATEWAY]
    assert service["spec"]["ports"][0]["port"] == 9480


def test_local_tokenizers_can_be_turned_back_on(chart: Chart) -> None:
    docs = render(chart, {"gateway": {"config": {"local_tokenizers": True}}})
    names = [e["name"] for e in container(docs)["env"]]
    assert names.count("TREADLE_GATEWAY_LOCAL_TOKENIZERS") == 1
    assert gateway_config(docs).local_tokenizers is True


# ---------------------------------------------------------------------- replicas and affinity
@pytest.mark.parametrize(
    ("gateway", "affinity"),
    [
        ({}, "None"),
        ({"replicas": 3}, "ClientIP"),
        ({"replicas": 1, "service": {"sessionAffinity": "ClientIP"}}, "ClientIP"),
        ({"replicas": 3, "service": {"sessionAffinity": "None"}}, "None"),
    ],
)
def test_several_replicas_keep_each_client_on_one_pod(
    chart: Chart, gateway: dict[str, Any], affinity: str
) -> None:
    objects = gateway_objects(render(chart, {"gateway": gateway}))
    assert objects["Deployment"]["spec"]["replicas"] == gateway.get("replicas", 1)
    spec = objects["Service"]["spec"]
    assert spec["sessionAffinity"] == affinity
    if affinity == "ClientIP":
        assert spec["sessionAffinityConfig"] == {"clientIP": {"timeoutSeconds": 10800}}
    else:
        assert "sessionAffinityConfig" not in spec


def test_ingress_hashes_on_the_api_key_by_default(chart: Chart) -> None:
    values = {"gateway": {"replicas": 2, "ingress": INGRESS}}
    (ingress,) = of_kind(render(chart, values), "Ingress")
    annotations = ingress["metadata"]["annotations"]
    assert annotations["nginx.ingress.kubernetes.io/upstream-hash-by"] == "$http_x_api_key"
    assert annotations["nginx.ingress.kubernetes.io/proxy-body-size"] == "64m"
    dropped = {"nginx.ingress.kubernetes.io/proxy-body-size": None, "example.com/team": "ml"}
    values["gateway"]["ingress"] = {**INGRESS, "annotations": dropped}
    (ingress,) = of_kind(render(chart, values), "Ingress")
    assert ingress["metadata"]["annotations"] == {
        "nginx.ingress.kubernetes.io/upstream-hash-by": "$http_x_api_key",
        "example.com/team": "ml",
    }


# ---------------------------------------------------------------------- ingress
def test_no_ingress_unless_enabled(chart: Chart) -> None:
    assert of_kind(render(chart, {}), "Ingress") == []
    assert (
        of_kind(render(chart, {"gateway": {"ingress": {"host": "a.example.com"}}}), "Ingress") == []
    )
    text = notes(chart, {})
    assert f"kubectl -n {NAMESPACE} port-forward service/{GATEWAY} 8480" in text
    assert "export TINKER_BASE_URL=http://localhost:8480" in text


def test_ingress_with_host_and_tls(chart: Chart) -> None:
    docs = render(chart, BEHIND_INGRESS)
    (ingress,) = of_kind(docs, "Ingress")
    spec = ingress["spec"]
    assert spec["ingressClassName"] == "nginx"
    assert spec["tls"] == [
        {"secretName": "tinker-example-com-tls", "hosts": ["tinker.example.com"]}
    ]
    (rule,) = spec["rules"]
    assert rule["host"] == "tinker.example.com"
    (path,) = rule["http"]["paths"]
    assert (path["path"], path["pathType"]) == ("/", "Prefix")
    backend = path["backend"]["service"]
    (service,) = [s for s in of_kind(docs, "Service") if s["metadata"]["name"] == backend["name"]]
    assert backend["port"]["name"] in {p["name"] for p in service["spec"]["ports"]}
    assert service["metadata"]["name"] == GATEWAY
    assert gateway_config(docs).public_url == "https://tinker.example.com"
    assert "export TINKER_BASE_URL=https://tinker.example.com\n" in notes(chart, BEHIND_INGRESS)


def test_ingress_without_tls_is_http_and_public_url_can_be_set(chart: Chart) -> None:
    values: dict[str, Any] = {"gateway": {"ingress": {**INGRESS, "className": ""}}}
    docs = render(chart, values)
    (ingress,) = of_kind(docs, "Ingress")
    assert "tls" not in ingress["spec"] and "ingressClassName" not in ingress["spec"]
    assert gateway_config(docs).public_url == "http://tinker.example.com"
    assert "export TINKER_BASE_URL=http://tinker.example.com\n" in notes(chart, values)
    values["gateway"]["config"] = {"public_url": "https://downloads.example.com"}
    docs = render(chart, values)
    names = [e["name"] for e in container(docs)["env"]]
    assert names.count("TREADLE_GATEWAY_PUBLIC_URL") == 1
    assert gateway_config(docs).public_url == "https://downloads.example.com"


def test_ingress_needs_a_host(chart: Chart) -> None:
    with pytest.raises(HelmRenderError, match=r"gateway\.ingress\.host: set the host"):
        render(chart, {"gateway": {"ingress": {"enabled": True}}})


# ---------------------------------------------------------------------- network policies
@pytest.mark.parametrize("values", [{}, BEHIND_INGRESS], ids=["default", "behind-ingress"])
def test_the_gateway_reaches_the_scheduler_and_nothing_else(
    chart: Chart, values: dict[str, Any]
) -> None:
    docs = render(chart, values)
    policies = of_kind(docs, "NetworkPolicy")
    pods = release_pods(docs)
    gateway = pods.pop(GATEWAY)
    reached = {
        (pod.name, port["name"])
        for pod in pods.values()
        for port in pod.ports
        if connects(policies, gateway, pod, port["name"])
    }
    assert reached == {("ml-treadle-scheduler", "grpc")}
    assert connects(policies, gateway, KUBE_DNS, "dns")
    assert connects(policies, gateway, KUBE_DNS, "dns-tcp")
    assert not connects(policies, gateway, WEB, "http")
    assert not connects(policies, gateway, INGRESS_CONTROLLER, "https")


def test_the_gateway_admits_anyone_by_default(chart: Chart) -> None:
    docs = render(chart, {})
    policies = of_kind(docs, "NetworkPolicy")
    gateway = release_pods(docs)[GATEWAY]
    assert connects(policies, CLIENT, gateway, "http")
    assert connects(policies, INGRESS_CONTROLLER, gateway, "http")
    assert connects(policies, CLIENT, gateway, "metrics")  # metricsFrom: any namespace


def test_the_gateway_admits_only_its_configured_peers(chart: Chart) -> None:
    docs = render(chart, BEHIND_INGRESS)
    policies = of_kind(docs, "NetworkPolicy")
    pods = release_pods(docs)
    gateway, scheduler = pods[GATEWAY], pods["ml-treadle-scheduler"]
    assert connects(policies, INGRESS_CONTROLLER, gateway, "http")
    assert not connects(policies, CLIENT, gateway, "http")
    # the scheduler is open to its own peers (an address range) and to the gateway
    assert not connects(policies, CLIENT, scheduler, "grpc")
    assert connects(policies, gateway, scheduler, "grpc")
    for name, pod in pods.items():
        if name not in (GATEWAY, "ml-treadle-scheduler"):
            assert not connects(policies, pod, gateway, "http"), name


def test_no_gateway_no_gateway_objects(chart: Chart) -> None:
    values = {
        "gateway": {"enabled": False},
        "scheduler": {"allowFrom": BEHIND_INGRESS["scheduler"]["allowFrom"]},
    }
    docs = render(chart, values)
    assert not [d for d in docs if "gateway" in d["metadata"]["name"]]
    assert "gateway" not in yaml.safe_dump(of_kind(docs, "NetworkPolicy"))
    assert "TINKER_BASE_URL" not in notes(chart, values)


# ---------------------------------------------------------------------- monitoring
def test_service_monitor_scrapes_the_gateway_only_with_monitoring_on(chart: Chart) -> None:
    assert of_kind(render(chart, {}), "ServiceMonitor") == []
    docs = render(chart, {"monitoring": {"serviceMonitor": {"enabled": True}}})
    (monitor,) = of_kind(docs, "ServiceMonitor")
    scraped = [
        s
        for s in of_kind(docs, "Service")
        if monitor["spec"]["selector"]["matchLabels"].items() <= s["metadata"]["labels"].items()
    ]
    mine = [s for s in scraped if s["metadata"]["labels"]["treadle.dev/job"] == "treadle-gateway"]
    assert [s["metadata"]["name"] for s in mine] == [f"{GATEWAY}-metrics"]
    (endpoint,) = monitor["spec"]["endpoints"]
    assert endpoint["port"] in {p["name"] for p in mine[0]["spec"]["ports"]}
    public = gateway_objects(docs)["Service"]
    assert [p["name"] for p in public["spec"]["ports"]] == ["http"]  # metrics stay internal
