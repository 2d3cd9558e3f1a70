"""The dashboard JSON files: current with their source, loadable by Grafana's provisioning, and
holding the panels operators look for. (Their PromQL runs against Prometheus in
test_grafana.py.)"""

from __future__ import annotations

import importlib.util
import json
import sys
from typing import Any

import pytest

from .conftest import GRAFANA

_spec = importlib.util.spec_from_file_location("build_dashboards", GRAFANA / "build_dashboards.py")
assert _spec is not None and _spec.loader is not None
build = importlib.util.module_from_spec(_spec)
sys.modules["build_dashboards"] = build  # its dataclasses look their module up
_spec.loader.exec_module(build)

FILES = sorted((GRAFANA / "dashboards").glob("*.json"))


def load(name: str) -> dict[str, Any]:
    return json.loads((GRAFANA / "dashboards" / name).read_text())


def test_json_files_are_generated_from_the_source() -> None:
    assert {p.name for p in FILES} == set(build.DASHBOARDS)
    for name, model in build.DASHBOARDS.items():
        assert (GRAFANA / "dashboards" / name).read_text() == build.render(model), (
            f"{name} is stale: run python deploy/grafana/build_dashboards.py"
        )


@pytest.mark.parametrize("path", FILES, ids=lambda p: p.name)
def test_dashboard_is_well_formed(path: Any) -> None:
    model = json.loads(path.read_text())
    assert model["uid"] and len(model["uid"]) <= 40 and model["schemaVersion"] >= 36
    assert model["templating"]["list"][0]["type"] == "datasource"
    ids = [p["id"] for p in model["panels"]]
    assert len(ids) == len(set(ids))
    cells: set[tuple[int, int]] = set()
    for panel in model["panels"]:
        pos = panel["gridPos"]
        assert pos["x"] + pos["w"] <= 24
        mine = {
            (x, y)
            for x in range(pos["x"], pos["x"] + pos["w"])
            for y in range(pos["y"], pos["y"] + pos["h"])
        }
        assert not cells & mine, f"{panel['title']} overlaps another panel"
        cells |= mine
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            assert target["expr"] and target["refId"]
            assert "treadle_" in target["expr"]


def test_cycles_dashboard_has_the_operator_views() -> None:
    model = load("treadle-cycles.json")
    assert model["title"] == "Treadle / Cycles"
    titles = {p["title"] for p in model["panels"]}
    assert {"Utilization", "Cycle time", "Queue", "Work per cycle"} <= titles
    assert {
        "Trainer utilization (last minute)",
        "Cycle duration",
        "Queue depth",
        "Queue wait",
        "Tokens per cycle by tenant",
        "Ops and tenants per cycle",
    } <= titles
    by_tenant = next(p for p in model["panels"] if p["title"] == "Tokens per cycle by tenant")
    assert by_tenant["targets"][0]["legendFormat"] == "{{tenant}}"
    variable = model["templating"]["list"][1]
    assert variable["name"] == "base_model" and variable["allValue"] == ".*"


def test_services_dashboard_has_a_row_per_service_behind_the_scheduler() -> None:
    model = load("treadle-services.json")
    assert model["title"] == "Treadle / Services"
    rows = [p["title"] for p in model["panels"] if p["type"] == "row"]
    assert rows == ["Trainer", "Sampler", "Checkpoints", "Gateway"]
    exprs = " ".join(t["expr"] for p in model["panels"] for t in p.get("targets", []))
    for metric in (
        "treadle_trainer_tokens_total",
        "treadle_trainer_flops_total",
        "treadle_sampler_tokens_generated_total",
        "treadle_sampler_adapter_cache_hits_total",
        "treadle_checkpoints_bytes_written_total",
        "treadle_checkpoints_expired_total",
        "treadle_gateway_requests_total",
        "treadle_gateway_request_duration_seconds_bucket",
        "treadle_gateway_sessions",
        "treadle_gateway_futures",
    ):
        assert metric in exprs


def test_gateway_row_shows_rate_latency_errors_and_what_it_holds() -> None:
    model = load("treadle-services.json")
    panels = {p["title"]: p for p in model["panels"]}
    by_route = panels["Requests by route"]["targets"]
    assert [t["legendFormat"] for t in by_route] == ["{{route}}"]
    assert "sum by (route)" in by_route[0]["expr"]
    for q, title in (("0.5", "Latency by route (p50)"), ("0.99", "Latency by route (p99)")):
        (target,) = panels[title]["targets"]
        assert target["expr"].startswith(f"histogram_quantile({q}, sum by (le, route)")
    errors = " ".join(t["expr"] for t in panels["Errors by route"]["targets"])
    assert 'status=~"4.."' in errors and 'status=~"5.."' in errors
    held = " ".join(t["expr"] for t in panels["Sessions and futures held"]["targets"])
    assert "treadle_gateway_sessions" in held and "treadle_gateway_futures" in held
