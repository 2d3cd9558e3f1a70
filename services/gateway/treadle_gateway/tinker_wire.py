"""The tinker SDK's data on the wire, to and from Treadle's messages.

Requests: a forward_backward arrives as the SDK's protobuf `ForwardBackwardRequest` (tinker 0.25
and later) or as JSON (`forward_backward_input` / `forward_input`, tinker 0.24); its datums become
Treadle Datums. Token ids travel as packed int32 and tensors as raw little-endian bytes in the
SDK's dtype (or CSR-sparse); they are turned into Treadle's int64 token ids and its two tensor
dtypes: `target_tokens` as int64, every other input as float32 (the SDK may send float64,
bfloat16 or int32 arrays for them), so that the contract's checks (treadle.contract.losses) see
what Treadle's own SDK would send.

Results: a ForwardBackwardOutput goes back as the SDK's protobuf (one ArrayRecord whose fields
hold every datum's per-token outputs concatenated, cut by byte offsets) or as JSON TensorData per
datum; a SampleResponse as protobuf (packed int32 tokens, float32 logprobs, prompt logprobs with
NaN for the first token) or JSON. Which one is the client's Accept header's choice (results.py).
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from treadle import tensors
from treadle.contract import losses
from treadle.v1 import common_pb2
from treadle_gateway import tinker_public_pb2 as tpb
from treadle_gateway.errors import bad_input

_NUMPY_OF: dict[int, np.dtype] = {
    tpb.DTYPE_FLOAT32: np.dtype("<f4"),
    tpb.DTYPE_INT64: np.dtype("<i8"),
    tpb.DTYPE_INT32: np.dtype("<i4"),
}
_TINKER_DTYPE = {np.dtype("<f4"): tpb.DTYPE_FLOAT32, np.dtype("<i8"): tpb.DTYPE_INT64}
JSON_DTYPES = {"float32": np.float32, "int64": np.int64}


# ---------------------------------------------------------------------- requests
def _tensor_array(tensor: tpb.Tensor, field: str) -> np.ndarray:
    """A tinker Tensor (dense or CSR-sparse) as a dense numpy array."""
    dtype: np.dtype
    if tensor.dtype == tpb.DTYPE_BFLOAT16:
        dtype = np.dtype("<u2")
    elif tensor.dtype in _NUMPY_OF:
        dtype = _NUMPY_OF[tensor.dtype]
    else:
        raise bad_input(f"{field}.dtype", f"unsupported tensor dtype {tensor.dtype}")
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise bad_input(f"{field}.shape", f"negative dimension in {list(shape)}")
    if tensor.WhichOneof("encoding") == "sparse_csr":
        array = _dense_from_csr(tensor.sparse_csr, dtype, shape, field)
    else:
        count = math.prod(shape) if shape else 1
        if count * dtype.itemsize != len(tensor.dense):
            raise bad_input(
                field,
                f"shape {list(shape)} needs {count * dtype.itemsize} bytes, got "
                f"{len(tensor.dense)}",
            )
        array = np.frombuffer(tensor.dense, dtype=dtype).reshape(shape)
    if tensor.dtype == tpb.DTYPE_BFLOAT16:  # the upper half of a float32
        array = (array.astype(np.uint32) << 16).view(np.float32)
    return array


def _dense_from_csr(
    csr: tpb.SparseCsr, dtype: np.dtype, shape: tuple[int, ...], field: str
) -> np.ndarray:
    if len(shape) != 2:
        raise bad_input(f"{field}.shape", f"a sparse tensor must be 2-D, got {list(shape)}")
    values = np.frombuffer(csr.values, dtype=dtype)
    rows = np.frombuffer(csr.crow_indices, dtype="<i8")
    cols = np.frombuffer(csr.col_indices, dtype="<i8")
    consistent = len(rows) == shape[0] + 1 and len(cols) == len(values)
    if not consistent or (len(rows) and rows[-1] != len(values)):
        raise bad_input(f"{field}.sparse_csr", "crow_indices, col_indices and values disagree")
    if len(cols) and (cols.min() < 0 or cols.max() >= shape[1]):
        raise bad_input(f"{field}.sparse_csr", "a column index is outside the shape")
    dense = np.zeros(shape, dtype=dtype)
    row_of = np.repeat(np.arange(shape[0]), np.diff(rows))
    dense[row_of, cols] = values
    return dense


def _loss_input(name: str, array: np.ndarray) -> common_pb2.Tensor:
    """A loss input in the dtype the contract wants for it (target_tokens int64, others float32;
    its shape is the trainer's to check)."""
    wanted = np.int64 if losses.INPUT_DTYPES.get(name) == "int64" else np.float32
    return tensors.encode(np.ascontiguousarray(array, dtype=wanted))


def _chunks(model_input: Sequence[tpb.Chunk], field: str) -> common_pb2.ModelInput:
    message = common_pb2.ModelInput()
    for j, chunk in enumerate(model_input):
        kind = chunk.WhichOneof("chunk")
        if kind != "encoded_text":
            raise bad_input(f"{field}[{j}]", f"{kind} chunks are not supported: only token ids")
        tokens = chunk.encoded_text.tokens
        if len(tokens) % 4:
            raise bad_input(f"{field}[{j}].tokens", "is not a whole number of int32 ids")
        message.chunks.add().encoded_text.tokens.extend(np.frombuffer(tokens, "<i4").tolist())
    return message


def fb_from_proto(
    request: tpb.ForwardBackwardRequest,
) -> common_pb2.ForwardBackwardRequest:
    """A Treadle ForwardBackwardRequest from the SDK's protobuf one (GatewayError naming the
    field of what cannot be translated)."""
    config: dict[str, float] = dict(request.loss_fn_config)
    for key, value in request.loss_fn_config_v2.items():
        if value.WhichOneof("value") == "text":
            raise bad_input(f"loss_fn_config.{key}", "text values are not supported")
        config[key] = value.number
    message = common_pb2.ForwardBackwardRequest(
        loss_fn=request.loss_fn, loss_fn_config=config, forward_only=request.forward_only
    )
    for i, datum in enumerate(request.data):
        treadle_datum = message.data.add()
        treadle_datum.model_input.CopyFrom(_chunks(datum.model_input, f"data[{i}].model_input"))
        for name, tensor in datum.loss_fn_inputs.items():
            field = f"data[{i}].loss_fn_inputs.{name}"
            treadle_datum.loss_fn_inputs[name].CopyFrom(
                _loss_input(name, _tensor_array(tensor, field))
            )
    return message


def _json_tensor(value: Any, field: str) -> np.ndarray:
    if not isinstance(value, Mapping) or "data" not in value:
        raise bad_input(field, "expected TensorData {data, dtype, shape}")
    dtype = JSON_DTYPES.get(str(value.get("dtype", "float32")))
    if dtype is None:
        raise bad_input(f"{field}.dtype", f"must be int64 or float32, got {value.get('dtype')!r}")
    try:
        array = np.asarray(value["data"], dtype=dtype)
        shape = value.get("shape")
        return array.reshape(shape) if shape is not None else array
    except (TypeError, ValueError) as exc:
        raise bad_input(field, f"not a tensor: {exc}") from None


def json_chunks(model_input: Any, field: str) -> common_pb2.ModelInput:
    """A JSON ModelInput (`{"chunks": [{"tokens": [...], "type": "encoded_text"}]}`)."""
    chunks = model_input.get("chunks") if isinstance(model_input, Mapping) else None
    if not isinstance(chunks, list):
        raise bad_input(field, 'expected {"chunks": [...]}')
    message = common_pb2.ModelInput()
    for j, chunk in enumerate(chunks):
        kind = chunk.get("type", "encoded_text") if isinstance(chunk, Mapping) else None
        if kind != "encoded_text":
            raise bad_input(f"{field}.chunks[{j}]", f"{kind} chunks are not supported")
        tokens = chunk.get("tokens")
        if not isinstance(tokens, list) or not all(type(t) is int for t in tokens):
            raise bad_input(f"{field}.chunks[{j}].tokens", "must be a list of integers")
        message.chunks.add().encoded_text.tokens.extend(tokens)
    return message


def fb_from_json(body: Mapping[str, Any], forward_only: bool) -> common_pb2.ForwardBackwardRequest:
    """A Treadle ForwardBackwardRequest from tinker 0.24's JSON body."""
    name = "forward_input" if forward_only else "forward_backward_input"
    inner = body.get(name)
    if not isinstance(inner, Mapping):
        raise bad_input(name, "is required")
    data = inner.get("data")
    if not isinstance(data, list):
        raise bad_input(f"{name}.data", "must be a list of datums")
    config = inner.get("loss_fn_config") or {}
    if not isinstance(config, Mapping):
        raise bad_input(f"{name}.loss_fn_config", "must be an object")
    try:
        numbers = {str(k): float(v) for k, v in config.items()}
    except (TypeError, ValueError):
        raise bad_input(f"{name}.loss_fn_config", "values must be numbers") from None
    message = common_pb2.ForwardBackwardRequest(
        loss_fn=str(inner.get("loss_fn") or ""), loss_fn_config=numbers, forward_only=forward_only
    )
    for i, datum in enumerate(data):
        if not isinstance(datum, Mapping):
            raise bad_input(f"data[{i}]", "must be an object")
        treadle_datum = message.data.add()
        treadle_datum.model_input.CopyFrom(
            json_chunks(datum.get("model_input"), f"data[{i}].model_input")
        )
        inputs = datum.get("loss_fn_inputs") or {}
        if not isinstance(inputs, Mapping):
            raise bad_input(f"data[{i}].loss_fn_inputs", "must be an object")
        for input_name, value in inputs.items():
            field = f"data[{i}].loss_fn_inputs.{input_name}"
            treadle_datum.loss_fn_inputs[str(input_name)].CopyFrom(
                _loss_input(str(input_name), _json_tensor(value, field))
            )
    return message


# ---------------------------------------------------------------------- results
def _batched(arrays: Sequence[np.ndarray]) -> tpb.BatchedTensor:
    """Per-datum 1-D arrays as one BatchedTensor: bytes concatenated, cut by byte offsets."""
    dtype = arrays[0].dtype if arrays else np.dtype("<f4")
    data = b"".join(a.tobytes() for a in arrays)
    offsets = np.cumsum([0, *(a.nbytes for a in arrays)], dtype="<i8")
    return tpb.BatchedTensor(
        data=data, offsets=offsets.tobytes(), dtype=_TINKER_DTYPE.get(dtype, tpb.DTYPE_FLOAT32)
    )


def _outputs(output: common_pb2.ForwardBackwardOutput) -> dict[str, list[np.ndarray]]:
    """Each output name's per-datum arrays, in datum order."""
    names = list(output.loss_fn_outputs[0].outputs) if output.loss_fn_outputs else []
    return {
        name: [tensors.decode(o.outputs[name], name) for o in output.loss_fn_outputs]
        for name in names
    }


def fb_output_proto(output: common_pb2.ForwardBackwardOutput) -> bytes:
    """The SDK's protobuf ForwardBackwardOutput."""
    record = tpb.ArrayRecord(type_tag="ArrayRecord", num_datums=len(output.loss_fn_outputs))
    for name, arrays in _outputs(output).items():
        record.fields[name].CopyFrom(_batched(arrays))
    message = tpb.ForwardBackwardOutput(
        loss_fn_output_type="ArrayRecord", loss_fn_outputs=[record], metrics=output.metrics
    )
    return message.SerializeToString()


def _tensor_json(array: np.ndarray) -> dict[str, Any]:
    dtype = "int64" if array.dtype.kind in "iu" else "float32"
    return {"data": array.reshape(-1).tolist(), "dtype": dtype, "shape": list(array.shape)}


def fb_output_json(output: common_pb2.ForwardBackwardOutput) -> dict[str, Any]:
    """The SDK's JSON ForwardBackwardOutput (tinker 0.24)."""
    per_name = _outputs(output)
    return {
        "loss_fn_output_type": "ArrayRecord",
        "loss_fn_outputs": [
            {name: _tensor_json(arrays[i]) for name, arrays in per_name.items()}
            for i in range(len(output.loss_fn_outputs))
        ],
        "metrics": dict(output.metrics),
    }


STOP_REASONS = {common_pb2.STOP_REASON_LENGTH: "length"}  # anything else ended on a stop


def _prompt_logprobs(response: common_pb2.SampleResponse) -> np.ndarray:
    """One float32 per prompt token, NaN for the first (it has no prefix to be scored on)."""
    return np.array([math.nan, *response.prompt_logprobs], dtype="<f4")


def sample_proto(response: common_pb2.SampleResponse, prompt_logprobs: bool) -> bytes:
    """The SDK's protobuf SampleResponse."""
    message = tpb.SampleResponse()
    for sequence in response.sequences:
        message.sequences.add(
            stop_reason=(
                tpb.STOP_REASON_LENGTH
                if sequence.stop_reason == common_pb2.STOP_REASON_LENGTH
                else tpb.STOP_REASON_STOP
            ),
            tokens=np.asarray(sequence.tokens, dtype="<i4").tobytes(),
            logprobs=np.asarray(sequence.logprobs, dtype="<f4").tobytes(),
        )
    if prompt_logprobs:
        message.prompt_logprobs = _prompt_logprobs(response).tobytes()
    return message.SerializeToString()


def sample_json(response: common_pb2.SampleResponse, prompt_logprobs: bool) -> dict[str, Any]:
    """The SDK's JSON SampleResponse (tinker 0.24)."""
    return {
        "sequences": [
            {
                "stop_reason": STOP_REASONS.get(s.stop_reason, "stop"),
                "tokens": list(s.tokens),
                "logprobs": list(s.logprobs),
            }
            for s in response.sequences
        ],
        "prompt_logprobs": [None, *response.prompt_logprobs] if prompt_logprobs else None,
        "topk_prompt_logprobs": None,
        "prompt_cache_hit_tokens": 0,
        "type": "sample",
    }
