"""The Sampler service end to end: a real server on tiny-llama, adapters from real checkpoints."""

from __future__ import annotations

from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import grpc
import pytest
import torch

from sampler.conftest import TINY, Adapter, publish, reference_logprobs, sampler_server
from treadle.v1 import common_pb2, sampler_pb2, sampler_pb2_grpc
from treadle_models import load_tokenizer
from treadle_sampler.engine import SamplingEngine

TENANT = "acme"
PATH_A = "treadle://run-a/sampler_weights/final"
PATH_B = "treadle://run-b/sampler_weights/final"
PATH_QWEN = "treadle://run-q/sampler_weights/final"
PROMPT = list(range(1000, 1024))


@pytest.fixture(scope="module")
def stub(
    engine: SamplingEngine, checkpoints: str, adapter_a: Adapter, adapter_b: Adapter
) -> Iterator[sampler_pb2_grpc.SamplerStub]:
    """A sampler whose tenant `acme` has adapters A and B (and one trained on another model)."""
    publish(checkpoints, TENANT, PATH_A, adapter_a)
    publish(checkpoints, TENANT, PATH_B, adapter_b)
    publish(checkpoints, TENANT, PATH_QWEN, adapter_b, base_model="treadle/tiny-qwen2")
    with sampler_server(engine, checkpoints) as running:
        yield running


def request(
    path: str = "",
    prompt: list[int] | None = None,
    num_samples: int = 1,
    tenant: str = TENANT,
    include_prompt_logprobs: bool = False,
    base_model: str | None = None,
    **params: Any,
) -> sampler_pb2.SamplerSampleRequest:
    """A sampling request (base model when `path` is empty)."""
    params.setdefault("max_tokens", 8)
    chunk = common_pb2.ModelInputChunk(
        encoded_text=common_pb2.EncodedTextChunk(tokens=PROMPT if prompt is None else prompt)
    )
    inner = common_pb2.SampleRequest(
        model_path=path,
        base_model=("" if path else TINY) if base_model is None else base_model,
        prompt=common_pb2.ModelInput(chunks=[chunk]),
        num_samples=num_samples,
        sampling_params=common_pb2.SamplingParams(**params),
        include_prompt_logprobs=include_prompt_logprobs,
    )
    return sampler_pb2.SamplerSampleRequest(tenant=tenant, request=inner)


def sample(
    stub: sampler_pb2_grpc.SamplerStub, call: sampler_pb2.SamplerSampleRequest
) -> tuple[list[common_pb2.SampledSequence], common_pb2.SampleResponse]:
    """The sequences of a Sample stream in index order, and its final message."""
    events = list(stub.Sample(call, timeout=60))
    assert events[-1].WhichOneof("event") == "done"
    indexed = [event.sequence for event in events[:-1]]
    assert sorted(s.index for s in indexed) == list(range(call.request.num_samples))
    return [s.sequence for s in sorted(indexed, key=lambda s: s.index)], events[-1].done


def logprobs_request(
    tokens: list[int], path: str = "", tenant: str = TENANT
) -> sampler_pb2.SamplerComputeLogprobsRequest:
    chunk = common_pb2.ModelInputChunk(encoded_text=common_pb2.EncodedTextChunk(tokens=tokens))
    inner = common_pb2.ComputeLogprobsRequest(
        model_path=path,
        base_model="" if path else TINY,
        prompt=common_pb2.ModelInput(chunks=[chunk]),
    )
    return sampler_pb2.SamplerComputeLogprobsRequest(tenant=tenant, request=inner)


def test_a_fixed_seed_gives_the_same_tokens(stub: sampler_pb2_grpc.SamplerStub) -> None:
    first, _ = sample(stub, request(PATH_A, num_samples=3, seed=11, max_tokens=10))
    again, _ = sample(stub, request(PATH_A, num_samples=3, seed=11, max_tokens=10))
    other, _ = sample(stub, request(PATH_A, num_samples=3, seed=12, max_tokens=10))
    assert [s.tokens for s in first] == [s.tokens for s in again]
    assert len({tuple(s.tokens) for s in first}) == 3  # sequence i draws with seed + i
    assert [s.tokens for s in first] != [s.tokens for s in other]
    assert first[1].tokens == other[0].tokens  # seed 11 + 1 is seed 12 + 0


def test_adapters_and_base_model_sample_differently(stub: sampler_pb2_grpc.SamplerStub) -> None:
    greedy = {"temperature": 0.0, "max_tokens": 12}
    results = {path: sample(stub, request(path, **greedy)) for path in ("", PATH_A, PATH_B)}
    tokens = {path: tuple(seqs[0].tokens) for path, (seqs, _) in results.items()}
    assert len(set(tokens.values())) == 3
    assert {path: done.weights_version for path, (_, done) in results.items()} == {
        "": TINY,
        PATH_A: PATH_A,
        PATH_B: PATH_B,
    }
    scored = PROMPT + list(tokens[""])
    base_lp, a_lp = (
        stub.ComputeLogprobs(logprobs_request(scored, p)).logprobs for p in ("", PATH_A)
    )
    assert max(abs(x - y) for x, y in zip(base_lp, a_lp, strict=True)) > 1e-3


