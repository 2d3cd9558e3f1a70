"""Writes the Grafana dashboards of deploy/grafana/dashboards/ from the panel lists below.

The JSON files are what Grafana and the Helm chart load; this file is their source, so that every
panel has the same shape (datasource variable, unit, legend) and a panel is one line to add. Run
`python deploy/grafana/build_dashboards.py` after editing; tests/deploy checks the JSON is current.

Every expression uses only the `treadle_` metrics and Grafana's `$__rate_interval`, `$datasource`
and `$base_model` variables, so the test suite can run each one against a real Prometheus.
"""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
OUT = HERE / "dashboards"
RATE = "$__rate_interval"
MODEL = 'base_model=~"$base_model"'


@dataclass
class Panel:
    """One panel: a title, its expressions as (PromQL, legend), a unit and a kind."""

    title: str
    targets: list[tuple[str, str]]
    unit: str = "short"
    kind: str = "timeseries"  # timeseries or stat
    description: str = ""
    stack: bool = False
    max: float | None = None


@dataclass
class Row:
    """A titled row of panels, laid out four (stat) or three (timeseries) per line."""

    title: str
    panels: list[Panel] = field(default_factory=list)


def quantile(q: float, metric: str, by: str, selector: str = "") -> str:
    """histogram_quantile over a histogram's buckets, grouped by `by`."""
    grouping = ", ".join(["le", *filter(None, [by])])
    return (
        f"histogram_quantile({q}, sum by ({grouping}) "
        f"(rate({metric}_bucket{_braces(selector)}[{RATE}])))"
    )


def mean(metric: str, by: str, selector: str = "") -> str:
    """Mean observation of a histogram: rate of its sum over rate of its count."""
    return (
        f"sum by ({by}) (rate({metric}_sum{_braces(selector)}[{RATE}])) / "
        f"sum by ({by}) (rate({metric}_count{_braces(selector)}[{RATE}]))"
    )


def rate(metric: str, by: str, selector: str = "") -> str:
    """Per-second rate of a counter, summed by `by`."""
    return f"sum by ({by}) (rate({metric}{_braces(selector)}[{RATE}]))"


def _braces(selector: str) -> str:
    return f"{{{selector}}}" if selector else ""


CYCLES = [
    Row(
        "Utilization",
        [
            Panel(
                "Trainer utilization (last minute)",
                [("treadle_scheduler_cycle_utilization", "{{trainer}}")],
                unit="percentunit",
                max=1,
                description="Trainer time in cycles over wall time, per trainer.",
            ),
            Panel(
                "Busy fraction by base model",
                [
                    (
                        rate("treadle_scheduler_cycle_duration_seconds_sum", "base_model", MODEL),
                        "{{base_model}}",
                    )
                ],
                unit="percentunit",
                description="Cycle wall time per second, summed over the trainers of the model.",
            ),
            Panel(
                "Trainers connected",
                [
                    ("sum(treadle_scheduler_trainer_up)", "connected"),
                    ("count(treadle_scheduler_trainer_up)", "configured"),
                ],
                kind="stat",
            ),
        ],
    ),
    Row(
        "Cycle time",
        [
            Panel(
                "Cycle duration",
                [
                    (
                        quantile(
                            0.5, "treadle_scheduler_cycle_duration_seconds", "base_model", MODEL
                        ),
                        "p50 {{base_model}}",
                    ),
                    (
                        quantile(
                            0.95, "treadle_scheduler_cycle_duration_seconds", "base_model", MODEL
                        ),
                        "p95 {{base_model}}",
                    ),
                    (
                        mean("treadle_scheduler_cycle_duration_seconds", "base_model", MODEL),
                        "mean {{base_model}}",
                    ),
                ],
                unit="s",
            ),
            Panel(
                "Cycles per second",
                [(rate("treadle_scheduler_cycles_total", "base_model", MODEL), "{{base_model}}")],
                unit="ops",
            ),
            Panel(
                "Scheduler overhead per cycle",
                [
                    (
                        mean("treadle_scheduler_cycle_overhead_seconds", "base_model", MODEL),
                        "{{base_model}}",
                    )
                ],
                unit="s",
                description="Time of a cycle spent outside the trainer: planning, queueing, gRPC.",
            ),
        ],
    ),
    Row(
        "Queue",
        [
            Panel(
                "Queue depth",
                [
                    (
                        f"sum by (base_model) (treadle_scheduler_queue_depth{{{MODEL}}})",
                        "{{base_model}}",
                    )
                ],
                description="Requests waiting for a cycle.",
            ),
            Panel(
                "Queue wait",
                [
                    (quantile(0.5, "treadle_scheduler_queue_wait_seconds", ""), "p50"),
                    (quantile(0.95, "treadle_scheduler_queue_wait_seconds", ""), "p95"),
                ],
                unit="s",
                description="From submit to the start of the cycle that runs the request.",
            ),
            Panel("Live sessions", [("sum(treadle_scheduler_sessions)", "sessions")], kind="stat"),
        ],
    ),
    Row(
        "Work per cycle",
        [
            Panel(
                "Tokens per cycle by tenant",
                [
                    (
                        "sum by (tenant) (increase(treadle_scheduler_billed_tokens_total"
                        f'{{op="forward_backward"}}[{RATE}])) / scalar(sum('
                        f"increase(treadle_scheduler_cycles_total[{RATE}])))",
                        "{{tenant}}",
                    )
                ],
                stack=True,
                description="Forward/backward tokens billed per tenant, per cycle run.",
            ),
            Panel(
                "Tokens per cycle",
                [(mean("treadle_scheduler_cycle_tokens", "base_model", MODEL), "{{base_model}}")],
            ),
            Panel(
                "Ops and tenants per cycle",
                [
                    (
                        mean("treadle_scheduler_cycle_ops", "base_model", MODEL),
                        "ops {{base_model}}",
                    ),
                    (
                        mean("treadle_scheduler_cycle_tenants", "base_model", MODEL),
                        "tenants {{base_model}}",
                    ),
                ],
            ),
            Panel(
                "Optimizer steps per cycle",
                [
                    (
                        f'sum(rate(treadle_scheduler_requests_total{{op="optim_step",code="OK"}}[{RATE}]))'
                        f" / sum(rate(treadle_scheduler_cycles_total[{RATE}]))",
                        "steps per cycle",
                    )
                ],
                description=(
                    "About one per model per cycle when clients pipeline their requests; "
                    "one per two to three cycles when each waits for its previous result."
                ),
            ),
            Panel(
                "Requests by outcome",
                [(rate("treadle_scheduler_requests_total", "op, code"), "{{op}} {{code}}")],
                unit="reqps",
            ),
            Panel(
                "Billed tokens by tenant",
                [
                    (
                        rate("treadle_scheduler_billed_tokens_total", "tenant, op"),
                        "{{tenant}} {{op}}",
                    )
                ],
                unit="short",
                stack=True,
            ),
        ],
    ),
]

