"""Training through the gateway's wire: forward_backward in the SDK's protobuf, held in seq_id
order when its chunks arrive out of order (as the SDK sends a large batch), a retry answered
with the same result and run once, a request the gateway cannot translate refused in its place
without holding the ones after it, metrics named `name:reduction`, and other tenants' models
and futures not found."""

from __future__ import annotations

import numpy as np

from treadle_gateway import tinker_public_pb2 as tpb

from .conftest import Http
from .test_middleware import assert_refused

PROTOBUF = {"Content-Type": "application/x-protobuf"}
TOKENS = list(range(10, 42))


def datum(tokens: list[int] = TOKENS) -> tpb.Datum:
    """A cross_entropy datum in the SDK's protobuf: predict each next token."""
    message = tpb.Datum()
    message.model_input.add().encoded_text.tokens = np.asarray(tokens[:-1], "<i4").tobytes()
    targets = np.asarray(tokens[1:], "<i8")
    message.loss_fn_inputs["target_tokens"].CopyFrom(
        tpb.Tensor(dense=targets.tobytes(), dtype=tpb.DTYPE_INT64, shape=[len(targets)])
    )
    weights = np.ones(len(targets), "<f4")
    message.loss_fn_inputs["weights"].CopyFrom(
        tpb.Tensor(dense=weights.tobytes(), dtype=tpb.DTYPE_FLOAT32, shape=[len(weights)])
    )
    return message


def fb(model_id: str, seq_id: int, forward_only: bool = False, **fields: object) -> bytes:
    request = tpb.ForwardBackwardRequest(
        model_id=model_id, seq_id=seq_id, loss_fn="cross_entropy", forward_only=forward_only,
        data=[datum()], **fields,
    )  # fmt: skip
    return request.SerializeToString()


def model(http: Http) -> str:
    session = http.session()
    reply = http.post(
        "/api/v1/create_model",
        {"session_id": session, "model_seq_id": 0, "base_model": "treadle/tiny-llama",
         "lora_config": {"rank": 4}},
    )  # fmt: skip
    created = http.result(reply.json["request_id"]).json
    assert created["model_id"] == reply.json["model_id"] == f"{session}:train:0", created
    return str(created["model_id"])


def output(reply: object) -> tpb.ForwardBackwardOutput:
    assert reply.headers["content-type"] == "application/x-protobuf", reply.raw  # type: ignore[attr-defined]
    return tpb.ForwardBackwardOutput.FromString(reply.raw)  # type: ignore[attr-defined]


def logprobs(out: tpb.ForwardBackwardOutput) -> np.ndarray:
    field = out.loss_fn_outputs[0].fields["logprobs"]
    return np.frombuffer(field.data, "<f4")


def adam(http: Http, model_id: str, seq_id: int) -> dict[str, object]:
    reply = http.post(
        "/api/v1/optim_step",
        {"model_id": model_id, "seq_id": seq_id, "adam_params": {"learning_rate": 1e-2}},
    )
    return http.result(reply.json["request_id"]).json  # type: ignore[no-any-return]


def test_chunks_sent_out_of_order_run_in_seq_id_order(http: Http) -> None:
    model_id = model(http)
    later = http.post("/api/v1/forward_backward", fb(model_id, 2), headers=PROTOBUF)
    first = http.post("/api/v1/forward_backward", fb(model_id, 1), headers=PROTOBUF)
    step = adam(http, model_id, 3)
    assert step["metrics"]["step:max"] == 1.0  # type: ignore[index]
    out_1, out_2 = (output(http.result(r.json["request_id"])) for r in (first, later))
    assert np.allclose(logprobs(out_1), logprobs(out_2))  # both before the step
    assert set(out_1.metrics) == {"loss:sum"} and all(k.count(":") == 1 for k in out_1.metrics)
    assert out_1.loss_fn_outputs[0].num_datums == 1 and len(logprobs(out_1)) == len(TOKENS) - 1
    after = output(http.result(http.post("/api/v1/forward_backward", fb(model_id, 4, True),
                                         headers=PROTOBUF).json["request_id"]))  # fmt: skip
    assert after.metrics["loss:sum"] < out_1.metrics["loss:sum"]  # the step happened


def test_a_retried_request_is_answered_once_with_the_same_result(http: Http) -> None:
    model_id = model(http)
    body = fb(model_id, 1)
    replies = [http.post("/api/v1/forward_backward", body, headers=PROTOBUF) for _ in range(2)]
    results = [output(http.result(r.json["request_id"])) for r in replies]
    assert results[0] == results[1]
    step = adam(http, model_id, 2)
    assert step["metrics"]["step:max"] == 1.0  # type: ignore[index]


def test_an_untranslatable_request_is_refused_in_its_place(http: Http) -> None:
    model_id = model(http)
    request = tpb.ForwardBackwardRequest(model_id=model_id, seq_id=1, loss_fn="cross_entropy")
    image = request.data.add()
    image.model_input.add().image.data = b"\x89PNG"
    refused = http.post("/api/v1/forward_backward", request.SerializeToString(), headers=PROTOBUF)
    failure = http.result(refused.json["request_id"]).json
    assert failure["category"] == "user" and "image chunks are not supported" in failure["error"]
    after = http.post("/api/v1/forward_backward", fb(model_id, 2), headers=PROTOBUF)
    assert output(http.result(after.json["request_id"])).metrics["loss:sum"] > 0  # not held


def test_a_refusal_by_the_contract_is_a_failed_future_naming_the_field(http: Http) -> None:
    model_id = model(http)
    reply = http.post(
        "/api/v1/forward_backward", fb(model_id, 1, loss_fn_config={"beta": 0.1}), headers=PROTOBUF
    )
    failure = http.result(reply.json["request_id"]).json
    assert failure["category"] == "user" and failure["error"].startswith("loss_fn_config.beta")


def test_other_tenants_models_and_futures_are_not_found(http: Http, other: Http) -> None:
    model_id = model(http)
    theirs = other.post("/api/v1/forward_backward", fb(model_id, 1), headers=PROTOBUF)
    assert_refused(theirs, 404, "model_id")
    assert_refused(other.post("/api/v1/get_info", {"model_id": model_id}), 404, "model_id")
    mine = http.post("/api/v1/forward_backward", fb(model_id, 1), headers=PROTOBUF)
    peek = other.post("/api/v1/retrieve_future", {"request_id": mine.json["request_id"]})
    assert_refused(peek, 404, "request_id")
    assert_refused(http.post("/api/v1/retrieve_future", {"request_id": "req-nope"}), 404,
                   "request_id")  # fmt: skip
    assert_refused(http.post("/api/v1/get_info", {"model_id": "no-such-model"}), 404, "model_id")
