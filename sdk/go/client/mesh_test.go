// Tests against a running mesh: they run when TREADLE_TEST_ENDPOINT and TREADLE_TEST_API_KEY
// name one (tests/sdk/test_go_client.py sets them for its local mesh) and are skipped otherwise.

package client

import (
	"context"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"

	"treadle/sdk/go/treadlev1"
)

const meshModel = "treadle/tiny-llama"

// meshSession is a session on the mesh named by the environment, closed with the test.
func meshSession(t *testing.T) (*Client, *Session, context.Context) {
	endpoint, key := os.Getenv("TREADLE_TEST_ENDPOINT"), os.Getenv("TREADLE_TEST_API_KEY")
	if endpoint == "" || key == "" {
		t.Skip("no mesh: set TREADLE_TEST_ENDPOINT and TREADLE_TEST_API_KEY")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	c, err := Dial(ctx, endpoint, key)
	if err != nil {
		t.Fatal(err)
	}
	session, err := c.OpenSession(ctx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		c.Close()
		cancel()
	})
	return c, session, ctx
}

func TestMeshForwardReturnsLogprobsPerDatum(t *testing.T) {
	c, session, ctx := meshSession(t)
	names := []string{}
	for _, model := range c.Capabilities().GetModels() {
		names = append(names, model.GetName())
	}
	if !strings.Contains(strings.Join(names, ","), meshModel) {
		t.Fatalf("capabilities list %v, not %s", names, meshModel)
	}
	model, err := session.CreateModel(ctx, meshModel, 4)
	if err != nil {
		t.Fatal(err)
	}
	short, _ := NextTokenDatum([]int64{5, 6, 7, 8})
	long, _ := NextTokenDatum([]int64{9, 10, 11, 12, 13, 14})
	result, err := model.Forward([]*treadlev1.Datum{short, long}, "").Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	logprobs, err := DatumLogprobs(result.GetForwardBackward())
	if err != nil {
		t.Fatal(err)
	}
	if len(logprobs) != 2 || len(logprobs[0]) != 3 || len(logprobs[1]) != 5 {
		t.Fatalf("logprob lengths: %v", logprobs)
	}
	for _, datum := range logprobs {
		for _, lp := range datum {
			if lp > 0 {
				t.Fatalf("a logprob above 0: %v", logprobs)
			}
		}
	}
}

func TestMeshComputeLogprobsOfTheBaseModel(t *testing.T) {
	_, session, ctx := meshSession(t)
	result, err := session.ComputeLogprobs("", meshModel, []int64{5, 6, 7, 8, 9}).Wait(ctx)
	if err != nil {
		t.Fatal(err)
	}
	answer := result.GetComputeLogprobs()
	if len(answer.GetLogprobs()) != 4 || answer.GetWeightsVersion() == "" {
		t.Fatalf("compute_logprobs answered %v", answer)
	}
}

func TestMeshErrorsNameTheField(t *testing.T) {
	_, session, ctx := meshSession(t)
	model, err := session.CreateModel(ctx, meshModel, 4)
	if err != nil {
		t.Fatal(err)
	}
	datum, _ := NextTokenDatum([]int64{1, 2, 3})
	// sent raw, past the client's own check of the loss name
	_, err = session.submit(&treadlev1.Submit{
		ModelId: model.ID,
		SeqId:   1,
		Op: &treadlev1.Submit_ForwardBackward{ForwardBackward: &treadlev1.ForwardBackwardRequest{
			Data:   []*treadlev1.Datum{datum},
			LossFn: "hinge",
		}},
	}).Wait(ctx)
	var failure *RequestError
	if !errors.As(err, &failure) || failure.Code != codes.InvalidArgument {
		t.Fatalf("an unknown loss: %v", err)
	}
	if failure.Field != "loss_fn" || !failure.UserError() || !strings.Contains(failure.Message, "hinge") {
		t.Fatalf("field %q category %v message %q", failure.Field, failure.Category, failure.Message)
	}
	_, err = session.CreateModel(ctx, "no/such-model", 4)
	if !errors.As(err, &failure) || failure.Code != codes.InvalidArgument ||
		!strings.Contains(failure.Message, "no/such-model") {
		t.Fatalf("creating a model of an unknown base: %v", err)
	}
}

func TestMeshClosedSessionFailsRequestsWithErrClosed(t *testing.T) {
	_, session, ctx := meshSession(t)
	params := &treadlev1.SamplingParams{MaxTokens: 64}
	pending := session.Sample("", meshModel, []int64{1, 2, 3}, 4, params)
	session.Close()
	if _, err := pending.Wait(ctx); err != nil && !errors.Is(err, ErrClosed) {
		t.Fatalf("a request pending at Close: %v", err)
	}
	late := session.ComputeLogprobs("", meshModel, []int64{1, 2})
	if _, err := late.Wait(ctx); !errors.Is(err, ErrClosed) {
		t.Fatalf("a request after Close: %v", err)
	}
}

func TestMeshClosingASessionReleasesItsModels(t *testing.T) {
	c, session, ctx := meshSession(t)
	model, err := session.CreateModel(ctx, meshModel, 4)
	if err != nil {
		t.Fatal(err)
	}
	info := &treadlev1.GetInfoRequest{ModelId: model.ID}
	if _, err := c.API().GetInfo(ctx, info); err != nil {
		t.Fatalf("get_info while the session is open: %v", err)
	}
	session.Close()
	_, err = c.API().GetInfo(ctx, info)
	var failure *RequestError
	if !errors.As(errorFromStatus(err), &failure) || failure.Code != codes.NotFound {
		t.Fatalf("get_info after Close: %v", err)
	}
}
