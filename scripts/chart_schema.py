"""Keeps the Helm chart's `config` schemas in step with the services' config dataclasses.

Each service's `config` map in the chart's values becomes `TREADLE_<SERVICE>_<FIELD>` variables,
so values.schema.json lists exactly the dataclass fields (with their types and help) minus the
ones the chart sets itself (ports, peer addresses, credentials). This script rewrites those five
definitions in deploy/helm/treadle/values.schema.json; `--check` only reports a difference.

    .venv/bin/python scripts/chart_schema.py [--check]
"""

from __future__ import annotations

import dataclasses
import json
import sys
import types
import typing
from pathlib import Path
from typing import Any

from treadle_checkpoints.config import CheckpointsConfig
from treadle_gateway.config import GatewayConfig
from treadle_sampler.config import SamplerConfig
from treadle_scheduler.config import SchedulerConfig
from treadle_trainer.config import TrainerConfig

SCHEMA = Path(__file__).resolve().parents[1] / "deploy" / "helm" / "treadle" / "values.schema.json"
SERVER_FIELDS = {"host", "port", "metrics_port"}
SAMPLER_SET_BY_CHART = {
    "base_model", "checkpoints", "engine", "adapter_dir", "sglang_url", "sglang_port",
    "sglang_args", "sglang_max_loras_per_batch", "sglang_max_lora_rank",
}  # fmt: skip
CONFIGS: dict[str, tuple[type, set[str]]] = {
    "schedulerConfig": (
        SchedulerConfig,
        SERVER_FIELDS | {"trainers", "samplers", "checkpoints", "api_keys", "api_keys_file"},
    ),
    "gatewayConfig": (GatewayConfig, SERVER_FIELDS | {"scheduler"}),
    "trainerConfig": (TrainerConfig, SERVER_FIELDS | {"base_model", "checkpoints", "offload_dir"}),
    "samplerConfig": (SamplerConfig, SERVER_FIELDS | SAMPLER_SET_BY_CHART),
    "checkpointsConfig": (
        CheckpointsConfig,
        SERVER_FIELDS
        | {"s3_endpoint", "s3_access_key", "s3_secret_key", "s3_secure", "s3_region", "bucket"},
    ),
}
JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean"}


def _json_type(annotation: Any) -> list[str] | str:
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = typing.get_args(annotation)
        kinds = [JSON_TYPES[a] for a in args if a is not type(None)]
        return [*kinds, "null"] if type(None) in args else kinds[0]
    return JSON_TYPES[annotation]


def config_schema(cls: type, managed: set[str]) -> dict[str, Any]:
    """The JSON schema of a `config` map: every field of `cls` the chart does not set."""
    hints = typing.get_type_hints(cls)
    properties = {
        f.name: {"type": _json_type(hints[f.name]), "description": f.metadata.get("help", "")}
        for f in dataclasses.fields(cls)
        if f.name not in managed
    }
    return {
        "type": "object",
        "additionalProperties": False,
        "description": f"{cls.__doc__} Fields become TREADLE_* environment variables.",
        "properties": properties,
    }


def updated(schema: dict[str, Any]) -> dict[str, Any]:
    """`schema` with its config definitions regenerated."""
    definitions = dict(schema.get("definitions", {}))
    for name, (cls, managed) in CONFIGS.items():
        definitions[name] = config_schema(cls, managed)
    return {**schema, "definitions": definitions}


def main() -> int:
    """Rewrite the config definitions (or, with --check, report whether they are stale)."""
    text = SCHEMA.read_text()
    new = json.dumps(updated(json.loads(text)), indent=2) + "\n"
    if new == text:
        return 0
    if "--check" in sys.argv[1:]:
        print(f"{SCHEMA} is out of date: run scripts/chart_schema.py", file=sys.stderr)
        return 1
    SCHEMA.write_text(new)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
