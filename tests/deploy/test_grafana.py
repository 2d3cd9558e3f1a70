"""The dashboards and alerts of deploy/grafana against a real Prometheus scraping a real mesh.

One module-scoped run: a local mesh with metrics (tiny-llama) and its gateway is scraped every
second by Debian's Prometheus, which also loads the alert rules. A short training run (steps, a
sample, saves) and a few gateway requests (health, client/config with and without a key, a
session) are observed healthy; then the object store is stopped and a save fails; then the
trainer is killed; then the scheduler is killed and the gateway answers 503. Every PromQL
expression is evaluated through the HTTP API after each phase.

How "returns data" is judged: a dashboard expression must return data in the healthy phase,
except those that only a fault feeds, which must return data in their fault's phase (the
object-store error panel once the store has failed, the gateway's 5xx once the scheduler is
gone). An alert expression must return nothing while the mesh is healthy, and its threshold-free
form (each `> N`, `< N`, `== N` removed) must return data (the store-error and gateway alerts in
their fault's phase); the trainer-down, store-error and gateway alerts must then fire on their
real faults.
"""

from __future__ import annotations

import json
import re
import subprocess
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest
import yaml

import treadle
from fixtures.data import token_batch
from treadle import types
from treadle_runtime.launcher import LocalMesh, UpConfig

from .conftest import (
    GRAFANA,
    PROMETHEUS,
    Prometheus,
    PromQLError,
    alert_rules,
    dashboard_expressions,
)

TINY = "treadle/tiny-llama"
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$base_model": ".*"}
# what only a fault feeds (a metric, a selector), and the phase that has the fault
FAULT_SERIES = {
    "treadle_checkpoints_store_errors_total": "store_down",
    'treadle_gateway_requests_total{status=~"5.."}': "scheduler_down",
}
FAULT_ALERTS = {
    "TreadleCheckpointStoreErrors": "store_down",
    "TreadleCheckpointRequestsFailing": "store_down",
    "TreadleGatewayErrors": "scheduler_down",
}
THRESHOLD = re.compile(r"\s*(?:==|!=|>=|<=|>|<)\s*(?:bool\s+)?-?\d+(?:\.\d+)?(?:e[+-]?\d+)?")


def concrete(expr: str) -> str:
    """A dashboard expression with Grafana's variables replaced by values Prometheus accepts."""
    for name, value in GRAFANA_VARIABLES.items():
        expr = expr.replace(name, value)
    return expr


def without_thresholds(expr: str) -> str:
    """An alert expression with its comparisons against numbers removed."""
    return THRESHOLD.sub("", expr)


def phase_of(expr: str) -> str:
    """The phase whose answers must hold data for a dashboard expression."""
    return next((phase for series, phase in FAULT_SERIES.items() if series in expr), "healthy")


@dataclass
class Observed:
    """What Prometheus answered to each expression after each phase."""

    answers: dict[str, dict[str, list[Any] | PromQLError]] = field(default_factory=dict)
    rules: list[dict[str, Any]] = field(default_factory=list)
    alerts: list[dict[str, Any]] = field(default_factory=list)
    series: list[dict[str, str]] = field(default_factory=list)
    base_models: list[str] = field(default_factory=list)

    def answer(self, phase: str, expr: str) -> list[Any]:
        """The result of `expr` in `phase`; fails the test if Prometheus refused it."""
        result = self.answers[phase][expr]
        if isinstance(result, PromQLError):
            pytest.fail(f"Prometheus refused {expr!r}: {result}")
        return result


def _expressions() -> list[str]:
    exprs = [concrete(e) for _, e in dashboard_expressions()]
    for rule in alert_rules():
        exprs += [rule["expr"], without_thresholds(rule["expr"])]
    return list(dict.fromkeys(exprs))


def _ask(prometheus: Prometheus, exprs: list[str]) -> dict[str, list[Any] | PromQLError]:
    answers: dict[str, list[Any] | PromQLError] = {}
    for expr in exprs:
        try:
            answers[expr] = prometheus.query(expr)
        except PromQLError as exc:
            answers[expr] = exc
    return answers


