// Training: a LoRA model whose requests are numbered seq_id 1, 2, 3, ... under one mutex and sent
// in that order, so they may be submitted back to back and awaited later.

package client

import (
	"context"
	"sync"

	"google.golang.org/protobuf/proto"

	"treadle/sdk/go/treadlev1"
)

// TrainingModel is a LoRA adapter on a base model, trained through its session. Its requests
// are numbered seq_id 1, 2, 3, ... in the order they are made and sent in that order; the
// scheduler runs them in that order, whatever the order of the answers.
type TrainingModel struct {
	session *Session
	// ID is the model id, also the run id of its checkpoints (treadle://{ID}/...).
	ID string
	// BaseModel is the base model's name.
	BaseModel string
	// Info is the model's description as created.
	Info    *treadlev1.ModelInfo
	mu      sync.Mutex // numbers and sends one request at a time
	nextSeq int64
}

// CreateModel creates a fresh LoRA adapter of the given rank on baseModel, owned by this session
// (released with it).
func (s *Session) CreateModel(ctx context.Context, baseModel string, rank int) (*TrainingModel, error) {
	return s.CreateModelFrom(ctx, &treadlev1.CreateModelRequest{
		BaseModel:  baseModel,
		LoraConfig: &treadlev1.LoraConfig{Rank: int32(rank)},
	})
}

// CreateModelFrom creates a model from a full request (seed, LoRA options, from_state_path);
// the session id is filled in.
func (s *Session) CreateModelFrom(
	ctx context.Context, request *treadlev1.CreateModelRequest,
) (*TrainingModel, error) {
	request = proto.Clone(request).(*treadlev1.CreateModelRequest)
	request.SessionId = s.id
	created, err := s.client.api.CreateModel(ctx, request)
	if err != nil {
		return nil, errorFromStatus(err)
	}
	return &TrainingModel{
		session:   s,
		ID:        created.GetModelId(),
		BaseModel: created.GetInfo().GetBaseModel(),
		Info:      created.GetInfo(),
		nextSeq:   1,
	}, nil
}

// Adam is Adam parameters with the given learning rate and the service's defaults otherwise.
func Adam(learningRate float64) *treadlev1.AdamParams {
	return &treadlev1.AdamParams{LearningRate: proto.Float64(learningRate)}
}

// ForwardBackward computes the loss over data and accumulates its gradient, applied by the
// next OptimStep. lossFn "" means cross_entropy. A batch the loss cannot use fails at once with
// INVALID_ARGUMENT and is not sent. The result's GetForwardBackward() holds the
// metrics (e.g. "loss:sum") and per-datum outputs (read them with DatumLogprobs).
func (m *TrainingModel) ForwardBackward(data []*treadlev1.Datum, lossFn string) *Future {
	return m.forwardBackward(data, lossFn, false)
}

// Forward computes logprobs and the loss without accumulating a gradient.
func (m *TrainingModel) Forward(data []*treadlev1.Datum, lossFn string) *Future {
	return m.forwardBackward(data, lossFn, true)
}

func (m *TrainingModel) forwardBackward(
	data []*treadlev1.Datum, lossFn string, forwardOnly bool,
) *Future {
	if lossFn == "" {
		lossFn = CrossEntropy
	}
	if err := checkData(data, lossFn); err != nil {
		return failedFuture(err)
	}
	return m.submit(&treadlev1.Submit{Op: &treadlev1.Submit_ForwardBackward{
		ForwardBackward: &treadlev1.ForwardBackwardRequest{
			Data:        data,
			LossFn:      lossFn,
			ForwardOnly: forwardOnly,
		},
	}})
}

// OptimStep applies the accumulated gradients with Adam(W) and clears them; nil adam takes the
// service's defaults (learning rate 1e-4).
func (m *TrainingModel) OptimStep(adam *treadlev1.AdamParams) *Future {
	if adam == nil {
		adam = &treadlev1.AdamParams{}
	}
	return m.submit(&treadlev1.Submit{Op: &treadlev1.Submit_OptimStep{
		OptimStep: &treadlev1.OptimStepRequest{AdamParams: adam},
	}})
}

// SaveWeightsForSampler saves the adapter for sampling as
// treadle://{ID}/sampler_weights/{name} (name "" is generated from the step). The result's
// GetSaveCheckpoint().GetCheckpoint().GetPath() is the path to pass to Sample.
func (m *TrainingModel) SaveWeightsForSampler(name string) *Future {
	return m.save(name, treadlev1.CheckpointKind_CHECKPOINT_KIND_SAMPLER)
}

// SaveState saves the adapter, optimizer state and step as treadle://{ID}/weights/{name}, from
// which training can resume.
func (m *TrainingModel) SaveState(name string) *Future {
	return m.save(name, treadlev1.CheckpointKind_CHECKPOINT_KIND_STATE)
}

func (m *TrainingModel) save(name string, kind treadlev1.CheckpointKind) *Future {
	return m.submit(&treadlev1.Submit{Op: &treadlev1.Submit_SaveCheckpoint{
		SaveCheckpoint: &treadlev1.SaveCheckpointRequest{Name: name, Kind: kind},
	}})
}

// LoadState loads a state checkpoint's weights into this model, and its optimizer state when
// withOptimizer is set.
func (m *TrainingModel) LoadState(path string, withOptimizer bool) *Future {
	return m.submit(&treadlev1.Submit{Op: &treadlev1.Submit_LoadState{
		LoadState: &treadlev1.LoadStateRequest{Path: path, LoadOptimizer: withOptimizer},
	}})
}

// submit gives the request the model's next seq_id and sends it before the next one is numbered.
func (m *TrainingModel) submit(submit *treadlev1.Submit) *Future {
	m.mu.Lock()
	defer m.mu.Unlock()
	submit.ModelId = m.ID
	submit.SeqId = m.nextSeq
	m.nextSeq++
	return m.session.submit(submit)
}