HITS = rate("treadle_sampler_adapter_cache_hits_total", "instance")
GATEWAY_REQUESTS = "treadle_gateway_requests_total"
GATEWAY_LATENCY = "treadle_gateway_request_duration_seconds"
LONG_POLL = "retrieve_future includes its long-poll wait (up to long_poll_seconds)."
MISSES = rate("treadle_sampler_adapter_cache_misses_total", "instance")

SERVICES = [
    Row(
        "Trainer",
        [
            Panel(
                "Tokens per second",
                [(rate("treadle_trainer_tokens_total", "instance"), "{{instance}}")],
            ),
            Panel(
                "MFU while busy",
                [
                    (
                        f"{rate('treadle_trainer_flops_total', 'instance')} / "
                        f"({rate('treadle_trainer_busy_seconds_total', 'instance')}"
                        " * sum by (instance) (treadle_trainer_peak_flops))",
                        "{{instance}}",
                    ),
                    ("treadle_trainer_mfu", "last cycle {{instance}}"),
                ],
                unit="percentunit",
                description="Model FLOPs per busy second over the device's measured matmul peak.",
            ),
            Panel(
                "Busy fraction",
                [(rate("treadle_trainer_busy_seconds_total", "instance"), "{{instance}}")],
                unit="percentunit",
                max=1,
            ),
            Panel(
                "Step time (p50)",
                [(quantile(0.5, "treadle_trainer_step_seconds", "phase"), "{{phase}}")],
                unit="s",
            ),
            Panel(
                "Wave size and rows per pass",
                [
                    (mean("treadle_trainer_wave_size", "instance"), "ops per wave {{instance}}"),
                    (mean("treadle_trainer_pass_rows", "instance"), "rows per pass {{instance}}"),
                ],
            ),
            Panel(
                "Adapters",
                [
                    (
                        "sum by (instance) (treadle_trainer_adapters_resident)",
                        "resident {{instance}}",
                    ),
                    ("sum by (instance) (treadle_trainer_adapters_held)", "held {{instance}}"),
                ],
            ),
            Panel(
                "Ops by kind and outcome",
                [(rate("treadle_trainer_ops_total", "kind, code"), "{{kind}} {{code}}")],
                unit="ops",
            ),
        ],
    ),
    Row(
        "Sampler",
        [
            Panel(
                "Tokens per second",
                [(rate("treadle_sampler_tokens_generated_total", "instance"), "{{instance}}")],
            ),
            Panel(
                "Requests by outcome",
                [(rate("treadle_sampler_requests_total", "method, code"), "{{method}} {{code}}")],
                unit="reqps",
            ),
            Panel(
                "Sequences running and requests waiting",
                [
                    (
                        "sum by (instance) (treadle_sampler_running_sequences)",
                        "running {{instance}}",
                    ),
                    (
                        "sum by (instance) (treadle_sampler_waiting_requests)",
                        "waiting {{instance}}",
                    ),
                ],
            ),
            Panel(
                "Batch size",
                [(mean("treadle_sampler_batch_size", "instance"), "{{instance}}")],
            ),
            Panel(
                "Time to first token",
                [
                    (quantile(0.5, "treadle_sampler_time_to_first_token_seconds", ""), "p50"),
                    (quantile(0.95, "treadle_sampler_time_to_first_token_seconds", ""), "p95"),
                ],
                unit="s",
            ),
            Panel(
                "Adapter cache hit ratio",
                [
                    (
                        f"{HITS} / ({HITS} + {MISSES})",
                        "{{instance}}",
                    )
                ],
                unit="percentunit",
                max=1,
            ),
            Panel(
                "Adapter cache",
                [
                    ("sum by (instance) (treadle_sampler_adapters_loaded)", "loaded {{instance}}"),
                    (
                        rate("treadle_sampler_adapter_loads_total", "instance"),
                        "loads/s {{instance}}",
                    ),
                    (
                        rate("treadle_sampler_adapter_evictions_total", "instance"),
                        "evictions/s {{instance}}",
                    ),
                ],
            ),
            Panel(
                "Adapter load time (p95)",
                [(quantile(0.95, "treadle_sampler_adapter_load_seconds", ""), "p95")],
                unit="s",
            ),
            Panel(
                "Sequences finished by reason",
                [(rate("treadle_sampler_sequences_finished_total", "reason"), "{{reason}}")],
                unit="ops",
            ),
        ],
    ),
    Row(
        "Checkpoints",
        [
            Panel(
                "Bytes per second",
                [
                    (
                        "sum(rate(treadle_checkpoints_bytes_written_total[$__rate_interval]))",
                        "written",
                    ),
                    ("sum(rate(treadle_checkpoints_bytes_read_total[$__rate_interval]))", "read"),
                ],
                unit="Bps",
            ),
            Panel(
                "Save and load time (p95)",
                [
                    (quantile(0.95, "treadle_checkpoints_save_seconds", ""), "save"),
                    (quantile(0.95, "treadle_checkpoints_load_seconds", ""), "load"),
                ],
                unit="s",
            ),
            Panel(
                "Requests by outcome",
                [
                    (
                        rate("treadle_checkpoints_requests_total", "method, code"),
                        "{{method}} {{code}}",
                    )
                ],
                unit="reqps",
            ),
            Panel(
                "Expired and orphaned (1h)",
                [
                    ("sum(increase(treadle_checkpoints_expired_total[1h]))", "checkpoints expired"),
                    (
                        "sum(increase(treadle_checkpoints_orphan_objects_deleted_total[1h]))",
                        "orphan objects deleted",
                    ),
                ],
                kind="stat",
            ),
            Panel(
                "Object store errors",
                [
                    (
                        rate("treadle_checkpoints_store_errors_total", "operation, kind"),
                        "{{operation}} {{kind}}",
                    )
                ],
                unit="ops",
                description="Failed S3 calls by operation and kind; no data until the first error.",
            ),
        ],
    ),
    Row(
        "Gateway",
        [
            Panel(
                "Requests by route",
                [(rate(GATEWAY_REQUESTS, "route"), "{{route}}")],
                unit="reqps",
                description="HTTP requests the tinker SDK's gateway answered, by route template.",
            ),
            Panel(
                "Latency by route (p50)",
                [(quantile(0.5, GATEWAY_LATENCY, "route"), "{{route}}")],
                unit="s",
                description=LONG_POLL,
            ),
            Panel(
                "Latency by route (p99)",
                [(quantile(0.99, GATEWAY_LATENCY, "route"), "{{route}}")],
                unit="s",
                description=LONG_POLL,
            ),
            Panel(
                "Errors by route",
                [
                    (
                        rate(GATEWAY_REQUESTS, "route, status", 'status=~"4.."'),
                        "{{status}} {{route}}",
                    ),
                    (
                        rate(GATEWAY_REQUESTS, "route, status", 'status=~"5.."'),
                        "{{status}} {{route}}",
                    ),
                ],
                unit="reqps",
                description=(
                    "4xx: requests refused (bad input, unknown ids, keys); 5xx: the gateway or "
                    "the scheduler behind it failed. No data until the first error."
                ),
            ),
            Panel(
                "Sessions and futures held",
                [
                    ("sum by (instance) (treadle_gateway_sessions)", "sessions {{instance}}"),
                    ("sum by (instance) (treadle_gateway_futures)", "futures {{instance}}"),
                ],
                description=(
                    "Per gateway pod: Tinker sessions it holds (each a scheduler session stream) "
                    "and futures running or finished and not yet dropped."
                ),
            ),
        ],
    ),
]