def test_sampled_logprobs_equal_a_plain_peft_forward(
    stub: sampler_pb2_grpc.SamplerStub, adapter_a: Adapter, adapter_b: Adapter
) -> None:
    for path, adapter in ((PATH_A, adapter_a), (PATH_B, adapter_b)):
        sequences, done = sample(
            stub, request(path, num_samples=2, seed=3, max_tokens=16, include_prompt_logprobs=True)
        )
        for sequence in sequences:
            expected = reference_logprobs(adapter.model, PROMPT, list(sequence.tokens))
            assert len(sequence.logprobs) == len(sequence.tokens) == 16
            assert torch.allclose(torch.tensor(list(sequence.logprobs)), expected, atol=1e-4)
        expected_prompt = reference_logprobs(adapter.model, PROMPT[:1], PROMPT[1:])
        assert len(done.prompt_logprobs) == len(PROMPT) - 1
        assert torch.allclose(torch.tensor(list(done.prompt_logprobs)), expected_prompt, atol=1e-4)


def test_compute_logprobs_scores_every_token_after_the_first(
    stub: sampler_pb2_grpc.SamplerStub, adapter_a: Adapter, base_model: torch.nn.Module
) -> None:
    tokens = [5, 17, 900, 31, 4000]
    reply = stub.ComputeLogprobs(logprobs_request(tokens, PATH_A))
    assert reply.weights_version == PATH_A
    assert len(reply.logprobs) == len(tokens) - 1
    first = reference_logprobs(adapter_a.model, tokens[:1], tokens[1:2])
    assert reply.logprobs[0] == pytest.approx(float(first[0]), abs=1e-4)  # log p(t1 | t0)
    expected = reference_logprobs(adapter_a.model, tokens[:1], tokens[1:])
    assert torch.allclose(torch.tensor(list(reply.logprobs)), expected, atol=1e-4)
    base = stub.ComputeLogprobs(logprobs_request(tokens))
    assert base.weights_version == TINY
    assert torch.allclose(
        torch.tensor(list(base.logprobs)),
        reference_logprobs(base_model, tokens[:1], tokens[1:]),
        atol=1e-4,
    )
    assert list(stub.ComputeLogprobs(logprobs_request([7])).logprobs) == []


def test_stop_token_ids_stop_strings_and_max_tokens(stub: sampler_pb2_grpc.SamplerStub) -> None:
    free, _ = sample(stub, request(PATH_A, seed=21, max_tokens=24))
    tokens = list(free[0].tokens)
    assert free[0].stop_reason == common_pb2.STOP_REASON_LENGTH and len(tokens) == 24

    stop_id = tokens[6]
    cut = tokens.index(stop_id) + 1
    by_id, _ = sample(stub, request(PATH_A, seed=21, max_tokens=24, stop_token_ids=[stop_id]))
    assert list(by_id[0].tokens) == tokens[:cut]  # the stop token is kept
    assert by_id[0].stop_reason == common_pb2.STOP_REASON_STOP
    assert list(by_id[0].logprobs) == pytest.approx(list(free[0].logprobs)[:cut], abs=1e-5)

    tokenizer = load_tokenizer(TINY)
    text = tokenizer.decode(tokens[:9])
    stop = text[len(tokenizer.decode(tokens[:7])) - 2 :][:5]  # spans a token boundary
    cut = next(k for k in range(1, 25) if stop in tokenizer.decode(tokens[:k]))
    by_text, _ = sample(stub, request(PATH_A, seed=21, max_tokens=24, stop_strings=[stop]))
    assert list(by_text[0].tokens) == tokens[:cut]  # the tokens completing it are kept
    assert by_text[0].stop_reason == common_pb2.STOP_REASON_STOP


def test_num_samples_sequences_each_of_max_tokens(stub: sampler_pb2_grpc.SamplerStub) -> None:
    sequences, done = sample(stub, request(num_samples=5, seed=1, max_tokens=3))
    assert len(sequences) == 5 and not done.sequences and not done.prompt_logprobs
    assert all(
        len(s.tokens) == 3 and s.stop_reason == common_pb2.STOP_REASON_LENGTH for s in sequences
    )


