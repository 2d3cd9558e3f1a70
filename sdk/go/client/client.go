// Package client is a Go client of Treadle's public API, the treadle.v1.Treadle gRPC service.
//
// A Client is one connection that sends the API key as x-api-key metadata on every call. A
// Session is one long-lived Session stream: requests go out as Submit messages tagged with a
// request id and each returns a *Future, completed by a background goroutine that reads the
// stream and matches Results and Errors to futures by request id. A TrainingModel numbers its
// requests seq_id 1, 2, 3, ..., which the scheduler runs strictly in that order, so a loop may
// submit forward_backward and optim_step back to back and wait later. A session stream lost to
// a transient failure is reopened, the session resumed and unanswered requests sent again with
// their seq_ids, which the scheduler runs once (see Session and ReconnectAttempts).
//
//	c, err := client.Dial(ctx, "localhost:8470", apiKey)
//	session, err := c.OpenSession(ctx)
//	model, err := session.CreateModel(ctx, "treadle/tiny-llama", 8)
//	fb := model.ForwardBackward(data, client.CrossEntropy)
//	step := model.OptimStep(client.Adam(5e-3))
//	result, err := fb.Wait(ctx) // result.GetForwardBackward().GetMetrics()["loss:sum"]
package client

import (
	"context"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/keepalive"

	"treadle/sdk/go/treadlev1"
)

// Version is sent as the session's client_version.
const Version = "treadle-go/0.1.0"

// maxMessageBytes matches the services' message size limit.
const maxMessageBytes = 64 * 1024 * 1024

// Client is a connection to a Treadle scheduler. It is safe for concurrent use.
type Client struct {
	conn         *grpc.ClientConn
	api          treadlev1.TreadleClient
	capabilities *treadlev1.Capabilities
	mu           sync.Mutex
	sessions     map[*Session]struct{}
}

// apiKey attaches the key to every call of the connection.
type apiKey string

func (k apiKey) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	return map[string]string{"x-api-key": string(k)}, nil
}

// RequireTransportSecurity is false: the mesh serves plaintext gRPC (TLS ends at a proxy).
func (k apiKey) RequireTransportSecurity() bool { return false }

// DialOption changes how Dial connects.
type DialOption func(*dialConfig)

type dialConfig struct {
	keepalive keepalive.ClientParameters
}

// Keepalive sets how a connection that died silently (no reset: a lost route, a frozen peer)
// is noticed: a ping after every `every` without a message from the scheduler, and the
// connection is closed if nothing arrives within `timeout` of it; its session stream then
// reconnects on a fresh connection. Default: 20 s and 10 s. gRPC raises `every` to at least
// 10 s (so keepalive cannot be turned off, only slowed down).
func Keepalive(every, timeout time.Duration) DialOption {
	return func(c *dialConfig) { c.keepalive.Time, c.keepalive.Timeout = every, timeout }
}

// Dial connects to target ("host:port"; a grpc://, http:// or https:// prefix is ignored) and
// checks the API key with GetCapabilities, so a wrong key or address fails here, plainly, as a
// *RequestError (UNAUTHENTICATED, UNAVAILABLE, ...).
func Dial(ctx context.Context, target, key string, options ...DialOption) (*Client, error) {
	if key == "" {
		return nil, invalid("api_key", "is empty")
	}
	config := dialConfig{keepalive: keepalive.ClientParameters{
		Time: 20 * time.Second, Timeout: 10 * time.Second, PermitWithoutStream: true,
	}}
	for _, option := range options {
		option(&config)
	}
	conn, err := grpc.DialContext(ctx, trimScheme(target),
		grpc.WithInsecure(),
		grpc.WithPerRPCCredentials(apiKey(key)),
		grpc.WithKeepaliveParams(config.keepalive),
		grpc.WithDefaultCallOptions(
			grpc.MaxCallRecvMsgSize(maxMessageBytes),
			grpc.MaxCallSendMsgSize(maxMessageBytes),
		),
	)
	if err != nil {
		return nil, errorFromStatus(err)
	}
	c := &Client{
		conn:     conn,
		api:      treadlev1.NewTreadleClient(conn),
		sessions: map[*Session]struct{}{},
	}
	c.capabilities, err = c.api.GetCapabilities(ctx, &treadlev1.GetCapabilitiesRequest{})
	if err != nil {
		conn.Close()
		return nil, errorFromStatus(err)
	}
	return c, nil
}

func trimScheme(target string) string {
	for _, scheme := range []string{"grpc://", "http://", "https://"} {
		target = strings.TrimPrefix(target, scheme)
	}
	return strings.TrimRight(target, "/")
}

// Capabilities are the base models served and their limits, as read when dialling.
func (c *Client) Capabilities() *treadlev1.Capabilities { return c.capabilities }

// API is the generated stub on this connection (the key is attached), for the unary calls this
// package does not wrap: GetInfo, ListCheckpoints, DeleteCheckpoints, SetCheckpointTtl, ...
func (c *Client) API() treadlev1.TreadleClient { return c.api }

// Close closes the sessions still open (their pending requests fail with ErrClosed), then the
// connection.
func (c *Client) Close() error {
	c.mu.Lock()
	sessions := make([]*Session, 0, len(c.sessions))
	for s := range c.sessions {
		sessions = append(sessions, s)
	}
	c.mu.Unlock()
	for _, s := range sessions {
		s.Close()
	}
	return c.conn.Close()
}

// track records the sessions open on the connection, for Close.
func (c *Client) track(s *Session, open bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if open {
		c.sessions[s] = struct{}{}
	} else {
		delete(c.sessions, s)
	}
}
