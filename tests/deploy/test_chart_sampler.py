"""The chart's samplers (templates/samplers.yaml) by engine: sglang (the default) runs SGLang
beside the sampler image; vllm runs the -vllm image on a GPU and the -vllm-cpu image without one,
with vLLM's CPU settings, its config fields and a memory-backed /dev/shm; torch runs the sampler
image alone. Every sampler's environment is loaded by the sampler's own config code."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from helm_python.chart import Chart

from treadle_runtime.config import load_config
from treadle_sampler.config import SamplerConfig

from .conftest import CHART, of_kind, render, validate

IMAGE = "ghcr.io/treadle/treadle-sampler:0.1.0"
CPU_VLLM = yaml.safe_load((CHART / "ci" / "cpu-vllm-values.yaml").read_text())
GPU = {
    "requests": {"cpu": "4", "memory": "32Gi", "nvidia.com/gpu": 1},
    "limits": {"memory": "64Gi", "nvidia.com/gpu": 1},
}


def sampler_pods(docs: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Pod spec of each sampler Deployment, by base model name."""
    prefix = "ml-treadle-sampler-"
    return {
        d["metadata"]["name"].removeprefix(prefix): d["spec"]["template"]["spec"]
        for d in of_kind(docs, "Deployment")
        if d["metadata"]["name"].startswith(prefix)
    }


def containers(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in pod["containers"]}


def env(container: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e["value"] for e in container["env"] if "value" in e}


def sampler_config(pod: dict[str, Any]) -> SamplerConfig:
    """The config the sampler container loads from its environment."""
    return load_config(SamplerConfig, [], env(containers(pod)["sampler"]), service="sampler")


def volumes(pod: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {v["name"]: v for v in pod["volumes"]}


def mounts(container: dict[str, Any]) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in container["volumeMounts"]}


def sampler_pod(chart: Chart, values: dict[str, Any]) -> dict[str, Any]:
    """The one sampler pod `values` render, after checking the values and every manifest."""
    chart.validate_schema(values)
    docs = render(chart, values)
    for doc in docs:
        validate(doc)
    (pod,) = sampler_pods(docs).values()
    return pod


