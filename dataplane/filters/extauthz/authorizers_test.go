// The proxy tests are an external test package: dataplane/proxy links this
// filter in, so the package's own tests cannot import it.
package extauthz_test

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"github.com/skiff-mesh/skiff/internal/testing/proxytest"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// The rule of Istio's sample ext-authz server: a request carrying
// x-ext-authz: allow is allowed, any other is denied with 403, a body and
// the x-ext-authz-check-result header.
const (
	checkHeader  = "x-ext-authz"
	resultHeader = "x-ext-authz-check-result"
	deniedBody   = "denied by ext_authz for not found header `x-ext-authz: allow` in the request"
)

// httpAuthorizer is the sample's HTTP flavour. It records the check
// requests it sees; x-ext-authz: slow makes it wait 2 s, fail answers 500.
type httpAuthorizer struct {
	addr  string
	calls atomic.Int64
	mu    sync.Mutex
	last  *http.Request
}

func startHTTPAuthorizer(t testing.TB) *httpAuthorizer {
	t.Helper()
	a := &httpAuthorizer{}
	a.addr = proxytest.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		a.calls.Add(1)
		a.mu.Lock()
		a.last = r.Clone(context.Background())
		a.mu.Unlock()
		switch r.Header.Get(checkHeader) {
		case "allow":
			w.Header().Set(resultHeader, "allowed")
			w.Header().Set("x-ext-authz-not-forwarded", "1")
			w.WriteHeader(http.StatusOK)
		case "slow":
			select {
			case <-time.After(2 * time.Second):
			case <-r.Context().Done():
			}
			w.WriteHeader(http.StatusOK)
		case "fail":
			w.WriteHeader(http.StatusInternalServerError)
		default:
			w.Header().Set(resultHeader, "denied")
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			w.WriteHeader(http.StatusForbidden)
			io.WriteString(w, deniedBody)
		}
	}))
	return a
}

func (a *httpAuthorizer) lastRequest() *http.Request {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

// grpcAuthorizer is the sample's gRPC flavour (envoy.service.auth.v3).
// For connections (no HTTP request) it allows while allowTCP is set.
type grpcAuthorizer struct {
	authv3.UnimplementedAuthorizationServer
	addr     string
	calls    atomic.Int64
	allowTCP atomic.Bool
	mu       sync.Mutex
	last     *authv3.CheckRequest
}

func startGRPCAuthorizer(t testing.TB) *grpcAuthorizer {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	a := &grpcAuthorizer{addr: ln.Addr().String()}
	srv := grpc.NewServer()
	authv3.RegisterAuthorizationServer(srv, a)
	go srv.Serve(ln)
	t.Cleanup(srv.Stop)
	return a
}

func (a *grpcAuthorizer) lastRequest() *authv3.CheckRequest {
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.last
}

func (a *grpcAuthorizer) Check(ctx context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	a.calls.Add(1)
	a.mu.Lock()
	a.last = proto.Clone(req).(*authv3.CheckRequest)
	a.mu.Unlock()
	hr := req.GetAttributes().GetRequest().GetHttp()
	if hr == nil {
		if a.allowTCP.Load() {
			return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.OK)}}, nil
		}
		return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.PermissionDenied)}}, nil
	}
	switch hr.GetHeaders()[checkHeader] {
	case "allow":
		md, _ := structpb.NewStruct(map[string]any{"user": "alice"})
		return &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers: []*corev3.HeaderValueOption{
					{Header: &corev3.HeaderValue{Key: resultHeader, Value: "allowed"}},
					{Header: &corev3.HeaderValue{Key: "x-ext-authz-additional-header-override", Value: "grpc-additional-header-override-value"}},
					{Header: &corev3.HeaderValue{Key: "x-appended", Value: "from-authz"}, Append: wrapperspb.Bool(true)},
				},
				HeadersToRemove:      []string{"x-remove-me"},
				ResponseHeadersToAdd: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-ext-authz-response", Value: "ok"}}},
			}},
			DynamicMetadata: md,
		}, nil
	case "slow":
		select {
		case <-time.After(2 * time.Second):
		case <-ctx.Done():
		}
		return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.OK)}}, nil
	}
	return &authv3.CheckResponse{
		Status: &status.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
			Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: resultHeader, Value: "denied"}}},
			Body:    deniedBody,
		}},
	}, nil
}

// backend answers with the request it got as JSON: method, path and
// headers, so tests see what reached the upstream.
type seen struct {
	Method, Path string
	Header       http.Header
}

func startBackend(t testing.TB) string {
	return proxytest.ServeHTTP(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(seen{Method: r.Method, Path: r.URL.RequestURI(), Header: r.Header})
	}))
}

// closedPort is a loopback address nothing listens on.
func closedPort(t testing.TB) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}