def _http(url: str, api_key: str = "", body: dict[str, Any] | None = None) -> int:
    """The status of one gateway request (a POST of `body` as JSON, or a GET)."""
    request = urllib.request.Request(url, data=None if body is None else json.dumps(body).encode())
    request.add_header("Content-Type", "application/json")
    if api_key:
        request.add_header("X-API-Key", api_key)
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return int(reply.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def _use_gateway(base_url: str, api_key: str) -> None:
    """A session, then bursts of requests a scrape apart, so every series has a rate: health,
    client/config accepted and refused (no key), the session's heartbeat."""
    api = f"{base_url}/api/v1"
    sdk = {"sdk_version": "0.38.0"}
    created = urllib.request.Request(f"{api}/create_session", data=json.dumps(sdk).encode())
    created.add_header("Content-Type", "application/json")
    created.add_header("X-API-Key", api_key)
    with urllib.request.urlopen(created, timeout=60) as reply:
        session = json.load(reply)["session_id"]
    for _ in range(3):
        assert _http(f"{api}/healthz") == 200
        assert _http(f"{api}/client/config", api_key, sdk) == 200
        assert _http(f"{api}/client/config", "", sdk) == 401
        assert _http(f"{api}/session_heartbeat", api_key, {"session_id": session}) == 200
        time.sleep(1.2)


def _train(service: treadle.ServiceClient) -> treadle.TrainingClient:
    """Two bursts of training, sampling and saving, with scrapes in between."""
    training = service.create_lora_training_client(base_model=TINY, rank=4, seed=0)
    batch = token_batch()
    for burst in range(2):
        pending = [
            (
                training.forward_backward(batch),
                training.optim_step(types.AdamParams(learning_rate=1e-2)),
            )
            for _ in range(3)
        ]
        for fb, opt in pending:
            fb.result(timeout=60)
            opt.result(timeout=60)
        sampler = training.save_weights_and_get_sampling_client()
        params = types.SamplingParams(max_tokens=6, seed=burst)
        sampler.sample(batch[0].model_input, num_samples=2, sampling_params=params).result(
            timeout=60
        )
        training.save_state(f"burst-{burst}", ttl_seconds=3600).result(timeout=60)
        time.sleep(1.5)
    return training


@pytest.fixture(scope="module")
def observed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Observed]:
    workdir = tmp_path_factory.mktemp("observed")
    rules_file = workdir / "rules.yml"
    spec = yaml.safe_load((GRAFANA / "prometheus-rules.yaml").read_text())["spec"]
    rules_file.write_text(yaml.safe_dump(spec))
    config = UpConfig(
        base_model=TINY, port=0, gateway_port=0, data_dir=str(workdir / "mesh"), metrics=True
    )
    exprs = _expressions()
    result = Observed()
    with LocalMesh(config) as mesh:
        jobs: dict[str, list[str]] = {}
        for process in mesh.services:
            kind = process.name.split("-")[0]
            jobs.setdefault(f"treadle-{kind}", []).append(f"127.0.0.1:{process.metrics_port}")
        prometheus = Prometheus(workdir, jobs, [rules_file])
        service = treadle.ServiceClient(base_url=mesh.endpoint, api_key=mesh.api_key)
        try:
            prometheus.wait_scraped_after(time.time(), scrapes=1)
            training = _train(service)
            _use_gateway(mesh.gateway_url, mesh.api_key)
            prometheus.wait_scraped_after(time.time())
            result.answers["healthy"] = _ask(prometheus, exprs)
            result.series = prometheus.api("series", **{"match[]": '{job=~"treadle-.+"}'})
            result.base_models = prometheus.api(
                "label/base_model/values", **{"match[]": "treadle_scheduler_cycles_total"}
            )

            assert mesh.s3 is not None
            mesh.s3.stop()
            with pytest.raises(treadle.RequestFailedError):
                training.save_state("while-store-is-down").result(timeout=60)
            prometheus.wait_scraped_after(time.time())
            result.answers["store_down"] = _ask(prometheus, exprs)

            mesh.kill("trainer-0")
            with pytest.raises(treadle.RequestFailedError):  # the scheduler notices on use
                training.forward_backward(token_batch()).result(timeout=60)
            prometheus.wait_scraped_after(time.time())
            result.answers["trainer_down"] = _ask(prometheus, exprs)

            mesh.kill("scheduler")
            for _ in range(3):  # what the gateway answers while its scheduler is gone
                capabilities = f"{mesh.gateway_url}/api/v1/get_server_capabilities"
                assert _http(capabilities, mesh.api_key) == 503
                time.sleep(1.2)
            prometheus.wait_scraped_after(time.time())
            result.answers["scheduler_down"] = _ask(prometheus, exprs)
            result.rules = [r for g in prometheus.api("rules")["groups"] for r in g["rules"]]
            result.alerts = prometheus.api("alerts")["alerts"]
        finally:
            service.close()
            prometheus.stop()
    yield result


