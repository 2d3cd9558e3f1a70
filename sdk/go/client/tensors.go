// Tensor encoding: 1-D tensors from Go slices and back, as little-endian raw bytes.

package client

import (
	"encoding/binary"
	"fmt"
	"math"

	"treadle/sdk/go/treadlev1"
)

// Int64Tensor encodes values as a 1-D DTYPE_INT64 tensor (little-endian raw bytes).
func Int64Tensor(values []int64) *treadlev1.Tensor {
	data := make([]byte, 8*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint64(data[8*i:], uint64(v))
	}
	return &treadlev1.Tensor{
		Dtype: treadlev1.DType_DTYPE_INT64,
		Shape: []int64{int64(len(values))},
		Data:  data,
	}
}

// Float32Tensor encodes values as a 1-D DTYPE_FLOAT32 tensor (little-endian raw bytes).
func Float32Tensor(values []float32) *treadlev1.Tensor {
	data := make([]byte, 4*len(values))
	for i, v := range values {
		binary.LittleEndian.PutUint32(data[4*i:], math.Float32bits(v))
	}
	return &treadlev1.Tensor{
		Dtype: treadlev1.DType_DTYPE_FLOAT32,
		Shape: []int64{int64(len(values))},
		Data:  data,
	}
}

// Int64s decodes a DTYPE_INT64 tensor of any shape into its elements in row-major order.
func Int64s(t *treadlev1.Tensor) ([]int64, error) {
	n, err := checkTensor(t, treadlev1.DType_DTYPE_INT64, 8)
	if err != nil {
		return nil, err
	}
	values := make([]int64, n)
	for i := range values {
		values[i] = int64(binary.LittleEndian.Uint64(t.Data[8*i:]))
	}
	return values, nil
}

// Float32s decodes a DTYPE_FLOAT32 tensor of any shape into its elements in row-major order.
func Float32s(t *treadlev1.Tensor) ([]float32, error) {
	n, err := checkTensor(t, treadlev1.DType_DTYPE_FLOAT32, 4)
	if err != nil {
		return nil, err
	}
	values := make([]float32, n)
	for i := range values {
		values[i] = math.Float32frombits(binary.LittleEndian.Uint32(t.Data[4*i:]))
	}
	return values, nil
}

// checkTensor returns the element count of t after checking its dtype and that its shape
// matches the length of its bytes.
func checkTensor(t *treadlev1.Tensor, dtype treadlev1.DType, itemsize int) (int, error) {
	if t == nil {
		return 0, fmt.Errorf("tensor: missing")
	}
	if t.GetDtype() != dtype {
		return 0, fmt.Errorf("tensor: dtype is %s, want %s", t.GetDtype(), dtype)
	}
	elements := int64(1)
	for _, dim := range t.GetShape() {
		if dim < 0 {
			return 0, fmt.Errorf("tensor: negative dimension in shape %v", t.GetShape())
		}
		elements *= dim
	}
	if int64(len(t.GetData())) != elements*int64(itemsize) {
		return 0, fmt.Errorf(
			"tensor: shape %v needs %d bytes, got %d",
			t.GetShape(), elements*int64(itemsize), len(t.GetData()),
		)
	}
	return int(elements), nil
}
