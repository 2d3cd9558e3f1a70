package client

import (
	"context"
	"errors"
	"math"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"treadle/sdk/go/treadlev1"
)

func TestNextTokenDatumShiftsTargetsAndWeightsAll(t *testing.T) {
	datum, err := NextTokenDatum([]int64{10, 11, 12, 13})
	if err != nil {
		t.Fatal(err)
	}
	input := datum.GetModelInput().GetChunks()[0].GetEncodedText().GetTokens()
	targets, _ := Int64s(datum.LossFnInputs["target_tokens"])
	weights, _ := Float32s(datum.LossFnInputs["weights"])
	if len(input) != 3 || input[0] != 10 || input[2] != 12 {
		t.Fatalf("input %v", input)
	}
	if len(targets) != 3 || targets[0] != 11 || targets[2] != 13 {
		t.Fatalf("targets %v", targets)
	}
	if len(weights) != 3 || weights[0] != 1 || weights[2] != 1 {
		t.Fatalf("weights %v", weights)
	}
}

func TestNewDatumNamesTheFieldItRefuses(t *testing.T) {
	cases := []struct {
		input, targets []int64
		weights        []float32
		field          string
	}{
		{nil, nil, nil, "model_input"},
		{[]int64{1, 2}, []int64{2}, nil, "loss_fn_inputs.target_tokens"},
		{[]int64{1, 2}, []int64{2, 3}, []float32{1}, "loss_fn_inputs.weights"},
		{[]int64{1, -2}, []int64{2, 3}, nil, "model_input"},
		{[]int64{1, 2}, []int64{2, 3}, []float32{1, float32(math.NaN())}, "loss_fn_inputs.weights"},
	}
	for _, c := range cases {
		_, err := NewDatum(c.input, c.targets, c.weights)
		var failure *RequestError
		if !errors.As(err, &failure) || failure.Field != c.field || !failure.UserError() {
			t.Errorf("NewDatum(%v, %v, %v) = %v, want an error on %s",
				c.input, c.targets, c.weights, err, c.field)
		}
	}
}

func TestDatumLogprobsReadsEachDatumInOrder(t *testing.T) {
	out := &treadlev1.ForwardBackwardOutput{LossFnOutputs: []*treadlev1.LossFnOutput{
		{Outputs: map[string]*treadlev1.Tensor{"logprobs": Float32Tensor([]float32{-1, -2})}},
		{Outputs: map[string]*treadlev1.Tensor{"logprobs": Float32Tensor([]float32{-3})}},
	}}
	logprobs, err := DatumLogprobs(out)
	if err != nil || len(logprobs) != 2 || logprobs[0][1] != -2 || logprobs[1][0] != -3 {
		t.Fatalf("DatumLogprobs = %v, %v", logprobs, err)
	}
	out.LossFnOutputs[1].Outputs = nil
	if _, err := DatumLogprobs(out); err == nil {
		t.Fatal("a datum without logprobs was read")
	}
}

func TestCheckDataRefusesWhatTheLossCannotUse(t *testing.T) {
	good, _ := NextTokenDatum([]int64{1, 2, 3})
	if err := checkData([]*treadlev1.Datum{good}, "cross_entropy"); err != nil {
		t.Fatalf("a good batch: %v", err)
	}
	withInput := func(name string, tensor *treadlev1.Tensor) *treadlev1.Datum {
		datum, _ := NextTokenDatum([]int64{1, 2, 3})
		datum.LossFnInputs[name] = tensor
		return datum
	}
	cases := []struct {
		data   []*treadlev1.Datum
		lossFn string
		field  string
	}{
		{[]*treadlev1.Datum{good}, "hinge", "loss_fn"},
		{nil, "cross_entropy", "data"},
		{[]*treadlev1.Datum{good, {}}, "cross_entropy", "data[1].model_input"},
		{[]*treadlev1.Datum{good}, "ppo", "data[0].loss_fn_inputs.logprobs"},
		{
			[]*treadlev1.Datum{withInput("weights", Int64Tensor([]int64{1, 1}))},
			"cross_entropy", "data[0].loss_fn_inputs.weights",
		},
		{
			[]*treadlev1.Datum{withInput("target_tokens", Float32Tensor([]float32{1, 1}))},
			"cross_entropy", "data[0].loss_fn_inputs.target_tokens",
		},
		{
			[]*treadlev1.Datum{withInput("weights", Float32Tensor([]float32{1, 1, 1}))},
			"cross_entropy", "data[0].loss_fn_inputs.weights",
		},
		{
			[]*treadlev1.Datum{withInput("advantages", Float32Tensor([]float32{0, float32(math.Inf(1))}))},
			"cross_entropy", "data[0].loss_fn_inputs.advantages",
		},
		{[]*treadlev1.Datum{good}, GSPO, "data[0].loss_fn_inputs.logprobs"},
		{[]*treadlev1.Datum{good}, StableReinforce, "data[0].loss_fn_inputs.logprobs"},
		{
			[]*treadlev1.Datum{withInput("clip_low_threshold", Float32Tensor([]float32{0.8, float32(math.NaN())}))},
			"cross_entropy", "data[0].loss_fn_inputs.clip_low_threshold",
		},
		{
			[]*treadlev1.Datum{withInput("sequence_ratio_mask", Int64Tensor([]int64{1, 0}))},
			"cross_entropy", "data[0].loss_fn_inputs.sequence_ratio_mask",
		},
	}
	for i, c := range cases {
		err := checkData(c.data, c.lossFn)
		var failure *RequestError
		if !errors.As(err, &failure) || failure.Field != c.field || failure.Code != codes.InvalidArgument {
			t.Errorf("case %d: %v, want INVALID_ARGUMENT on %s", i, err, c.field)
		}
	}
}

func TestRefusedRequestDoesNotUseASeqID(t *testing.T) {
	model := &TrainingModel{ID: "m", nextSeq: 1}
	datum, _ := NextTokenDatum([]int64{1, 2, 3})
	_, err := model.ForwardBackward([]*treadlev1.Datum{datum}, "hinge").Wait(context.Background())
	if status.Code(err) != codes.InvalidArgument {
		t.Fatalf("an unknown loss: %v", err)
	}
	if model.nextSeq != 1 {
		t.Fatalf("a refused request used seq_id %d", model.nextSeq-1)
	}
}
