"""Sampling through the gateway's wire: a sampling client of a base model or of saved weights,
asample with one sequence id per sample and its result in the SDK's protobuf, prompt logprobs
with NaN for the first token, a retried submission answered by the same future, session-level
polling of finished samples, and the bad inputs (unknown or another tenant's client, top-k)."""

from __future__ import annotations

import math

import numpy as np

from treadle_gateway import tinker_public_pb2 as tpb

from .conftest import Http
from .test_middleware import assert_refused
from .test_training import PROTOBUF, fb, model

PROMPT = {"chunks": [{"tokens": [5, 6, 7, 8], "type": "encoded_text"}]}


def sampler(http: Http, session: str, **target: str) -> str:
    reply = http.post(
        "/api/v1/create_sampling_session",
        {"session_id": session, "sampling_session_seq_id": 0, **target},
    )
    assert reply.status == 200, reply.raw
    return str(reply.json["sampling_session_id"])


def asample(http: Http, sampling_id: str, seq_id: int, **fields: object) -> object:
    body = {
        "sampling_session_id": sampling_id, "seq_id": seq_id, "num_samples": 3,
        "prompt": PROMPT, "sampling_params": {"max_tokens": 4, "seed": 7}, **fields,
    }  # fmt: skip
    return http.post("/api/v1/asample", body)


def test_a_base_model_samples_with_one_sequence_id_per_sample(http: Http) -> None:
    session = http.session()
    sampling_id = sampler(http, session, base_model="treadle/tiny-llama")
    assert sampling_id == f"{session}:sample:0"
    info = http.get(f"/api/v1/samplers/{sampling_id}").json
    assert info == {
        "sampler_id": sampling_id,
        "base_model": "treadle/tiny-llama",
        "model_path": None,
    }
    submitted = asample(http, sampling_id, 0)
    assert len(submitted.json["sample_sequence_ids"]) == 3  # type: ignore[attr-defined]
    result = http.result(submitted.json["request_id"])  # type: ignore[attr-defined]
    response = tpb.SampleResponse.FromString(result.raw)
    assert len(response.sequences) == 3
    for sequence in response.sequences:
        tokens, logprobs = (
            np.frombuffer(sequence.tokens, "<i4"),
            np.frombuffer(sequence.logprobs, "<f4"),
        )
        assert 1 <= len(tokens) == len(logprobs) <= 4 and np.all(logprobs <= 0)
    retried = asample(http, sampling_id, 0)
    assert retried.json["request_id"] == submitted.json["request_id"]  # type: ignore[attr-defined]


def test_prompt_logprobs_have_none_for_the_first_token(http: Http) -> None:
    sampling_id = sampler(http, http.session(), base_model="treadle/tiny-llama")
    submitted = asample(http, sampling_id, 1, num_samples=1, prompt_logprobs=True,
                        sampling_params={"max_tokens": 1})  # fmt: skip
    response = tpb.SampleResponse.FromString(http.result(submitted.json["request_id"]).raw)  # type: ignore[attr-defined]
    prompt = np.frombuffer(response.prompt_logprobs, "<f4")
    assert len(prompt) == 4 and math.isnan(prompt[0]) and np.all(prompt[1:] < 0)


def test_saved_weights_sample_and_name_their_version(http: Http) -> None:
    model_id = model(http)
    http.result(
        http.post("/api/v1/forward_backward", fb(model_id, 1), headers=PROTOBUF).json["request_id"]
    )
    saved = http.post(
        "/api/v1/save_weights_for_sampler",
        {"model_id": model_id, "seq_id": 2, "sampling_session_seq_id": 5},
    )
    answer = http.result(saved.json["request_id"]).json
    session = model_id.partition(":train:")[0]
    assert answer["sampling_session_id"] == f"{session}:sample:5"
    assert answer["path"].startswith(f"tinker://{model_id}/sampler_weights/")
    info = http.get(f"/api/v1/samplers/{answer['sampling_session_id']}").json
    assert info["model_path"] == answer["path"] and info["base_model"] == "treadle/tiny-llama"
    submitted = asample(http, answer["sampling_session_id"], 0)
    assert tpb.SampleResponse.FromString(http.result(submitted.json["request_id"]).raw).sequences  # type: ignore[attr-defined]


def test_finished_samples_are_polled_per_sampling_client(http: Http) -> None:
    sampling_id = sampler(http, http.session(), base_model="treadle/tiny-llama")
    ids = [asample(http, sampling_id, n).json["request_id"] for n in range(2)]  # type: ignore[attr-defined]
    seen: set[str] = set()
    cursor = 0
    while seen != set(ids):
        polled = http.post(
            "/api/v1/retrieve_futures",
            {"target": {"type": "sampling_session", "sampling_session_id": sampling_id,
                        "cloned_sampler_id": 0}, "prev_cursor": cursor},
        ).json  # fmt: skip
        assert polled["cursor"] >= cursor
        cursor = polled["cursor"]
        seen |= {c["request_id"] for c in polled["completions"] if c["state"] == "finished"}
    for request_id in ids:
        assert tpb.SampleResponse.FromString(http.result(request_id).raw).sequences


def test_bad_sampling_requests_are_refused_naming_the_field(http: Http, other: Http) -> None:
    sampling_id = sampler(http, http.session(), base_model="treadle/tiny-llama")
    assert_refused(asample(other, sampling_id, 0), 404, "sampling_session_id")
    assert_refused(asample(http, "s1:sample:9", 0), 404, "sampling_session_id")
    assert_refused(asample(http, sampling_id, 2, topk_prompt_logprobs=3), 400,
                   "topk_prompt_logprobs")  # fmt: skip
    assert_refused(asample(http, sampling_id, 3, sampling_params={"max_tokens": 4, "top_p": 0}),
                   400, "sampling_params.top_p")  # fmt: skip
    assert_refused(asample(http, sampling_id, 4, num_samples=0), 400, "num_samples")
    assert_refused(asample(http, sampling_id, 5, prompt={"chunks": [{"tokens": ["x"]}]}), 400,
                   "prompt.chunks[0].tokens")  # fmt: skip
