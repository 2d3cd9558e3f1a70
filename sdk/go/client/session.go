// Session: one Session stream, a reader goroutine that completes futures by request id, and
// heartbeats so that a client busy elsewhere keeps its session (and its models).

package client

import (
	"context"
	"errors"
	"io"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"treadle/sdk/go/treadlev1"
)

// heartbeatEvery is how often an otherwise quiet session says it is alive (the scheduler
// releases sessions silent for its idle timeout, 120 s by default).
const heartbeatEvery = 5 * time.Second

// Session is one Session stream: the requests sent on it and the goroutines that read its
// answers and keep it alive. It is safe for concurrent use. A session that loses its stream
// fails every pending and later request with the stream's error; open a new one to go on.
type Session struct {
	client      *Client
	id          string
	idleTimeout time.Duration
	stream      treadlev1.Treadle_SessionClient
	cancel      context.CancelFunc
	nextID      atomic.Int64
	sendMu      sync.Mutex // grpc-go streams allow one sender at a time
	mu          sync.Mutex // guards pending and err
	pending     map[string]*Future
	err         error // why the session ended; nil while it is open
	readerDone  chan struct{}
	closeOnce   sync.Once
}

// OpenSession opens a Session stream (OpenSession first) and starts reading its answers and
// sending heartbeats. ctx bounds the opening only; the session lives until Close.
func (c *Client) OpenSession(ctx context.Context) (*Session, error) {
	streamCtx, cancel := context.WithCancel(context.Background())
	stream, err := c.api.Session(streamCtx)
	if err != nil {
		cancel()
		return nil, errorFromStatus(err)
	}
	open := &treadlev1.ClientMessage{Kind: &treadlev1.ClientMessage_Open{
		Open: &treadlev1.OpenSession{ClientVersion: Version},
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
	first, err := openStream(stream, open)
	close(opened)
	<-watched
	if abandoned.Load() {
		return nil, ctx.Err()
	}
	if err != nil {
		cancel()
		return nil, err
	}
	s := &Session{
		client:      c,
		id:          first.GetSessionId(),
		idleTimeout: time.Duration(first.GetIdleTimeoutSeconds() * float64(time.Second)),
		stream:      stream,
		cancel:      cancel,
		pending:     map[string]*Future{},
		readerDone:  make(chan struct{}),
	}
	c.track(s, true)
	go s.read()
	go s.heartbeat()
	return s, nil
}

// openStream sends OpenSession and reads the SessionOpened answer.
func openStream(
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

// ID is the session id the scheduler assigned.
func (s *Session) ID() string { return s.id }

// IdleTimeout is how long the scheduler keeps a silent session (heartbeats keep it alive).
func (s *Session) IdleTimeout() time.Duration { return s.idleTimeout }

// Err is why the session ended, or nil while it is open.
func (s *Session) Err() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.err
}

// Close ends the stream; requests still pending fail with ErrClosed. The scheduler releases
// the session's training models after its idle timeout.
func (s *Session) Close() error {
	s.closeOnce.Do(func() {
		s.fail(ErrClosed)
		s.sendMu.Lock()
		s.stream.CloseSend()
		s.sendMu.Unlock()
		s.cancel()
		<-s.readerDone
		s.client.track(s, false)
	})
	return nil
}

// submit sends one Submit under a fresh request id; its answer completes the returned future.
func (s *Session) submit(submit *treadlev1.Submit) *Future {
	submit.RequestId = "r" + strconv.FormatInt(s.nextID.Add(1), 10)
	future := newFuture(submit.RequestId)
	s.mu.Lock()
	if s.err != nil {
		s.mu.Unlock()
		future.complete(nil, s.err)
		return future
	}
	s.pending[submit.RequestId] = future
	s.mu.Unlock()
	err := s.send(&treadlev1.ClientMessage{Kind: &treadlev1.ClientMessage_Submit{Submit: submit}})
	if err != nil && err != io.EOF { // io.EOF: the stream broke and the reader reports why
		s.resolve(submit.RequestId, nil, errorFromStatus(err))
	}
	return future
}

func (s *Session) send(message *treadlev1.ClientMessage) error {
	s.sendMu.Lock()
	defer s.sendMu.Unlock()
	return s.stream.Send(message)
}

// read completes futures from the stream's answers until the stream ends.
func (s *Session) read() {
	defer close(s.readerDone)
	for {
		message, err := s.stream.Recv()
		if err == io.EOF {
			s.fail(ErrClosed)
			return
		}
		if err != nil {
			s.fail(errorFromStatus(err))
			return
		}
		switch kind := message.Kind.(type) {
		case *treadlev1.ServerMessage_Result:
			s.resolve(kind.Result.GetRequestId(), kind.Result, nil)
		case *treadlev1.ServerMessage_Error:
			failure := errorFromDetail(kind.Error.GetError())
			if kind.Error.GetRequestId() == "" { // a session-level error ends the stream
				s.fail(failure)
				return
			}
			s.resolve(kind.Error.GetRequestId(), nil, failure)
		}
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
		case <-s.readerDone:
			return
		case <-ticker.C:
			if s.send(beat) != nil {
				return
			}
		}
	}
}

func (s *Session) resolve(requestID string, result *treadlev1.Result, err error) {
	s.mu.Lock()
	future, ok := s.pending[requestID]
	delete(s.pending, requestID)
	s.mu.Unlock()
	if ok {
		future.complete(result, err)
	}
}

// fail ends the session: every pending request and every later one fails with err.
func (s *Session) fail(err error) {
	s.mu.Lock()
	if s.err == nil {
		s.err = err
	}
	pending := s.pending
	s.pending = map[string]*Future{}
	err = s.err
	s.mu.Unlock()
	for _, future := range pending {
		future.complete(nil, err)
	}
}
