"""values.schema.json: wrong types and unknown keys are refused with a message naming the key,
and the `config` maps accept exactly the services' config fields (scripts/chart_schema.py)."""

from __future__ import annotations

import importlib.util
import json
from typing import Any

import pytest
import yaml
from helm_python.chart import Chart
from helm_python.errors import HelmValuesError

from .conftest import CHART, REPO

_spec = importlib.util.spec_from_file_location("chart_schema", REPO / "scripts" / "chart_schema.py")
assert _spec is not None and _spec.loader is not None
chart_schema = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(chart_schema)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"scheduler": {"port": "8470"}}, "at '/scheduler/port': got string, want integer"),
        ({"sampler": {"replicas": 1.5}}, "at '/sampler/replicas': got number, want integer"),
        ({"minio": {"enabled": "yes"}}, "at '/minio/enabled': got string, want boolean"),
        (
            {"trainer": {"config": {"max_pass_tokens": "lots"}}},
            "at '/trainer/config/max_pass_tokens': got string, want integer",
        ),
        ({"sampler": {"engine": "vllm-cpu"}}, "at '/sampler/engine'"),  # an image, not an engine
        (
            {"sampler": {"config": {"vllm_max_lora_rank": "64"}}},
            "at '/sampler/config/vllm_max_lora_rank': got string, want integer",
        ),
        (
            {"baseModels": [{"name": "a", "model": "b", "sampler": {"image": 1}}]},
            "at '/baseModels/0/sampler/image': got number, want string",
        ),
        ({"gateway": {"replicas": -1}}, "at '/gateway/replicas': minimum: got -1, want 1"),
        (
            {"gateway": {"config": {"long_poll_seconds": "20s"}}},
            "at '/gateway/config/long_poll_seconds': got string, want number",
        ),
        (
            {"gateway": {"service": {"sessionAffinity": "Cookie"}}},
            "at '/gateway/service/sessionAffinity': value must be one of",
        ),
        ({"gateway": {"ingress": {"path": "api"}}}, "at '/gateway/ingress/path'"),
        ({"networkPolicy": {"dnsTo": []}}, "at '/networkPolicy/dnsTo': minItems"),
    ],
)
def test_wrong_type_is_refused_naming_the_key(
    chart: Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(HelmValuesError) as refused:
        chart.validate_schema(values)
    assert message in str(refused.value)


@pytest.mark.parametrize(
    ("values", "message"),
    [
        ({"schedular": {}}, "additional properties 'schedular' not allowed"),
        ({"scheduler": {"replicas": 2}}, "at '/scheduler': additional properties 'replicas'"),
        (
            {"trainer": {"config": {"max_seq_length": 4096}}},
            "at '/trainer/config': additional properties 'max_seq_length' not allowed",
        ),
        (
            {"trainer": {"config": {"base_model": "x"}}},
            "at '/trainer/config': additional properties 'base_model' not allowed",
        ),
        (
            {"baseModels": [{"name": "a", "model": "b", "gpus": 2}]},
            "at '/baseModels/0': additional properties 'gpus' not allowed",
        ),
        (
            {"gateway": {"config": {"long_poll": 20}}},
            "at '/gateway/config': additional properties 'long_poll' not allowed",
        ),
        (
            {"gateway": {"config": {"scheduler": "elsewhere:8470"}}},
            "at '/gateway/config': additional properties 'scheduler' not allowed",
        ),
        (
            {"sampler": {"vllm": {"maxLoras": 4}}},
            "at '/sampler/vllm': additional properties 'maxLoras' not allowed",
        ),
        (
            {"sampler": {"imageTagSuffix": {"cpu": "-cpu"}}},
            "at '/sampler/imageTagSuffix': additional properties 'cpu' not allowed",
        ),
        (
            {"gateway": {"ingress": {"hosts": ["tinker.example.com"]}}},
            "at '/gateway/ingress': additional properties 'hosts' not allowed",
        ),
    ],
)
def test_unknown_key_is_refused_naming_it(
    chart: Chart, values: dict[str, Any], message: str
) -> None:
    with pytest.raises(HelmValuesError) as refused:
        chart.validate_schema(values)
    assert message in str(refused.value)


def test_missing_and_malformed_base_models_are_refused(chart: Chart) -> None:
    with pytest.raises(HelmValuesError, match="missing property 'model'"):
        chart.validate_schema({"baseModels": [{"name": "qwen"}]})
    with pytest.raises(HelmValuesError, match="/baseModels/0/name"):
        chart.validate_schema({"baseModels": [{"name": "Qwen_3", "model": "/models/q"}]})


@pytest.mark.parametrize("path", sorted((CHART / "ci").glob("*.yaml")), ids=lambda p: p.name)
def test_shipped_values_files_pass(chart: Chart, path: Any) -> None:
    chart.validate_schema(yaml.safe_load(path.read_text()))


def test_config_schemas_match_the_services_config_fields() -> None:
    schema = json.loads((CHART / "values.schema.json").read_text())
    assert chart_schema.updated(schema) == schema, "run scripts/chart_schema.py"
    trainer = schema["definitions"]["trainerConfig"]["properties"]
    assert trainer["max_resident_adapters"]["type"] == "integer"
    assert trainer["peak_flops"]["type"] == "number"
    assert "base_model" not in trainer  # the chart sets it from baseModels
    gateway = schema["definitions"]["gatewayConfig"]["properties"]
    assert gateway["long_poll_seconds"]["type"] == "number"
    assert gateway["session_polling"]["type"] == "boolean"
    assert not {"host", "port", "metrics_port", "scheduler"} & set(gateway)  # the chart's own
