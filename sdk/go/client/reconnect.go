// Reconnect: restoring a session's lost stream with bounded, jittered exponential backoff, and
// the options that bound it. A restored stream resumes the same session id; every unanswered
// request goes out again unchanged (same request id, same model_id and seq_id), which the
// scheduler treats as the same request: run once, answered again.

package client

import (
	"context"
	"fmt"
	"io"
	"math/rand"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"treadle/sdk/go/treadlev1"
)

const (
	defaultReconnectAttempts = 20
	firstBackoff             = 100 * time.Millisecond
	maxBackoff               = 5 * time.Second
	maxAttemptTime           = 10 * time.Second // one try at reopening the stream
)

// SessionOption changes how OpenSession's session behaves.
type SessionOption func(*sessionOptions)

type sessionOptions struct {
	attempts int
	within   time.Duration
}

// ReconnectAttempts bounds the tries at reopening a lost stream (default 20; 0 turns
// reconnection off, so the first stream error ends the session).
func ReconnectAttempts(n int) SessionOption {
	return func(o *sessionOptions) {
		if n < 0 {
			n = 0
		}
		o.attempts = n
	}
}

// ReconnectWithin bounds the time spent reopening a lost stream, from the moment it was lost
// (default: the scheduler's session idle timeout, after which it has released the session).
func ReconnectWithin(d time.Duration) SessionOption {
	return func(o *sessionOptions) { o.within = d }
}

func newSessionOptions(idleTimeout time.Duration, options []SessionOption) sessionOptions {
	o := sessionOptions{attempts: defaultReconnectAttempts, within: idleTimeout}
	if o.within <= 0 {
		o.within = 2 * time.Minute
	}
	for _, option := range options {
		option(&o)
	}
	return o
}

// backoff is the wait before the attempt-th try: 100 ms doubling up to 5 s, +-20% jitter.
func backoff(attempt int) time.Duration {
	wait := maxBackoff
	if attempt < 8 {
		wait = firstBackoff << (attempt - 1)
		if wait > maxBackoff {
			wait = maxBackoff
		}
	}
	return time.Duration(float64(wait) * (0.8 + 0.4*rand.Float64()))
}

// reconnect reopens the session's stream after it was lost to cause, resumes the session and
// sends every unanswered request again. It gives up, with the error that ends the session,
// when a try fails with anything but UNAVAILABLE or a timeout, when the scheduler no longer
// knows the session, or when the attempts or the time allowed are spent.
func (s *Session) reconnect(cause error) (treadlev1.Treadle_SessionClient, error) {
	deadline := time.Now().Add(s.options.within)
	last := cause
	for attempt := 1; attempt <= s.options.attempts; attempt++ {
		wait := backoff(attempt)
		if time.Now().Add(wait).After(deadline) {
			break
		}
		select {
		case <-time.After(wait):
		case <-s.life.Done():
			return nil, ErrClosed
		}
		tryUntil := time.Now().Add(maxAttemptTime)
		if tryUntil.After(deadline) {
			tryUntil = deadline
		}
		ctx, cancel := context.WithDeadline(s.life, tryUntil)
		stream, cancelStream, opened, err := s.client.openStream(ctx, s.life, s.id)
		cancel()
		if s.life.Err() != nil {
			if err == nil {
				cancelStream()
			}
			return nil, ErrClosed
		}
		if err != nil {
			if !retryable(err) {
				return nil, err
			}
			last = err
			continue
		}
		if !opened.GetResumed() || opened.GetSessionId() != s.id {
			cancelStream()
			return nil, sessionLost(s.id, s.idleTimeout)
		}
		if !s.install(stream, cancelStream) {
			return nil, ErrClosed
		}
		return stream, nil
	}
	return nil, &RequestError{
		Code: codes.Unavailable,
		Message: fmt.Sprintf("session stream lost and not restored within %d attempts or %s: %s",
			s.options.attempts, s.options.within, describe(last)),
		Category: treadlev1.ErrorCategory_ERROR_CATEGORY_SERVER,
	}
}

// install makes a resumed stream the session's and sends the unanswered requests on it, in
// the order they were made, before any new request (both hold sendMu). It refuses a stream
// that arrives after Close.
func (s *Session) install(
	stream treadlev1.Treadle_SessionClient, cancelStream context.CancelFunc,
) bool {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.life.Err() != nil {
		cancelStream()
		return false
	}
	s.stream, s.cancelStream = stream, cancelStream
	for _, request := range s.unanswered() {
		s.sendLocked(stream, request.future.RequestID(), request.message)
	}
	s.mu.Lock()
	s.reconnects++
	s.mu.Unlock()
	return true
}

// retryable reports whether a failed try at reopening the stream may succeed later.
func retryable(err error) bool {
	if err == context.DeadlineExceeded || err == io.EOF || err == ErrClosed {
		return true
	}
	code := status.Code(err)
	return code == codes.Unavailable || code == codes.DeadlineExceeded
}

func describe(err error) string {
	if err == io.EOF {
		return "the scheduler ended the stream"
	}
	return err.Error()
}