def test_every_dashboard_expression_returns_data(observed: Observed) -> None:
    for where, expr in dashboard_expressions():
        expr = concrete(expr)
        assert observed.answer(phase_of(expr), expr), f"{where}: no data for {expr}"


def test_base_model_variable_lists_the_served_model(observed: Observed) -> None:
    assert observed.base_models == [TINY]


def test_no_alert_fires_while_the_mesh_is_healthy(observed: Observed) -> None:
    for rule in alert_rules():
        assert observed.answer("healthy", rule["expr"]) == [], rule["alert"]


def test_alert_expressions_without_thresholds_return_data(observed: Observed) -> None:
    for rule in alert_rules():
        phase = FAULT_ALERTS.get(rule["alert"], "healthy")
        bare = without_thresholds(rule["expr"])
        assert bare != rule["expr"], f"{rule['alert']}: no threshold found"
        assert observed.answer(phase, bare), f"{rule['alert']}: no data for {bare}"


def test_store_outage_fires_the_checkpoint_alerts(observed: Observed) -> None:
    for rule in alert_rules():
        if FAULT_ALERTS.get(rule["alert"]) == "store_down":
            firing = observed.answer("store_down", rule["expr"])
            assert firing, f"{rule['alert']} stays quiet while the object store is down"
    store = next(r for r in alert_rules() if r["alert"] == "TreadleCheckpointStoreErrors")
    errors = observed.answer("store_down", store["expr"])
    assert {e["metric"]["kind"] for e in errors} == {"unreachable"}


def test_killed_trainer_fires_trainer_down(observed: Observed) -> None:
    rule = next(r for r in alert_rules() if r["alert"] == "TreadleTrainerDown")
    firing = observed.answer("trainer_down", rule["expr"])
    assert {e["metric"].get("__name__", "up") for e in firing} >= {"treadle_scheduler_trainer_up"}
    assert any(e["metric"].get("job") == "treadle-trainer" for e in firing), firing
    pending = {a["labels"]["alertname"] for a in observed.alerts}
    assert "TreadleTrainerDown" in pending


def test_gateway_panels_show_the_requests_it_answered(observed: Observed) -> None:
    panels = {where: concrete(expr) for where, expr in dashboard_expressions()}

    def labels(title: str, ref: str, phase: str = "healthy") -> list[dict[str, str]]:
        (expr,) = [e for w, e in panels.items() if w == f"treadle-services.json: {title} {ref}"]
        return [
            sample["metric"]
            for sample in observed.answer(phase, expr)
            if float(sample["value"][1]) > 0
        ]

    routes = {m["route"] for m in labels("Requests by route", "A")}
    assert {"/api/v1/healthz", "/api/v1/client/config", "/api/v1/session_heartbeat"} <= routes
    for title in ("Latency by route (p50)", "Latency by route (p99)"):
        assert "/api/v1/client/config" in {m["route"] for m in labels(title, "A")}, title
    refused = {(m["status"], m["route"]) for m in labels("Errors by route", "A")}
    assert refused == {("401", "/api/v1/client/config")}
    assert labels("Errors by route", "B") == []  # no 5xx while the mesh is healthy
    failed = {(m["status"], m["route"]) for m in labels("Errors by route", "B", "scheduler_down")}
    assert failed == {("503", "/api/v1/get_server_capabilities")}
    assert len(labels("Sessions and futures held", "A")) == 1  # the session opened