def _variables(with_model: bool) -> list[dict[str, Any]]:
    variables: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
        }
    ]
    if with_model:
        variables.append(
            {
                "name": "base_model",
                "label": "Base model",
                "type": "query",
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
                "query": {
                    "query": "label_values(treadle_scheduler_cycles_total, base_model)",
                    "refId": "base_model",
                },
                "definition": "label_values(treadle_scheduler_cycles_total, base_model)",
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "current": {},
                "refresh": 2,
                "sort": 1,
                "hide": 0,
            }
        )
    return variables


def _panel(panel: Panel, panel_id: int, x: int, y: int, width: int, height: int) -> dict[str, Any]:
    defaults: dict[str, Any] = {"unit": panel.unit}
    if panel.max is not None:
        defaults["min"], defaults["max"] = 0, panel.max
    if panel.kind == "timeseries":
        defaults["custom"] = {
            "fillOpacity": 10,
            "showPoints": "never",
            "stacking": {"mode": "normal" if panel.stack else "none", "group": "A"},
        }
    return {
        "id": panel_id,
        "type": panel.kind,
        "title": panel.title,
        "description": panel.description,
        "datasource": {"type": "prometheus", "uid": "${datasource}"},
        "gridPos": {"x": x, "y": y, "w": width, "h": height},
        "fieldConfig": {"defaults": defaults, "overrides": []},
        "options": {"legend": {"displayMode": "list", "placement": "bottom", "showLegend": True}},
        "targets": [
            {
                "refId": chr(ord("A") + i),
                "expr": expr,
                "legendFormat": legend,
                "datasource": {"type": "prometheus", "uid": "${datasource}"},
            }
            for i, (expr, legend) in enumerate(panel.targets)
        ],
    }


