package client

import (
	"bytes"
	"testing"

	"treadle/sdk/go/treadlev1"
)

func TestInt64TensorIsLittleEndianRowMajor(t *testing.T) {
	tensor := Int64Tensor([]int64{1, -2, 1 << 40})
	want := []byte{
		1, 0, 0, 0, 0, 0, 0, 0,
		0xfe, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff,
		0, 0, 0, 0, 0, 1, 0, 0,
	}
	if !bytes.Equal(tensor.Data, want) {
		t.Fatalf("data = % x, want % x", tensor.Data, want)
	}
	if tensor.Dtype != treadlev1.DType_DTYPE_INT64 || len(tensor.Shape) != 1 || tensor.Shape[0] != 3 {
		t.Fatalf("dtype %v shape %v", tensor.Dtype, tensor.Shape)
	}
	back, err := Int64s(tensor)
	if err != nil || len(back) != 3 || back[0] != 1 || back[1] != -2 || back[2] != 1<<40 {
		t.Fatalf("Int64s = %v, %v", back, err)
	}
}

func TestFloat32TensorIsLittleEndianIEEE(t *testing.T) {
	tensor := Float32Tensor([]float32{1, -0.5})
	want := []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0xbf}
	if !bytes.Equal(tensor.Data, want) || tensor.Dtype != treadlev1.DType_DTYPE_FLOAT32 {
		t.Fatalf("data = % x dtype %v, want % x", tensor.Data, tensor.Dtype, want)
	}
	back, err := Float32s(tensor)
	if err != nil || len(back) != 2 || back[0] != 1 || back[1] != -0.5 {
		t.Fatalf("Float32s = %v, %v", back, err)
	}
}

func TestDecodeReadsMatrixAndScalarShapes(t *testing.T) {
	matrix := Float32Tensor([]float32{1, 2, 3, 4, 5, 6})
	matrix.Shape = []int64{2, 3}
	values, err := Float32s(matrix)
	if err != nil || len(values) != 6 || values[5] != 6 {
		t.Fatalf("2x3 = %v, %v", values, err)
	}
	scalar := Int64Tensor([]int64{7})
	scalar.Shape = nil
	if got, err := Int64s(scalar); err != nil || len(got) != 1 || got[0] != 7 {
		t.Fatalf("scalar = %v, %v", got, err)
	}
}

func TestDecodeRefusesWrongDtypeAndSize(t *testing.T) {
	if _, err := Float32s(Int64Tensor([]int64{1})); err == nil {
		t.Fatal("an int64 tensor decoded as float32")
	}
	short := Float32Tensor([]float32{1, 2})
	short.Shape = []int64{3}
	if _, err := Float32s(short); err == nil {
		t.Fatal("a tensor whose shape needs more bytes than it has decoded")
	}
	if _, err := Int64s(nil); err == nil {
		t.Fatal("a missing tensor decoded")
	}
}