def test_scheduler_outage_fires_the_gateway_alert(observed: Observed) -> None:
    rule = next(r for r in alert_rules() if r["alert"] == "TreadleGatewayErrors")
    firing = observed.answer("scheduler_down", rule["expr"])
    assert {e["metric"]["route"] for e in firing} == {"/api/v1/get_server_capabilities"}
    assert "TreadleGatewayErrors" in {a["labels"]["alertname"] for a in observed.alerts}


def test_prometheus_evaluates_every_rule_without_error(observed: Observed) -> None:
    assert {r["name"] for r in observed.rules} == {r["alert"] for r in alert_rules()}
    for rule in observed.rules:
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))


def test_metric_names_units_and_labels(observed: Observed) -> None:
    """treadle_ prefix, base units, and bounded labels: tenant only on the billing counter."""
    names = {s["__name__"] for s in observed.series}
    families = {re.sub(r"_(total|created|bucket|sum|count)$", "", n) for n in names}
    ours = {n for n in names if n.startswith("treadle_")}
    runtime = ("python_", "process_", "up", "scrape_")
    assert {n for n in names - ours if not n.startswith(runtime)} == set()
    for name in families:
        assert not re.search(r"_(ms|milliseconds|minutes|hours|kb|mb|gb|percent)(_|$)", name), name
    with_tenant = {s["__name__"] for s in observed.series if "tenant" in s}
    assert {re.sub(r"_(total|created)$", "", n) for n in with_tenant} == {
        "treadle_scheduler_billed_tokens"
    }
    bounded = {
        "__name__", "job", "instance", "le", "base_model", "trainer", "tenant", "op", "code",
        "kind", "phase", "direction", "method", "reason", "operation", "route", "status",
    }  # fmt: skip
    for s in observed.series:
        if s["__name__"].startswith("treadle_"):
            assert set(s) <= bounded, s
    required = {
        "treadle_scheduler_cycle_utilization", "treadle_scheduler_cycle_duration_seconds_sum",
        "treadle_scheduler_cycle_tokens_sum", "treadle_scheduler_cycle_ops_sum",
        "treadle_scheduler_cycle_tenants_sum", "treadle_scheduler_queue_depth",
        "treadle_scheduler_queue_wait_seconds_sum", "treadle_trainer_tokens_total",
        "treadle_trainer_mfu", "treadle_trainer_flops_total",
        "treadle_sampler_tokens_generated_total", "treadle_sampler_adapter_cache_hits_total",
        "treadle_sampler_adapters_loaded",
        "treadle_checkpoints_bytes_written_total", "treadle_checkpoints_expired_total",
        "treadle_gateway_requests_total", "treadle_gateway_request_duration_seconds_bucket",
        "treadle_gateway_sessions", "treadle_gateway_futures",
    }  # fmt: skip
    assert required <= names, required - names


def test_promtool_accepts_the_rules_and_their_templates(tmp_path: Path) -> None:
    rule = yaml.safe_load((GRAFANA / "prometheus-rules.yaml").read_text())
    assert rule["kind"] == "PrometheusRule" and rule["apiVersion"] == "monitoring.coreos.com/v1"
    rules_file = tmp_path / "rules.yml"
    rules_file.write_text(yaml.safe_dump(rule["spec"]))
    promtool = Path(PROMETHEUS).with_name("promtool")
    check = subprocess.run(
        [str(promtool), "check", "rules", str(rules_file)], capture_output=True, text=True
    )
    assert check.returncode == 0, check.stdout + check.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in check.stdout
