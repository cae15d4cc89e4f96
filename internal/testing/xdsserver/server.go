// Package xdsserver runs a real xDS management server inside a test:
// go-control-plane's gRPC ADS server (state of the world and delta) over
// its snapshot cache, on 127.0.0.1, recording every ACK and NACK the
// proxies send, so tests drive skiff-proxy exactly as a control plane does.
package xdsserver

import (
	"context"
	"net"
	"strconv"
	"sync"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

// NodeID is the node id test bootstraps use.
const NodeID = "skiff-test"

// Response is one ACK or NACK the server saw from a proxy.
type Response struct {
	TypeURL string
	Version string // version_info the proxy reports (the last accepted)
	Nonce   string
	NACK    string // error_detail message; empty for an ACK
}

// Server is a running management server.
type Server struct {
	Addr  string
	Cache cachev3.SnapshotCache

	grpc      *grpc.Server
	mu        sync.Mutex
	version   int
	seen      []Response
	requested map[string]bool
	changed   chan struct{}
}

// T is the part of testing.TB the server uses, so tools outside tests
// (the config-churn load tool) can run it too.
type T interface {
	Helper()
	Fatal(args ...any)
	Fatalf(format string, args ...any)
	Cleanup(func())
}

// Start serves on a free loopback port until the test ends.
func Start(t T) *Server { return StartAt(t, "127.0.0.1:0") }

// StartAt serves on addr: a test restarts a server on the address a proxy
// already knows.
func StartAt(t T, addr string) *Server {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the previous server's socket may linger briefly
		if ln, err = net.Listen("tcp", addr); err == nil {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	if err != nil {
		t.Fatal(err)
	}
	s := &Server{Addr: ln.Addr().String(), changed: make(chan struct{})}
	s.Cache = cachev3.NewSnapshotCache(true, cachev3.IDHash{}, nil)
	cb := serverv3.CallbackFuncs{
		StreamRequestFunc: func(_ int64, r *discoveryv3.DiscoveryRequest) error {
			s.record(r.GetTypeUrl(), r.GetVersionInfo(), r.GetResponseNonce(), r.GetErrorDetail().GetMessage())
			return nil
		},
		StreamDeltaRequestFunc: func(_ int64, r *discoveryv3.DeltaDiscoveryRequest) error {
			s.record(r.GetTypeUrl(), "", r.GetResponseNonce(), r.GetErrorDetail().GetMessage())
			return nil
		},
	}
	srv := serverv3.NewServer(context.Background(), s.Cache, cb)
	s.grpc = grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(s.grpc, srv)
	go s.grpc.Serve(ln)
	t.Cleanup(s.Stop)
	return s
}

func (s *Server) record(typeURL, version, nonce, nack string) {
	s.mu.Lock()
	if s.requested == nil {
		s.requested = map[string]bool{}
	}
	s.requested[typeURL] = true
	if nonce == "" {
		s.mu.Unlock()
		return // an initial request or a subscription change, not an answer
	}
	s.seen = append(s.seen, Response{TypeURL: typeURL, Version: version, Nonce: nonce, NACK: nack})
	close(s.changed)
	s.changed = make(chan struct{})
	s.mu.Unlock()
}

// Stop ends the server and every stream.
func (s *Server) Stop() { s.grpc.Stop() }

// Set publishes a new snapshot for NodeID with the given resources and
// returns its version. Types left out are empty.
func (s *Server) Set(t T, res ...types.Resource) string {
	t.Helper()
	s.mu.Lock()
	s.version++
	v := strconv.Itoa(s.version)
	s.mu.Unlock()
	byType := map[resourcev3.Type][]types.Resource{}
	for _, r := range res {
		tu := "type.googleapis.com/" + string(proto.MessageName(r))
		byType[tu] = append(byType[tu], r)
	}
	snap, err := cachev3.NewSnapshot(v, byType)
	if err != nil {
		t.Fatal(err)
	}
	if err := s.Cache.SetSnapshot(context.Background(), NodeID, snap); err != nil {
		t.Fatal(err)
	}
	return v
}

// Requested reports whether a proxy has asked for typeURL at all.
func (s *Server) Requested(typeURL string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.requested[typeURL]
}

// Responses returns what the proxies answered so far.
func (s *Server) Responses() []Response {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Response(nil), s.seen...)
}

// WaitFor waits until a response satisfies ok, or fails the test after d.
func (s *Server) WaitFor(t T, d time.Duration, what string, ok func(Response) bool) Response {
	t.Helper()
	deadline := time.After(d)
	for {
		s.mu.Lock()
		for _, r := range s.seen {
			if ok(r) {
				s.mu.Unlock()
				return r
			}
		}
		ch := s.changed
		s.mu.Unlock()
		select {
		case <-ch:
		case <-deadline:
			t.Fatalf("xDS server: no %s within %v; responses seen: %+v", what, d, s.Responses())
		}
	}
}

// Bootstrap returns an Envoy v3 bootstrap (YAML) that points a proxy at this
// server over ADS, with the admin API on a free loopback port.
func (s *Server) Bootstrap(delta bool) string {
	return xdsres.ADSBootstrap(s.Addr, NodeID, "{}", delta)
}
