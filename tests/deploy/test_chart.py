"""The Helm chart: strict lint, rendering with the default values and every ci/ values file, and
every rendered manifest validated offline against the Kubernetes 1.30 schemas (strict: unknown
fields fail).

ServiceMonitor and PrometheusRule are Prometheus Operator CRDs, absent from the core schemas:
they are validated against the small schemas in tests/deploy/schemas/ instead.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import yaml
from helm_python.chart import Chart, lint
from helm_python.errors import HelmRenderError

from treadle_checkpoints.config import CheckpointsConfig
from treadle_gateway.config import GatewayConfig
from treadle_runtime.config import load_config
from treadle_sampler.config import SamplerConfig
from treadle_scheduler.config import SchedulerConfig
from treadle_trainer.config import TrainerConfig

from .conftest import CHART, GRAFANA, KUBERNETES, of_kind, render, validate

COMPONENT = "app.kubernetes.io/component"
VALUES = {
    "default": {},
    **{
        path.name.removesuffix("-values.yaml"): yaml.safe_load(path.read_text())
        for path in sorted((CHART / "ci").glob("*-values.yaml"))
    },
}
CONFIGS = {
    "scheduler": SchedulerConfig,
    "gateway": GatewayConfig,
    "trainer": TrainerConfig,
    "sampler": SamplerConfig,
    "checkpoints": CheckpointsConfig,
}


@pytest.fixture(scope="module")
def rendered(chart: Chart) -> dict[str, list[dict[str, Any]]]:
    return {name: render(chart, values) for name, values in VALUES.items()}


def pod_templates(docs: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any]]]:
    """(workload name, pod spec) of every Deployment, StatefulSet and Job."""
    return [
        (d["metadata"]["name"], d["spec"]["template"])
        for d in docs
        if d["kind"] in ("Deployment", "StatefulSet", "Job")
    ]


def treadle_containers(docs: list[dict[str, Any]]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(service, container) of every long-running Treadle container."""
    for d in docs:
        if d["kind"] != "Deployment":
            continue
        for container in d["spec"]["template"]["spec"]["containers"]:
            image = container["image"].rsplit("/", 1)[-1]
            if image.startswith("treadle-"):
                yield image.split(":")[0].removeprefix("treadle-"), container


def loaded_config(service: str, container: dict[str, Any]) -> Any:
    """A container's service config, loaded from its environment and flags by the service's
    own config code."""
    env = {e["name"]: e["value"] for e in container["env"] if "value" in e}
    return load_config(CONFIGS[service], container.get("args", []), env, service=service)


@pytest.mark.parametrize("name", VALUES)
def test_lint_is_clean_in_strict_mode(name: str) -> None:
    report = lint(CHART, VALUES[name], strict=True, kube_version=f"v{KUBERNETES}")
    assert report["errors"] == []
    assert [m for m in report["messages"] if m["severity"] >= 2] == []


