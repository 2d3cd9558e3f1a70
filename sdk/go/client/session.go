// Session: one Session stream at a time, a goroutine that reads it and completes futures by
// request id, heartbeats so that a client busy elsewhere keeps its session, and reconnection:
// a stream lost to a transient failure is reopened with the same session id and every
// unanswered request is sent again with its original request id and seq_id, which the
// scheduler answers without running it twice.

package client

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"treadle/sdk/go/treadlev1"
)

// heartbeatEvery is how often an otherwise quiet session says it is alive (the scheduler
// releases sessions silent for its idle timeout, 120 s by default).
const heartbeatEvery = 5 * time.Second

// Session is one session with the scheduler: the requests sent on it and the goroutines that
// read their answers, keep it alive and restore its stream. It is safe for concurrent use.
//
// If the stream breaks with UNAVAILABLE (or ends while requests are unanswered), the session
// reopens it with backoff, resumes the same session id and sends every unanswered request
// again; requests made meanwhile are sent once the stream is back. Any other stream error, a
// session the scheduler no longer knows, or running out of attempts ends the session: every
// pending and later request fails with that error; open a new session to go on.
type Session struct {
	client      *Client
	id          string
	idleTimeout time.Duration
	options     sessionOptions
	nextID      atomic.Int64
	life        context.Context // ends at Close
	end         context.CancelFunc

	sendMu       sync.Mutex                      // one sender at a time; guards the two below
	stream       treadlev1.Treadle_SessionClient // nil while reconnecting
	cancelStream context.CancelFunc

	mu         sync.Mutex // guards pending, err and reconnects
	pending    map[string]*pendingRequest
	err        error // why the session ended; nil while it is open
	reconnects int

	done      chan struct{} // closed when the reading goroutine has stopped
	closeOnce sync.Once
}

// pendingRequest is a request sent and not yet answered, kept to be sent again.
type pendingRequest struct {
	order   int64
	message *treadlev1.ClientMessage
	future  *Future
}

// OpenSession opens a Session stream (OpenSession first) and starts reading its answers and
// sending heartbeats. ctx bounds the opening only; the session lives until Close. Options
// change how a lost stream is restored (ReconnectAttempts, ReconnectWithin).
func (c *Client) OpenSession(ctx context.Context, options ...SessionOption) (*Session, error) {
	life, end := context.WithCancel(context.Background())
	stream, cancelStream, first, err := c.openStream(ctx, life, "")
	if err != nil {
		end()
		return nil, err
	}
	s := &Session{
		client:       c,
		id:           first.GetSessionId(),
		idleTimeout:  time.Duration(first.GetIdleTimeoutSeconds() * float64(time.Second)),
		life:         life,
		end:          end,
		stream:       stream,
		cancelStream: cancelStream,
		pending:      map[string]*pendingRequest{},
		done:         make(chan struct{}),
	}
	s.options = newSessionOptions(s.idleTimeout, options)
	c.track(s, true)
	go s.serve(stream)
	go s.heartbeat()
	return s, nil
}

// openStream starts a Session stream that lives until life ends (or its cancel is called),
// sends OpenSession for sessionID ("" for a new session) and reads the SessionOpened answer;
// ctx bounds the opening only.
func (c *Client) openStream(
	ctx, life context.Context, sessionID string,
) (treadlev1.Treadle_SessionClient, context.CancelFunc, *treadlev1.SessionOpened, error) {
	streamCtx, cancel := context.WithCancel(life)
	stream, err := c.api.Session(streamCtx)
	if err != nil {
		cancel()
		return nil, nil, nil, errorFromStatus(err)
	}
	open := &treadlev1.ClientMessage{Kind: &treadlev1.ClientMessage_Open{
		Open: &treadlev1.OpenSession{SessionId: sessionID, ClientVersion: Version},
	}}
	opened, watched := make(chan struct{}), make(chan struct{})
	var abandoned atomic.Bool
	go func() { // the stream outlives ctx, so ctx is watched by hand while opening
		defer close(watched)
		select {
		case <-ctx.Done():
			abandoned.Store(true)
			cancel()
		case <-opened:
		}
	}()
	first, err := awaitOpened(stream, open)
	close(opened)
	<-watched
	if abandoned.Load() {
		return nil, nil, nil, ctx.Err()
	}
	if err != nil {
		cancel()
		return nil, nil, nil, err
	}
	return stream, cancel, first, nil
}

