// Sampling: sample and compute_logprobs, which are not bound to a training model or its order.

package client

import (
	"treadle/sdk/go/treadlev1"
)

// Sample draws n completions of prompt from a sampler checkpoint (modelPath, as returned by
// SaveWeightsForSampler) or, with modelPath "", from baseModel itself. params sets max_tokens
// (required, > 0), temperature, seed, stop tokens, ... The result's GetSample() holds the
// sequences.
func (s *Session) Sample(
	modelPath, baseModel string, prompt []int64, n int, params *treadlev1.SamplingParams,
) *Future {
	if len(prompt) == 0 {
		return failedFuture(invalid("prompt", "at least one token is required"))
	}
	if n <= 0 {
		return failedFuture(invalid("num_samples", "must be > 0, got %d", n))
	}
	return s.submit(&treadlev1.Submit{Op: &treadlev1.Submit_Sample{
		Sample: &treadlev1.SampleRequest{
			ModelPath:      modelPath,
			BaseModel:      baseModel,
			Prompt:         Tokens(prompt),
			NumSamples:     int32(n),
			SamplingParams: params,
		},
	}})
}

// ComputeLogprobs scores tokens under a sampler checkpoint (or baseModel when modelPath is "").
// The result's GetComputeLogprobs().GetLogprobs() has one logprob per token after the first.
func (s *Session) ComputeLogprobs(modelPath, baseModel string, tokens []int64) *Future {
	if len(tokens) == 0 {
		return failedFuture(invalid("prompt", "at least one token is required"))
	}
	return s.submit(&treadlev1.Submit{Op: &treadlev1.Submit_ComputeLogprobs{
		ComputeLogprobs: &treadlev1.ComputeLogprobsRequest{
			ModelPath: modelPath,
			BaseModel: baseModel,
			Prompt:    Tokens(tokens),
		},
	}})
}
