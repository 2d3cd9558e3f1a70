// Command treadle-example fine-tunes a LoRA adapter on a fixed batch with the Go client, then
// samples from it. Each step's forward_backward and optim_step are submitted together, and the
// next step is submitted before the current one is awaited, so the scheduler always has the next
// step queued (one step per clock cycle). A session stream lost on the way is restored (the
// session resumed, unanswered requests sent again) and counted on the last line.
//
//	treadle-example -endpoint localhost:8470 -api-key tml-... -steps 8
package main

import (
	"context"
	"flag"
	"fmt"
	"math/rand"
	"os"
	"strings"
	"time"

	"google.golang.org/protobuf/proto"

	"treadle/sdk/go/client"
	"treadle/sdk/go/treadlev1"
)

func main() {
	endpoint := flag.String("endpoint", envOr("TREADLE_BASE_URL", "localhost:8470"),
		"scheduler address (env TREADLE_BASE_URL)")
	apiKey := flag.String("api-key", os.Getenv("TREADLE_API_KEY"), "API key (env TREADLE_API_KEY)")
	baseModel := flag.String("base-model", "treadle/tiny-llama", "base model to adapt")
	steps := flag.Int("steps", 8, "training steps")
	rank := flag.Int("rank", 8, "LoRA rank")
	learningRate := flag.Float64("lr", 5e-3, "Adam learning rate")
	maxTokens := flag.Int("max-tokens", 8, "tokens to sample")
	timeout := flag.Duration("timeout", 5*time.Minute, "give up after this long")
	attempts := flag.Int("reconnect-attempts", 20, "tries at restoring a lost session stream")
	within := flag.Duration("reconnect-within", 0,
		"time allowed to restore a lost session stream (0: the session idle timeout)")
	alive := flag.Duration("keepalive", 20*time.Second,
		"ping a silent connection this often; one unanswered for half as long is lost")
	flag.Parse()

	options := []client.SessionOption{client.ReconnectAttempts(*attempts)}
	if *within > 0 {
		options = append(options, client.ReconnectWithin(*within))
	}
	ctx, cancel := context.WithTimeout(context.Background(), *timeout)
	dial := client.Keepalive(*alive, *alive/2)
	err := run(ctx, *endpoint, *apiKey, *baseModel, *steps, *rank, *learningRate, *maxTokens,
		dial, options)
	cancel()
	if err != nil {
		fmt.Fprintln(os.Stderr, "treadle-example:", err)
		os.Exit(1)
	}
}

func envOr(name, fallback string) string {
	if value := os.Getenv(name); value != "" {
		return value
	}
	return fallback
}

// step is one training step in flight.
type step struct{ forwardBackward, optimStep *client.Future }

func run(
	ctx context.Context, endpoint, apiKey, baseModel string,
	steps, rank int, learningRate float64, maxTokens int,
	dial client.DialOption, options []client.SessionOption,
) error {
	c, err := client.Dial(ctx, endpoint, apiKey, dial)
	if err != nil {
		return err
	}
	defer c.Close()
	session, err := c.OpenSession(ctx, options...)
	if err != nil {
		return err
	}
	model, err := session.CreateModel(ctx, baseModel, rank)
	if err != nil {
		return err
	}
	fmt.Printf("session %s model %s\n", session.ID(), model.ID)

	sequences := fixedSequences(2, 17)
	batch := make([]*treadlev1.Datum, len(sequences))
	for i, sequence := range sequences {
		if batch[i], err = client.NextTokenDatum(sequence); err != nil {
			return err
		}
	}
	adam := client.Adam(learningRate)
	submit := func() step {
		return step{model.ForwardBackward(batch, client.CrossEntropy), model.OptimStep(adam)}
	}

	inFlight := []step{submit()}
	for n := 1; n <= steps; n++ {
		if n < steps {
			inFlight = append(inFlight, submit())
		}
		current := inFlight[0]
		inFlight = inFlight[1:]
		result, err := current.forwardBackward.Wait(ctx)
		if err != nil {
			return fmt.Errorf("step %d forward_backward: %w", n, err)
		}
		if _, err := current.optimStep.Wait(ctx); err != nil {
			return fmt.Errorf("step %d optim_step: %w", n, err)
		}
		fmt.Printf("step %d loss %.4f\n", n, result.GetForwardBackward().GetMetrics()["loss:sum"])
	}

	saved, err := model.SaveWeightsForSampler("go-example").Wait(ctx)
	if err != nil {
		return fmt.Errorf("save_weights_for_sampler: %w", err)
	}
	path := saved.GetSaveCheckpoint().GetCheckpoint().GetPath()
	fmt.Printf("saved %s\n", path)

	params := &treadlev1.SamplingParams{MaxTokens: int32(maxTokens), Seed: proto.Int64(1)}
	sampled, err := session.Sample(path, baseModel, sequences[0][:8], 2, params).Wait(ctx)
	if err != nil {
		return fmt.Errorf("sample: %w", err)
	}
	for i, sequence := range sampled.GetSample().GetSequences() {
		fmt.Printf("sample %d: %s\n", i, join(sequence.GetTokens()))
	}
	fmt.Printf("reconnects %d\n", session.Reconnects())
	return session.Close()
}

// fixedSequences is the same batch of random token sequences on every run.
func fixedSequences(count, length int) [][]int64 {
	random := rand.New(rand.NewSource(0))
	sequences := make([][]int64, count)
	for i := range sequences {
		sequences[i] = make([]int64, length)
		for t := range sequences[i] {
			sequences[i][t] = 3 + random.Int63n(1997)
		}
	}
	return sequences
}

func join(tokens []int64) string {
	words := make([]string, len(tokens))
	for i, token := range tokens {
		words[i] = fmt.Sprint(token)
	}
	return strings.Join(words, " ")
}