@pytest.mark.parametrize("name", VALUES)
def test_every_manifest_is_valid_kubernetes(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    docs = rendered[name]
    assert len(docs) >= 15
    for doc in docs:
        where = f"{name}: {doc['kind']}/{doc['metadata']['name']}"
        try:
            validate(doc)
        except jsonschema.ValidationError as exc:
            pytest.fail(f"{where}: {'.'.join(map(str, exc.path))}: {exc.message}")


def test_one_trainer_and_sampler_deployment_per_base_model(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    docs = rendered["two-models-monitoring"]
    names = {d["metadata"]["name"] for d in of_kind(docs, "Deployment")}
    assert names == {
        "ml-treadle-scheduler",
        "ml-treadle-gateway",
        "ml-treadle-checkpoints",
        "ml-treadle-trainer-qwen3-8b",
        "ml-treadle-trainer-llama-3-1-8b",
        "ml-treadle-sampler-qwen3-8b",
        "ml-treadle-sampler-llama-3-1-8b",
    }
    served = {
        env["value"]
        for service, container in treadle_containers(docs)
        if service == "trainer"
        for env in container["env"]
        if env["name"] == "TREADLE_TRAINER_BASE_MODEL"
    }
    assert served == {"/models/Qwen3-8B", "/models/Llama-3.1-8B-Instruct"}
    hpas = of_kind(docs, "HorizontalPodAutoscaler")
    assert {h["spec"]["scaleTargetRef"]["name"] for h in hpas} == {
        "ml-treadle-sampler-qwen3-8b",
        "ml-treadle-sampler-llama-3-1-8b",
    }
    assert all(h["spec"]["metrics"][0]["pods"]["metric"]["name"] for h in hpas)


@pytest.mark.parametrize("name", VALUES)
def test_rendered_environment_is_accepted_by_each_service(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    """The chart's TREADLE_* variables load and validate with the services' own config code."""
    seen = set()
    for service, container in treadle_containers(rendered[name]):
        config = loaded_config(service, container)
        assert (config.host, config.port, config.metrics_port) == ("0.0.0.0", config.port, 9400)
        seen.add(service)
    assert seen == set(CONFIGS)


def test_config_values_reach_the_services(rendered: dict[str, list[dict[str, Any]]]) -> None:
    configs: dict[str, list[Any]] = {}
    for service, container in treadle_containers(rendered["two-models-monitoring"]):
        configs.setdefault(service, []).append(loaded_config(service, container))
    (scheduler,) = configs["scheduler"]
    assert scheduler.max_request_tokens == 16777216 and scheduler.min_cycle_seconds == 0.25
    assert scheduler.addresses("trainers") == [
        "ml-treadle-trainer-qwen3-8b:8471",
        "ml-treadle-trainer-llama-3-1-8b:8471",
    ]
    assert scheduler.checkpoints == "ml-treadle-checkpoints:8473"
    trainers = {t.base_model: t for t in configs["trainer"]}
    assert trainers["/models/Qwen3-8B"].max_resident_adapters == 64
    assert trainers["/models/Llama-3.1-8B-Instruct"].max_resident_adapters == 0
    samplers = {s.base_model: s for s in configs["sampler"]}
    assert samplers["/models/Qwen3-8B"].engine == "sglang"
    assert samplers["/models/Qwen3-8B"].sglang_url == "http://127.0.0.1:30000"
    assert samplers["/models/Llama-3.1-8B-Instruct"].engine == "torch"
    assert all(s.max_adapters == 32 for s in samplers.values())


@pytest.mark.parametrize("name", VALUES)
def test_only_the_scheduler_and_the_gateway_are_reachable_from_outside(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    docs = rendered[name]
    for service in of_kind(docs, "Service"):
        if service["metadata"]["name"] not in ("ml-treadle-scheduler", "ml-treadle-gateway"):
            assert service["spec"]["type"] == "ClusterIP", service["metadata"]["name"]
    policies = of_kind(docs, "NetworkPolicy")
    deny = next(p for p in policies if p["metadata"]["name"].endswith("default-deny"))
    assert "ingress" not in deny["spec"] and deny["spec"]["policyTypes"] == ["Ingress"]
    for workload, template in pod_templates(docs):
        labels = template["metadata"]["labels"]
        selector = deny["spec"]["podSelector"]["matchLabels"]
        assert selector.items() <= labels.items(), f"{workload} escapes the default deny"
    for policy in policies:
        component = policy["spec"]["podSelector"].get("matchLabels", {})
        for rule in policy["spec"].get("ingress", []):
            ports = {p["port"] for p in rule["ports"]}
            if ports == {"metrics"}:
                continue
            open_to_all = "from" not in rule
            if component.get(COMPONENT) == "scheduler":
                assert ports == {"grpc"}
            elif component.get(COMPONENT) == "gateway":
                assert ports == {"http"}
            else:
                assert not open_to_all, policy["metadata"]["name"]
                peers = {
                    peer.get("podSelector", {}).get("matchLabels", {}).get(COMPONENT)
                    for peer in rule["from"]
                }
                caller = "checkpoints" if component[COMPONENT] == "minio" else "scheduler"
                assert caller in peers, policy["metadata"]["name"]


@pytest.mark.parametrize("name", VALUES)
def test_probes_use_the_grpc_health_service(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    """Every gRPC service is probed by the gRPC health protocol (the gateway, HTTP, by its
    healthz route: test_chart_gateway.py)."""
    for service, container in treadle_containers(rendered[name]):
        if service == "gateway":
            continue
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == "grpc")
        for probe in ("readinessProbe", "livenessProbe"):
            assert container[probe]["grpc"] == {"port": port}, (service, probe)
        if service in ("trainer", "sampler"):
            assert container["startupProbe"]["grpc"] == {"port": port}


@pytest.mark.parametrize("name", VALUES)
def test_pods_run_as_non_root_with_resources(
    rendered: dict[str, list[dict[str, Any]]], name: str
) -> None:
    for workload, template in pod_templates(rendered[name]):
        spec = template["spec"]
        assert spec["securityContext"]["runAsNonRoot"] is True, workload
        for container in spec["containers"]:
            assert container["resources"].get("requests"), (workload, container["name"])
            assert container["securityContext"]["allowPrivilegeEscalation"] is False


def test_trainers_and_sglang_get_a_gpu(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for docs in rendered.values():
        for d in of_kind(docs, "Deployment"):
            for container in d["spec"]["template"]["spec"]["containers"]:
                if container["name"] in ("trainer", "sglang"):
                    assert container["resources"]["limits"]["nvidia.com/gpu"] == 1


def test_monitoring_objects_follow_their_switches(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    for name in ("default", "external-s3"):
        kinds = {d["kind"] for d in rendered[name]}
        assert not kinds & {"ServiceMonitor", "PrometheusRule"}
        assert not [d for d in of_kind(rendered[name], "ConfigMap") if "dashboards" in str(d)]
    docs = rendered["two-models-monitoring"]
    (monitor,) = of_kind(docs, "ServiceMonitor")
    assert monitor["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    assert monitor["spec"]["jobLabel"] == "treadle.dev/job"
    jobs = {
        s["metadata"]["labels"]["treadle.dev/job"]
        for s in of_kind(docs, "Service")
        if s["metadata"]["labels"].get("treadle.dev/metrics") == "true"
    }
    assert jobs == {
        "treadle-scheduler",
        "treadle-gateway",
        "treadle-trainer",
        "treadle-sampler",
        "treadle-checkpoints",
    }
    (rule,) = of_kind(docs, "PrometheusRule")
    source = yaml.safe_load((GRAFANA / "prometheus-rules.yaml").read_text())
    assert rule["spec"] == source["spec"]
    (dashboards,) = of_kind(docs, "ConfigMap")
    assert dashboards["metadata"]["namespace"] == "monitoring"
    assert dashboards["metadata"]["labels"]["grafana_dashboard"] == "1"
    files = {p.name: p.read_text() for p in (GRAFANA / "dashboards").glob("*.json")}
    assert set(dashboards["data"]) == set(files)
    for file_name, text in files.items():
        assert json.loads(dashboards["data"][file_name]) == json.loads(text)


def test_external_object_store_replaces_minio(rendered: dict[str, list[dict[str, Any]]]) -> None:
    docs = rendered["external-s3"]
    assert of_kind(docs, "StatefulSet") == []
    assert of_kind(docs, "Secret") == []  # both Secrets exist beforehand
    (checkpoints,) = [c for s, c in treadle_containers(docs) if s == "checkpoints"]
    env = {e["name"]: e for e in checkpoints["env"]}
    assert env["TREADLE_CHECKPOINTS_S3_ENDPOINT"]["value"] == "minio.storage.svc.cluster.local:9000"
    assert env["TREADLE_CHECKPOINTS_S3_SECURE"]["value"] == "true"
    assert env["TREADLE_CHECKPOINTS_BUCKET"]["value"] == "ml-checkpoints"
    key_ref = env["TREADLE_CHECKPOINTS_S3_SECRET_KEY"]["valueFrom"]["secretKeyRef"]
    assert key_ref == {"name": "treadle-s3-credentials", "key": "secret-key"}
    (job,) = of_kind(docs, "Job")
    job_env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert job_env["TREADLE_CHECKPOINTS_S3_ENDPOINT"] == env["TREADLE_CHECKPOINTS_S3_ENDPOINT"]
    (scheduler,) = [
        d for d in of_kind(docs, "Deployment") if d["metadata"]["name"].endswith("scheduler")
    ]
    volumes = scheduler["spec"]["template"]["spec"]["volumes"]
    assert {"secretName": "treadle-api-keys"}.items() <= volumes[0]["secret"].items()


def test_default_install_generates_an_api_key(rendered: dict[str, list[dict[str, Any]]]) -> None:
    import base64

    secrets = {s["metadata"]["name"]: s for s in of_kind(rendered["default"], "Secret")}
    keys = json.loads(base64.b64decode(secrets["ml-treadle-api-keys"]["data"]["api-keys.json"]))
    ((key, tenant),) = keys.items()
    assert key.startswith("tml-") and len(key) > 20 and tenant == "default"
    s3 = secrets["ml-treadle-s3"]["data"]
    assert len(base64.b64decode(s3["secret-key"])) >= 32


@pytest.mark.parametrize(
    ("values", "message"),
    [
        (
            {"minio": {"enabled": False}, "objectStore": {"accessKey": "a", "secretKey": "b"}},
            "objectStore.endpoint: set the S3 host:port",
        ),
        (
            {"minio": {"enabled": False}, "objectStore": {"endpoint": "s3.example.com:443"}},
            "existingSecret or accessKey and secretKey",
        ),
        ({"objectStore": {"endpoint": "s3.example.com:443"}}, "leave it empty while minio.enabled"),
    ],
)
def test_inconsistent_object_store_values_fail_with_a_reason(
    chart: Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(HelmRenderError, match=message.replace(".", r"\.")):
        chart.render(values, name="ml", namespace="training", is_install=True)
