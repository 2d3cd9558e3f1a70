// Future: the answer to one submitted request, completed once by the session's reader.

package client

import (
	"context"
	"sync"

	"treadle/sdk/go/treadlev1"
)

// Future is the pending answer to one request submitted on a session. It completes exactly
// once, with the request's Result or with an error (a *RequestError for failures the service
// reports, ErrClosed when the session was closed first).
type Future struct {
	requestID string
	done      chan struct{}
	once      sync.Once
	result    *treadlev1.Result
	err       error
}

func newFuture(requestID string) *Future {
	return &Future{requestID: requestID, done: make(chan struct{})}
}

// failedFuture is a future that already failed (a request refused before it was sent).
func failedFuture(err error) *Future {
	f := newFuture("")
	f.complete(nil, err)
	return f
}

// RequestID is the session-unique id the request was sent with ("" if it was never sent).
func (f *Future) RequestID() string { return f.requestID }

// Done is closed when the answer has arrived; use it to select over several futures.
func (f *Future) Done() <-chan struct{} { return f.done }

// Wait blocks until the answer arrives or ctx ends. Giving up on ctx does not cancel the
// request: a later Wait still gets its answer.
func (f *Future) Wait(ctx context.Context) (*treadlev1.Result, error) {
	select {
	case <-f.done:
		return f.result, f.err
	case <-ctx.Done():
		return nil, ctx.Err()
	}
}

func (f *Future) complete(result *treadlev1.Result, err error) {
	f.once.Do(func() {
		f.result, f.err = result, err
		close(f.done)
	})
}