def test_sglang_stays_the_default_engine(chart: Chart) -> None:
    pod = sampler_pod(chart, {})
    assert set(containers(pod)) == {"sampler", "sglang"}
    sampler, sglang = containers(pod)["sampler"], containers(pod)["sglang"]
    assert sampler["image"] == IMAGE and [c["image"] for c in pod["initContainers"]] == [IMAGE]
    assert sglang["image"] == "lmsysorg/sglang:v0.5.19-cu129"
    config = sampler_config(pod)
    assert (config.engine, config.sglang_url) == ("sglang", "http://127.0.0.1:30000")
    assert not [name for name in env(sampler) if name.startswith(("VLLM_", "OMP_"))]
    assert "/dev/shm" not in mounts(sampler) and mounts(sglang)["/dev/shm"] == "dshm"
    assert volumes(pod)["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "8Gi"}
    assert "nvidia.com/gpu" not in sampler["resources"].get("limits", {})


def test_cpu_vllm_pool_runs_the_vllm_cpu_image_with_vllm_settings(chart: Chart) -> None:
    pod = sampler_pod(chart, CPU_VLLM)
    assert set(containers(pod)) == {"sampler"} and "initContainers" not in pod
    (sampler,) = containers(pod).values()
    assert sampler["image"] == f"{IMAGE}-vllm-cpu"
    assert "nvidia.com/gpu" not in str(sampler["resources"])
    config = sampler_config(pod)
    assert config.engine == "vllm" and config.sglang_url == ""
    assert (config.vllm_max_loras, config.vllm_max_lora_rank) == (4, 32)
    assert (config.vllm_kv_cache_gib, config.max_adapters) == (2.5, 64)
    variables = env(sampler)
    assert variables["VLLM_CPU_KVCACHE_SPACE"] == "3"  # whole GiB, rounded up
    assert variables["VLLM_CPU_OMP_THREADS_BIND"] == "nobind"
    assert variables["OMP_NUM_THREADS"] == "8"  # the CPU limit
    assert mounts(sampler)["/dev/shm"] == "dshm"
    assert volumes(pod)["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "2Gi"}
    assert pod["nodeSelector"] == {"treadle.dev/pool": "cpu"}


def test_vllm_with_a_gpu_runs_the_cuda_image_without_cpu_settings(chart: Chart) -> None:
    pod = sampler_pod(chart, {"sampler": {"engine": "vllm", "resources": GPU}})
    (sampler,) = containers(pod).values()
    assert sampler["image"] == f"{IMAGE}-vllm"
    assert sampler["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert sampler_config(pod).engine == "vllm"
    assert not [name for name in env(sampler) if name.startswith(("VLLM_", "OMP_"))]
    assert volumes(pod)["dshm"]["emptyDir"] == {"medium": "Memory", "sizeLimit": "1Gi"}


def test_torch_runs_the_sampler_image_alone(chart: Chart) -> None:
    pod = sampler_pod(chart, {"sampler": {"engine": "torch", "resources": GPU}})
    (sampler,) = containers(pod).values()
    assert sampler["image"] == IMAGE and "initContainers" not in pod
    assert sampler_config(pod).engine == "torch"
    assert "dshm" not in volumes(pod) and "/dev/shm" not in mounts(sampler)
    assert not [name for name in env(sampler) if name.startswith(("VLLM_", "OMP_"))]


@pytest.mark.parametrize(
    ("resources", "config", "threads"),
    [
        ({"limits": {"cpu": 4}, "requests": {"cpu": "2"}}, {}, "4"),
        ({"requests": {"cpu": "2500m"}}, {}, "2"),  # the default limits have no cpu
        ({"requests": {"cpu": "500m"}}, {}, "1"),
        ({"limits": {"cpu": 1.5}, "requests": {"cpu": 1}}, {}, "1"),
        ({"limits": {"cpu": "8"}}, {"torch_threads": 3}, "3"),
        ({"requests": {"cpu": None}}, {}, None),  # null drops the default request
    ],
)
def test_cpu_vllm_threads_follow_the_cpu_limit_or_request(
    chart: Chart, resources: dict[str, Any], config: dict[str, Any], threads: str | None
) -> None:
    values = {"sampler": {"engine": "vllm", "resources": resources, "config": config}}
    (sampler,) = containers(sampler_pod(chart, values)).values()
    assert env(sampler).get("OMP_NUM_THREADS") == threads
    assert env(sampler)["VLLM_CPU_KVCACHE_SPACE"] == "1"  # SamplerConfig's 1 GiB


def test_engines_and_images_per_base_model(chart: Chart) -> None:
    values = {
        "image": {"registry": "registry.example.com/treadle", "tag": "1.2.0"},
        "baseModels": [
            {"name": "small", "model": "HuggingFaceTB/SmolLM2-135M-Instruct"},
            {
                "name": "cpu",
                "model": "HuggingFaceTB/SmolLM2-135M-Instruct",
                "sampler": {"engine": "vllm", "vllm": {"cpuThreadsBind": "0-7"}},
            },
            {
                "name": "pinned",
                "model": "/models/Qwen3-8B",
                "sampler": {"engine": "vllm", "image": "mirror.example.com/sampler@sha256:ab12"},
            },
        ],
        "sampler": {"imageTagSuffix": {"vllmCpu": "-cpu"}},
    }
    chart.validate_schema(values)
    pods = sampler_pods(render(chart, values))
    images = {name: containers(pod)["sampler"]["image"] for name, pod in pods.items()}
    assert images == {
        "small": "registry.example.com/treadle/treadle-sampler:1.2.0",
        "cpu": "registry.example.com/treadle/treadle-sampler:1.2.0-cpu",
        "pinned": "mirror.example.com/sampler@sha256:ab12",
    }
    assert {name: sampler_config(pod).engine for name, pod in pods.items()} == {
        "small": "sglang",
        "cpu": "vllm",
        "pinned": "vllm",
    }
    assert env(containers(pods["cpu"])["sampler"])["VLLM_CPU_OMP_THREADS_BIND"] == "0-7"
    assert set(containers(pods["small"])) == {"sampler", "sglang"}