TEMPERATURE, TOP_P = "sampling_params.temperature", "sampling_params.top_p"
STOPS, STOP_IDS = "sampling_params.stop_strings", "sampling_params.stop_token_ids"
BAD_REQUESTS = {
    "empty prompt": ({"prompt": []}, "prompt"),
    "token id too big": ({"prompt": [1, 49152]}, "prompt"),
    "negative token id": ({"prompt": [-1]}, "prompt"),
    "max_tokens 0": ({"max_tokens": 0}, "sampling_params.max_tokens"),
    "over max_seq_len": ({"max_tokens": 2048}, "sampling_params.max_tokens"),
    "num_samples 0": ({"num_samples": 0}, "num_samples"),
    "num_samples over limit": ({"num_samples": 9}, "num_samples"),
    "negative temperature": ({"temperature": -0.5}, TEMPERATURE),
    "top_p 0": ({"top_p": 0.0}, TOP_P),
    "top_p above 1": ({"top_p": 1.5}, TOP_P),
    "stop id too big": ({"stop_token_ids": [10**6]}, STOP_IDS),
    "empty stop string": ({"stop_strings": ["x", ""]}, STOPS),
    "other base model": ({"base_model": "treadle/tiny-qwen2"}, "base_model"),
    "no base model": ({"base_model": ""}, "base_model"),
    "malformed path": ({"path": "s3://bucket/x"}, "model_path"),
    "state checkpoint": ({"path": "treadle://run-a/weights/final"}, "model_path"),
    "adapter of another model": ({"path": PATH_QWEN}, "model_path"),
    "no tenant": ({"path": PATH_A, "tenant": ""}, "tenant"),
}


@pytest.mark.parametrize(("changes", "field"), BAD_REQUESTS.values(), ids=BAD_REQUESTS.keys())
def test_bad_requests_name_their_field_and_the_server_keeps_serving(
    stub: sampler_pb2_grpc.SamplerStub, changes: dict[str, Any], field: str
) -> None:
    bad = request(**changes)
    with pytest.raises(grpc.RpcError) as caught:
        sample(stub, bad)
    assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert caught.value.details().startswith(f"{field}:")
    sequences, _ = sample(stub, request(PATH_A, seed=0, max_tokens=2))
    assert len(sequences[0].tokens) == 2


def test_unknown_or_foreign_adapter_paths_are_not_found(stub: sampler_pb2_grpc.SamplerStub) -> None:
    for call in (
        request("treadle://run-a/sampler_weights/missing"),
        request(PATH_A, tenant="someone-else"),
    ):
        with pytest.raises(grpc.RpcError) as caught:
            sample(stub, call)
        assert caught.value.code() == grpc.StatusCode.NOT_FOUND
        assert caught.value.details().startswith("model_path:")
    with pytest.raises(grpc.RpcError) as caught:
        stub.ComputeLogprobs(logprobs_request([1, 2], PATH_A, tenant="someone-else"))
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND


def test_a_failing_request_does_not_disturb_concurrent_ones(
    stub: sampler_pb2_grpc.SamplerStub,
) -> None:
    calls = [
        request(PATH_A, num_samples=2, seed=4, max_tokens=20),
        request("treadle://run-x/sampler_weights/none", max_tokens=20),
        request(PATH_B, seed=5, max_tokens=20),
        request(num_samples=3, seed=6, max_tokens=20),
    ]
    expected = [sample(stub, calls[i])[0] for i in (0, 2, 3)]

    def outcome(call: sampler_pb2.SamplerSampleRequest) -> Any:
        try:
            return sample(stub, call)[0]
        except grpc.RpcError as exc:
            return exc.code()

    with ThreadPoolExecutor(len(calls)) as pool:
        results = list(pool.map(outcome, calls))
    assert results[1] == grpc.StatusCode.NOT_FOUND
    for got, want in zip([results[i] for i in (0, 2, 3)], expected, strict=True):
        assert [s.tokens for s in got] == [s.tokens for s in want]
        for x, y in zip(got, want, strict=True):
            assert list(x.logprobs) == pytest.approx(list(y.logprobs), abs=1e-5)


def test_a_tinker_path_names_the_canonical_version(stub: sampler_pb2_grpc.SamplerStub) -> None:
    tinker = PATH_A.replace("treadle://", "tinker://")
    sequences, done = sample(stub, request(tinker, seed=8))
    assert done.weights_version == PATH_A
    assert sequences[0].tokens == sample(stub, request(PATH_A, seed=8))[0][0].tokens


def test_sampler_info_names_the_model_the_engine_and_the_loaded_adapters(
    stub: sampler_pb2_grpc.SamplerStub,
) -> None:
    sample(stub, request(PATH_A, max_tokens=1))
    info = stub.GetSamplerInfo(sampler_pb2.GetSamplerInfoRequest())
    assert info.engine == "vllm"
    assert [(m.name, m.vocab_size, m.max_seq_len) for m in info.models] == [(TINY, 49152, 2048)]
    assert PATH_A in info.cached_adapters
