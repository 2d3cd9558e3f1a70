// Datums: building them from token slices, checking them against a loss before they are sent
// (a request the scheduler refuses still uses up its seq_id, so the client refuses it first),
// and reading per-datum outputs back.

package client

import (
	"fmt"
	"math"
	"sort"
	"strings"

	"treadle/sdk/go/treadlev1"
)

// Tokens is a model input of one encoded-text chunk.
func Tokens(tokens []int64) *treadlev1.ModelInput {
	return &treadlev1.ModelInput{Chunks: []*treadlev1.ModelInputChunk{{
		Chunk: &treadlev1.ModelInputChunk_EncodedText{
			EncodedText: &treadlev1.EncodedTextChunk{Tokens: tokens},
		},
	}}}
}

// NewDatum is a cross_entropy example: the input tokens, the token each position should
// predict, and a weight per position (nil weights every position 1). The three must have the
// same length, token ids must be >= 0 and weights finite.
func NewDatum(input, targets []int64, weights []float32) (*treadlev1.Datum, error) {
	if len(input) == 0 {
		return nil, invalid("model_input", "has no tokens")
	}
	if len(targets) != len(input) {
		return nil, invalid("loss_fn_inputs.target_tokens",
			"length %d does not match model_input length %d", len(targets), len(input))
	}
	if weights == nil {
		weights = make([]float32, len(input))
		for i := range weights {
			weights[i] = 1
		}
	}
	if len(weights) != len(input) {
		return nil, invalid("loss_fn_inputs.weights",
			"length %d does not match model_input length %d", len(weights), len(input))
	}
	for i, token := range input {
		if token < 0 {
			return nil, invalid("model_input", "token %d is negative (%d)", i, token)
		}
	}
	for i, token := range targets {
		if token < 0 {
			return nil, invalid("loss_fn_inputs.target_tokens", "token %d is negative (%d)", i, token)
		}
	}
	for i, w := range weights {
		if math.IsNaN(float64(w)) || math.IsInf(float64(w), 0) {
			return nil, invalid("loss_fn_inputs.weights", "weight %d is not finite", i)
		}
	}
	return &treadlev1.Datum{
		ModelInput: Tokens(input),
		LossFnInputs: map[string]*treadlev1.Tensor{
			"target_tokens": Int64Tensor(targets),
			"weights":       Float32Tensor(weights),
		},
	}, nil
}

// NextTokenDatum trains on predicting each token of sequence from the ones before it: the input
// is sequence[:T-1], the targets sequence[1:], every position weighted 1.
func NextTokenDatum(sequence []int64) (*treadlev1.Datum, error) {
	if len(sequence) < 2 {
		return nil, invalid("model_input", "a sequence needs at least 2 tokens, got %d", len(sequence))
	}
	return NewDatum(sequence[:len(sequence)-1], sequence[1:], nil)
}

// DatumLogprobs reads the per-token logprobs of each datum, in request order, from a
// forward or forward_backward result.
func DatumLogprobs(out *treadlev1.ForwardBackwardOutput) ([][]float32, error) {
	logprobs := make([][]float32, len(out.GetLossFnOutputs()))
	for i, datum := range out.GetLossFnOutputs() {
		values, err := Float32s(datum.GetOutputs()["logprobs"])
		if err != nil {
			return nil, fmt.Errorf("loss_fn_outputs[%d].logprobs: %w", i, err)
		}
		logprobs[i] = values
	}
	return logprobs, nil
}

// checkData refuses, as the server would and naming the same field, a batch the loss cannot
// use: an unknown loss, an empty batch or input, a missing or unknown input, or an input whose
// dtype, length or values are wrong. The loss table is the Python contract's, generated into
// losses_gen.go.
func checkData(data []*treadlev1.Datum, lossFn string) error {
	required, known := lossInputs[lossFn]
	if !known {
		return invalid("loss_fn", "unknown loss %q", lossFn)
	}
	if len(data) == 0 {
		return invalid("data", "at least one datum is required")
	}
	for i, datum := range data {
		prefix := fmt.Sprintf("data[%d]", i)
		length := 0
		for _, chunk := range datum.GetModelInput().GetChunks() {
			for _, token := range chunk.GetEncodedText().GetTokens() {
				if token < 0 {
					return invalid(prefix+".model_input",
						"token id %d at position %d is not >= 0", token, length)
				}
				length++
			}
		}
		if length == 0 {
			return invalid(prefix+".model_input", "has no tokens")
		}
		for _, name := range required {
			if _, ok := datum.GetLossFnInputs()[name]; !ok {
				return invalid(prefix+".loss_fn_inputs."+name, "is required by %s", lossFn)
			}
		}
		inputs := datum.GetLossFnInputs()
		names := make([]string, 0, len(inputs))
		for name := range inputs {
			names = append(names, name)
		}
		sort.Strings(names) // in the order the SDK and the services check them
		for _, name := range names {
			if err := checkInput(prefix+".loss_fn_inputs."+name, name, inputs[name], length); err != nil {
				return err
			}
		}
	}
	return nil
}

func checkInput(field, name string, tensor *treadlev1.Tensor, length int) error {
	dtype, known := inputDTypes[name]
	if !known {
		return invalid(field, "unknown input (accepted: %s)", strings.Join(inputNames(), ", "))
	}
	if len(tensor.GetShape()) != 1 || tensor.GetShape()[0] != int64(length) {
		return invalid(field, "shape %v does not match model_input length %d",
			tensor.GetShape(), length)
	}
	if dtype == "int64" {
		if _, err := Int64s(tensor); err != nil {
			return invalid(field, "%v", err)
		}
		return nil
	}
	values, err := Float32s(tensor)
	if err != nil {
		return invalid(field, "%v", err)
	}
	for i, v := range values {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return invalid(field, "non-finite value %v at position %d", v, i)
		}
	}
	return nil
}

// inputNames are the loss_fn_inputs a datum may carry, sorted.
func inputNames() []string {
	names := make([]string, 0, len(inputDTypes))
	for name := range inputDTypes {
		names = append(names, name)
	}
	sort.Strings(names)
	return names
}
