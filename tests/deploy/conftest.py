"""Helpers of the deployment tests: paths, the rendered chart, and a real Prometheus server.

`chart` loads the Helm chart once per module; `render` gives the manifests it renders for some
values, `validate` checks one offline against the Kubernetes schemas (or, for the Prometheus
Operator's CRDs, the small schemas in tests/deploy/schemas/). `Prometheus` runs Debian's
/usr/bin/prometheus on a free loopback port with a generated scrape config (1 s scrape and rule
evaluation intervals) and answers PromQL through its HTTP API.
"""

from __future__ import annotations

import json
import logging
import shutil
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from helm_python.chart import Chart

from fixtures.grpc_server import free_port

REPO = Path(__file__).resolve().parents[2]
CHART = REPO / "deploy" / "helm" / "treadle"
GRAFANA = REPO / "deploy" / "grafana"
DOCKER = REPO / "deploy" / "docker"
PROMETHEUS = shutil.which("prometheus") or "/usr/bin/prometheus"
KUBERNETES = "1.30.0"
SCHEMAS = Path(__file__).parent / "schemas"
CRDS = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): SCHEMAS / "servicemonitor-monitoring-v1.json",
    ("monitoring.coreos.com/v1", "PrometheusRule"): SCHEMAS / "prometheusrule-monitoring-v1.json",
}
logging.getLogger("helm_python").setLevel(logging.WARNING)


@pytest.fixture(scope="module")
def chart() -> Iterator[Chart]:
    """The chart of deploy/helm/treadle, loaded once per test module."""
    loaded = Chart.load(CHART)
    yield loaded
    loaded.close()


def render(chart: Chart, values: dict[str, Any]) -> list[dict[str, Any]]:
    """Every manifest the chart renders for `values` (NOTES.txt left out)."""
    files = chart.render(values, name="ml", namespace="training", is_install=True)
    return [
        doc
        for path, text in sorted(files.items())
        if path.endswith(".yaml")
        for doc in yaml.safe_load_all(text)
        if doc
    ]


def of_kind(docs: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    """The manifests of one kind."""
    return [d for d in docs if d["kind"] == kind]


def validate(doc: dict[str, Any]) -> None:
    """Validate a manifest offline (strict: unknown fields fail); jsonschema.ValidationError
    if it is invalid."""
    crd = CRDS.get((doc["apiVersion"], doc["kind"]))
    if crd is not None:
        jsonschema.validate(doc, json.loads(crd.read_text()))
    else:
        kubernetes_validate.validate(doc, KUBERNETES, strict=True)


def dashboard_expressions() -> list[tuple[str, str]]:
    """(where, PromQL) of every target of every dashboard, in file order."""
    found = []
    for path in sorted((GRAFANA / "dashboards").glob("*.json")):
        model = json.loads(path.read_text())
        for panel in model["panels"]:
            for target in panel.get("targets", []):
                found.append((f"{path.name}: {panel['title']} {target['refId']}", target["expr"]))
    return found


def alert_rules() -> list[dict[str, Any]]:
    """The rules of the PrometheusRule in deploy/grafana, in file order."""
    rule = yaml.safe_load((GRAFANA / "prometheus-rules.yaml").read_text())
    return [r for group in rule["spec"]["groups"] for r in group["rules"]]


class PromQLError(Exception):
    """Prometheus refused a query (bad syntax or evaluation error)."""


class Prometheus:
    """A Prometheus server process scraping `jobs` ({job: ["host:port", ...]})."""

    def __init__(self, workdir: Path, jobs: Mapping[str, list[str]], rule_files: list[Path]):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        config = {
            "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
            "rule_files": [str(p) for p in rule_files],
            "scrape_configs": [
                {"job_name": job, "static_configs": [{"targets": targets}]}
                for job, targets in jobs.items()
            ],
        }
        config_path = workdir / "prometheus.yml"
        config_path.write_text(yaml.safe_dump(config))
        self.log_path = workdir / "prometheus.log"
        with open(self.log_path, "wb") as log:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={config_path}",
                    f"--storage.tsdb.path={workdir / 'data'}",
                    f"--web.listen-address=127.0.0.1:{self.port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
            )
        self._wait_ready(30.0)

    def _wait_ready(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"prometheus exited:\n{self.log_path.read_text()}")
            try:
                with urllib.request.urlopen(self.url + "/-/ready", timeout=1) as reply:
                    if reply.status == 200:
                        return
            except OSError:
                pass
            time.sleep(0.2)
        raise RuntimeError(f"prometheus not ready after {timeout}s")

    def api(self, path: str, **params: str) -> Any:
        """GET /api/v1/<path>; the `data` of the reply, PromQLError if Prometheus refuses it."""
        query = urllib.parse.urlencode(params)
        try:
            with urllib.request.urlopen(f"{self.url}/api/v1/{path}?{query}", timeout=10) as reply:
                body = json.load(reply)
        except urllib.error.HTTPError as exc:
            body = json.load(exc)
        if body.get("status") != "success":
            raise PromQLError(f"{body.get('errorType')}: {body.get('error')}")
        return body["data"]

    def query(self, expr: str) -> list[dict[str, Any]]:
        """The instant vector (or scalar, as one sample) `expr` evaluates to now."""
        data = self.api("query", query=expr)
        if data["resultType"] in ("scalar", "string"):
            return [{"metric": {}, "value": data["result"]}]
        return list(data["result"])

    def wait_scraped_after(self, moment: float, scrapes: int = 3, timeout: float = 30.0) -> None:
        """Block until every target has been scraped `scrapes` times after unix time `moment`."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            oldest = self.query("min(timestamp(up))")
            if oldest and float(oldest[0]["value"][1]) >= moment + scrapes:
                return
            time.sleep(0.5)
        raise TimeoutError(f"targets not scraped {scrapes} times after {moment}")

    def stop(self) -> None:
        """Terminate the server and wait for it."""
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