def dashboard(uid: str, title: str, rows: list[Row], *, with_model: bool) -> dict[str, Any]:
    """The Grafana dashboard model of `rows` (schemaVersion 39, Grafana 10 and later)."""
    panels: list[dict[str, Any]] = []
    next_id, y = 1, 0
    for row in rows:
        panels.append(
            {
                "id": next_id,
                "type": "row",
                "title": row.title,
                "collapsed": False,
                "gridPos": {"x": 0, "y": y, "w": 24, "h": 1},
                "panels": [],
            }
        )
        next_id, y = next_id + 1, y + 1
        for i, panel in enumerate(row.panels):
            x = (i % 3) * 8
            if i and i % 3 == 0:
                y += 8
            panels.append(_panel(panel, next_id, x, y, 8, 8))
            next_id += 1
        y += 8
    return {
        "uid": uid,
        "title": title,
        "tags": ["treadle"],
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "30s",
        "time": {"from": "now-1h", "to": "now"},
        "timezone": "",
        "graphTooltip": 1,
        "templating": {"list": _variables(with_model)},
        "annotations": {"list": []},
        "links": [],
        "panels": panels,
    }


DASHBOARDS = {
    "treadle-cycles.json": dashboard("treadle-cycles", "Treadle / Cycles", CYCLES, with_model=True),
    "treadle-services.json": dashboard(
        "treadle-services", "Treadle / Services", SERVICES, with_model=False
    ),
}


def render(model: dict[str, Any]) -> str:
    """The JSON text of a dashboard as stored in the repository."""
    return json.dumps(model, indent=2) + "\n"


def main() -> int:
    """Write every dashboard; with --check, only report the ones that are out of date."""
    check = "--check" in sys.argv[1:]
    stale = []
    OUT.mkdir(exist_ok=True)
    for name, model in DASHBOARDS.items():
        path = OUT / name
        text = render(model)
        if path.exists() and path.read_text() == text:
            continue
        stale.append(name)
        if not check:
            path.write_text(text)
    if check and stale:
        print(f"out of date: {', '.join(stale)} (run {Path(__file__).name})", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
