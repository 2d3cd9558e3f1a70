"""The sampler's Prometheus endpoint: tokens, batch sizes, time to first token, adapter cache."""

from __future__ import annotations

import urllib.request
from concurrent.futures import ThreadPoolExecutor

from prometheus_client.parser import text_string_to_metric_families

from fixtures.grpc_server import free_port
from sampler.conftest import TINY, Adapter, publish, sampler_server
from treadle.v1 import common_pb2, sampler_pb2, sampler_pb2_grpc
from treadle_sampler.engine import SamplingEngine


def scrape(port: int) -> dict[str, float]:
    """Every sample of the endpoint by name (label sets summed)."""
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as response:
        text = response.read().decode()
    values: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.startswith("treadle_sampler_"):
                values[sample.name] = values.get(sample.name, 0.0) + sample.value
    return values


def request(
    path: str, tenant: str, seed: int, num_samples: int
) -> sampler_pb2.SamplerSampleRequest:
    chunk = common_pb2.ModelInputChunk(encoded_text=common_pb2.EncodedTextChunk(tokens=[3, 4, 5]))
    inner = common_pb2.SampleRequest(
        model_path=path,
        base_model="" if path else TINY,
        prompt=common_pb2.ModelInput(chunks=[chunk]),
        num_samples=num_samples,
        sampling_params=common_pb2.SamplingParams(max_tokens=5, seed=seed),
    )
    return sampler_pb2.SamplerSampleRequest(tenant=tenant, request=inner)


def test_metrics_count_tokens_batches_first_tokens_and_cache_use(
    engine: SamplingEngine, checkpoints: str, tenant: str, adapter_a: Adapter
) -> None:
    path = publish(checkpoints, tenant, "treadle://run-m/sampler_weights/s", adapter_a)
    port = free_port()
    with sampler_server(engine, checkpoints, metrics_port=port) as stub:
        before = scrape(port)

        def tokens(
            call: sampler_pb2.SamplerSampleRequest, stub: sampler_pb2_grpc.SamplerStub = stub
        ) -> int:
            events = list(stub.Sample(call, timeout=60))
            return sum(len(e.sequence.sequence.tokens) for e in events[:-1])

        generated = tokens(request(path, tenant, 1, 2))  # miss, load
        with ThreadPoolExecutor(3) as pool:  # three at once: hits, batched together
            calls = [
                request(path, tenant, 2, 3),
                request(path, tenant, 3, 1),
                request("", "", 4, 2),
            ]
            generated += sum(pool.map(tokens, calls))
        after = scrape(port)

    def delta(name: str) -> float:
        return after.get(name, 0.0) - before.get(name, 0.0)

    assert delta("treadle_sampler_tokens_generated_total") == generated == 8 * 5
    assert delta("treadle_sampler_time_to_first_token_seconds_count") == 4  # one per request
    assert delta("treadle_sampler_time_to_first_token_seconds_sum") > 0
    steps = delta("treadle_sampler_batch_size_count")
    assert 0 < steps and delta("treadle_sampler_batch_size_sum") / steps > 1  # rows per step
    assert delta("treadle_sampler_adapter_cache_misses_total") == 1
    assert delta("treadle_sampler_adapter_cache_hits_total") == 2
    assert delta("treadle_sampler_adapter_loads_total") == 1
    assert delta("treadle_sampler_requests_total") == 4
