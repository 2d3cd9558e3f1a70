package client

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestBackoffDoublesFromATenthOfASecondUpToFiveSeconds(t *testing.T) {
	for attempt, base := range map[int]time.Duration{
		1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 4: 800 * time.Millisecond,
		6: 3200 * time.Millisecond, 7: 5 * time.Second, 30: 5 * time.Second,
	} {
		for i := 0; i < 50; i++ {
			wait := backoff(attempt)
			if wait < base*8/10 || wait > base*12/10 {
				t.Fatalf("attempt %d waits %s, not %s +-20%%", attempt, wait, base)
			}
		}
	}
}

func TestReconnectionIsBoundedByTheIdleTimeoutUnlessToldOtherwise(t *testing.T) {
	o := newSessionOptions(30*time.Second, nil)
	if o.attempts != 20 || o.within != 30*time.Second {
		t.Fatalf("defaults: %+v", o)
	}
	if o := newSessionOptions(0, nil); o.within != 2*time.Minute {
		t.Fatalf("without an idle timeout: %+v", o)
	}
	o = newSessionOptions(30*time.Second, []SessionOption{
		ReconnectAttempts(-1), ReconnectWithin(time.Second),
	})
	if o.attempts != 0 || o.within != time.Second {
		t.Fatalf("options: %+v", o)
	}
}

func TestOnlyUnavailableAndTimeoutsAreRetried(t *testing.T) {
	for _, err := range []error{
		io.EOF, ErrClosed, context.DeadlineExceeded,
		status.Error(codes.Unavailable, "connection refused"),
		errorFromStatus(status.Error(codes.DeadlineExceeded, "slow")),
	} {
		if !retryable(err) {
			t.Errorf("%v is not retried", err)
		}
	}
	for _, err := range []error{
		status.Error(codes.Unauthenticated, "x-api-key: unknown API key"),
		errorFromStatus(status.Error(codes.PermissionDenied, "no")),
		sessionLost("s1", time.Minute),
		errors.New("treadle: the session stream did not start with SessionOpened"),
	} {
		if retryable(err) {
			t.Errorf("%v is retried", err)
		}
	}
	var lost *RequestError
	if !errors.As(sessionLost("s1", time.Minute), &lost) || lost.Code != codes.Aborted {
		t.Fatalf("a lost session: %v", sessionLost("s1", time.Minute))
	}
}