// awaitOpened sends OpenSession and reads the SessionOpened answer.
func awaitOpened(
	stream treadlev1.Treadle_SessionClient, open *treadlev1.ClientMessage,
) (*treadlev1.SessionOpened, error) {
	if err := stream.Send(open); err != nil && err != io.EOF {
		return nil, errorFromStatus(err)
	}
	message, err := stream.Recv()
	if err != nil {
		if err == io.EOF {
			return nil, ErrClosed
		}
		return nil, errorFromStatus(err)
	}
	switch kind := message.Kind.(type) {
	case *treadlev1.ServerMessage_Opened:
		return kind.Opened, nil
	case *treadlev1.ServerMessage_Error:
		return nil, errorFromDetail(kind.Error.GetError())
	}
	return nil, errors.New("treadle: the session stream did not start with SessionOpened")
}

// ID is the session id the scheduler assigned; it stays the same across reconnections.
func (s *Session) ID() string { return s.id }

// IdleTimeout is how long the scheduler keeps a silent session (heartbeats keep it alive).
func (s *Session) IdleTimeout() time.Duration { return s.idleTimeout }

// Reconnects is how many times the session's stream was lost and restored.
func (s *Session) Reconnects() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reconnects
}

// Err is why the session ended, or nil while it is open (also while it is reconnecting).
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// closeWait bounds how long Close waits for the scheduler to end a released session.
const closeWait = 5 * time.Second

// Close ends the session: requests still pending fail with ErrClosed, and the scheduler
// releases the session and its training models now (a session whose stream is lost at that
// moment is released after the scheduler's idle timeout).
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.fail(ErrClosed)
		s.sendMu.Lock()
		released := false
		if s.stream != nil {
			closing := &treadlev1.ClientMessage{
				Kind: &treadlev1.ClientMessage_Close{Close: &treadlev1.CloseSession{}},
			}
			released = s.stream.Send(closing) == nil
			s.stream.CloseSend()
		}
		s.sendMu.Unlock()
		if released { // the scheduler ends the stream once the session is gone
			select {
			case <-s.done:
			case <-time.After(closeWait):
			}
		}
		s.end()
		s.sendMu.Lock()
		if s.stream != nil {
			s.cancelStream()
		}
		s.sendMu.Unlock()
		<-s.done
		s.client.track(s, false)
	})
	return nil
}

// submit sends one Submit under a fresh request id; its answer completes the returned future.
// While the stream is being restored the request waits and goes out with the unanswered ones.
func (s *Session) submit(submit *treadlev1.Submit) *Future {
	order := s.nextID.Add(1)
	submit.RequestId = "r" + strconv.FormatInt(order, 10)
	future := newFuture(submit.RequestId)
	message := &treadlev1.ClientMessage{Kind: &treadlev1.ClientMessage_Submit{Submit: submit}}
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		future.complete(nil, s.err)
		return future
	}
	s.pending[submit.RequestId] = &pendingRequest{order: order, message: message, future: future}
	s.mu.Unlock()
	if s.stream != nil {
		s.sendLocked(s.stream, submit.RequestId, message)
	}
	return future
}

// sendLocked sends a request's message with sendMu held. io.EOF means the stream broke and the
// reader restores it (the request stays pending); any other error is the request's own.
func (s *Session) sendLocked(
	stream treadlev1.Treadle_SessionClient, requestID string, message *treadlev1.ClientMessage,
) {
	if err := stream.Send(message); err != nil && err != io.EOF {
		s.resolve(requestID, nil, errorFromStatus(err))
	}
}

