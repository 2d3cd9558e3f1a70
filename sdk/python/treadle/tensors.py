"""Conversion between numpy arrays and the wire `Tensor` (dtype + shape + raw little-endian bytes).

Only int64 and float32 travel on the wire; other numeric inputs are cast (integers to int64,
floats to float32) so that lists, numpy arrays and torch tensors all arrive the same way.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from treadle.v1 import common_pb2

_TO_NUMPY: dict[int, np.dtype] = {
    common_pb2.DTYPE_INT64: np.dtype("<i8"),
    common_pb2.DTYPE_FLOAT32: np.dtype("<f4"),
}


def to_numpy_array(value: Any) -> np.ndarray:
    """A list, numpy array or torch tensor as a numpy array of int64 or float32."""
    if hasattr(value, "detach") and hasattr(
        value, "cpu"
    ):  # a torch tensor, without importing torch
        value = value.detach().cpu().numpy()
    array = np.asarray(value)
    if array.dtype == np.bool_ or np.issubdtype(array.dtype, np.integer):
        return array.astype(np.int64, copy=False)
    if np.issubdtype(array.dtype, np.floating):
        return array.astype(np.float32, copy=False)
    raise TypeError(f"unsupported tensor dtype {array.dtype} (use integers or floats)")


def encode(value: Any) -> common_pb2.Tensor:
    """A wire Tensor holding `value`."""
    array = to_numpy_array(value)
    dtype = common_pb2.DTYPE_INT64 if array.dtype == np.int64 else common_pb2.DTYPE_FLOAT32
    data = np.ascontiguousarray(array, dtype=_TO_NUMPY[dtype]).tobytes()
    return common_pb2.Tensor(dtype=dtype, shape=list(array.shape), data=data)


def decode(tensor: common_pb2.Tensor, name: str = "tensor") -> np.ndarray:
    """The numpy array in a wire Tensor; ValueError naming `name` if it is malformed."""
    if tensor.dtype not in _TO_NUMPY:
        raise ValueError(f"{name}: dtype must be DTYPE_INT64 or DTYPE_FLOAT32")
    np_dtype = _TO_NUMPY[tensor.dtype]
    shape = tuple(int(d) for d in tensor.shape)
    if any(d < 0 for d in shape):
        raise ValueError(f"{name}: negative dimension in shape {list(shape)}")
    count = int(np.prod(shape)) if shape else 1
    if count * np_dtype.itemsize != len(tensor.data):
        raise ValueError(
            f"{name}: shape {list(shape)} needs {count * np_dtype.itemsize} bytes, "
            f"got {len(tensor.data)}"
        )
    return np.frombuffer(tensor.data, dtype=np_dtype).reshape(shape)