// serve reads the stream, and each stream that replaces it, until the session ends.
func (s *Session) serve(stream treadlev1.Treadle_SessionClient) {
	defer close(s.done)
	for {
		final, err := s.read(stream)
		s.dropStream(stream)
		if s.life.Err() != nil {
			return // closed
		}
		if final || !s.transient(err) || s.options.attempts == 0 { // 0: reconnection is off
			if err == io.EOF {
				err = ErrClosed
			}
			s.fail(err)
			return
		}
		if stream, err = s.reconnect(err); err != nil {
			s.fail(err)
			return
		}
	}
}

// read completes futures from the stream's answers until it ends, and returns why; it is
// final when the scheduler ended the session itself (an Error without a request id).
func (s *Session) read(stream treadlev1.Treadle_SessionClient) (bool, error) {
	for {
		message, err := stream.Recv()
		if err == io.EOF {
			return false, io.EOF
		}
		if err != nil {
			return false, errorFromStatus(err)
		}
		switch kind := message.Kind.(type) {
		case *treadlev1.ServerMessage_Result:
			s.resolve(kind.Result.GetRequestId(), kind.Result, nil)
		case *treadlev1.ServerMessage_Error:
			failure := errorFromDetail(kind.Error.GetError())
			if kind.Error.GetRequestId() == "" {
				return true, failure
			}
			s.resolve(kind.Error.GetRequestId(), nil, failure)
		}
	}
}

// transient reports whether a lost stream is worth reopening: UNAVAILABLE, or a stream the
// server ended while requests were still unanswered.
func (s *Session) transient(err error) bool {
	if err == io.EOF {
		s.mu.Lock()
		defer s.mu.Unlock()
		return len(s.pending) > 0
	}
	return status.Code(err) == codes.Unavailable
}

// dropStream forgets a stream that ended, so that requests made now wait for the next one.
func (s *Session) dropStream(stream treadlev1.Treadle_SessionClient) {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	if s.stream == stream {
		s.cancelStream()
		s.stream, s.cancelStream = nil, nil
	}
}

func (s *Session) heartbeat() {
	every := heartbeatEvery
	if s.idleTimeout > 0 && s.idleTimeout/3 < every {
		every = s.idleTimeout / 3
	}
	ticker := time.NewTicker(every)
	defer ticker.Stop()
	beat := &treadlev1.ClientMessage{Kind: &treadlev1.ClientMessage_Heartbeat{
		Heartbeat: &treadlev1.Heartbeat{},
	}}
	for {
		select {
		case <-s.done:
			return
		case <-ticker.C:
			s.sendMu.Lock()
			if s.stream != nil {
				s.stream.Send(beat) // a broken stream is noticed and restored by the reader
			}
			s.sendMu.Unlock()
		}
	}
}

func (s *Session) resolve(requestID string, result *treadlev1.Result, err error) {
	s.mu.Lock()
	request, ok := s.pending[requestID]
	delete(s.pending, requestID)
	s.mu.Unlock()
	if ok { // an answer to a request already answered (sent twice) is dropped
		request.future.complete(result, err)
	}
}

// unanswered is the pending requests in the order they were made.
func (s *Session) unanswered() []*pendingRequest {
	s.mu.Lock()
	defer s.mu.Unlock()
	requests := make([]*pendingRequest, 0, len(s.pending))
	for _, request := range s.pending {
		requests = append(requests, request)
	}
	sort.Slice(requests, func(i, j int) bool { return requests[i].order < requests[j].order })
	return requests
}

// fail ends the session: every pending request and every later one fails with err.
func (s *Session) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	pending := s.pending
	s.pending = map[string]*pendingRequest{}
	err = s.err
	s.mu.Unlock()
	for _, request := range pending {
		request.future.complete(nil, err)
	}
}

// sessionLost is the error of a session the scheduler released while its stream was down.
func sessionLost(id string, idleTimeout time.Duration) error {
	return &RequestError{
		Code: codes.Aborted,
		Message: fmt.Sprintf("session_id: the scheduler no longer knows session %s (released "+
			"after its idle timeout of %s, or the scheduler restarted); its models are gone: "+
			"open a new session", id, idleTimeout),
		Field:    "session_id",
		Category: treadlev1.ErrorCategory_ERROR_CATEGORY_SERVER,
	}
}
