// Package extauthz is the local mesh's version of Istio's ext-authz sample:
// an external authorizer for AuthorizationPolicy's CUSTOM action. It
// allows a request that carries the header `x-ext-authz: allow` and denies
// every other, over HTTP (Envoy's ext_authz HTTP service: the check is the
// original request's method, path and headers) and over gRPC
// (envoy.service.auth.v3.Authorization/Check), and says which it did in
// `x-ext-authz-check-result`, as Istio's sample does.
package extauthz

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc/codes"
)

// The header the authorizer reads, its allowing value, and the headers it
// answers with.
const (
	CheckHeader  = "x-ext-authz"
	AllowValue   = "allow"
	ResultHeader = "x-ext-authz-check-result"
	// ReceivedHeader echoes, on allowed requests, what the authorizer saw,
	// so a test or a user can tell the check happened.
	ReceivedHeader = "x-ext-authz-check-received"
	Allowed        = "allowed"
	Denied         = "denied"
)

func deniedBody(via string) string {
	return fmt.Sprintf("denied by ext_authz (%s) for not found header `%s: %s` in the request", via, CheckHeader, AllowValue)
}

// HTTP is the authorizer's HTTP service: 200 allows, 403 denies.
type HTTP struct{ Log *slog.Logger }

func (h HTTP) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	seen := fmt.Sprintf("%s %s%s", r.Method, r.Host, r.URL.RequestURI())
	if r.Header.Get(CheckHeader) == AllowValue {
		w.Header().Set(ResultHeader, Allowed)
		w.Header().Set(ReceivedHeader, seen)
		h.log().Info("http check allowed", "request", seen)
		return
	}
	w.Header().Set(ResultHeader, Denied)
	w.WriteHeader(http.StatusForbidden)
	fmt.Fprint(w, deniedBody("http"))
	h.log().Info("http check denied", "request", seen)
}

func (h HTTP) log() *slog.Logger {
	if h.Log == nil {
		return slog.Default()
	}
	return h.Log
}

// GRPC is the authorizer's envoy.service.auth.v3.Authorization service.
type GRPC struct {
	authv3.UnimplementedAuthorizationServer
	Log *slog.Logger
}

// Check allows when the request carries x-ext-authz: allow. A TCP
// connection (no HTTP request in the check) is allowed when its source
// principal is set, i.e. it came over mesh mTLS.
func (g GRPC) Check(_ context.Context, req *authv3.CheckRequest) (*authv3.CheckResponse, error) {
	log := g.Log
	if log == nil {
		log = slog.Default()
	}
	attrs := req.GetAttributes()
	h := attrs.GetRequest().GetHttp()
	if h == nil {
		src := attrs.GetSource().GetPrincipal()
		if src != "" {
			log.Info("grpc connection check allowed", "source", src)
			return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.OK)}}, nil
		}
		log.Info("grpc connection check denied: no source principal")
		return &authv3.CheckResponse{Status: &status.Status{Code: int32(codes.PermissionDenied)}}, nil
	}
	seen := fmt.Sprintf("%s %s%s", h.GetMethod(), h.GetHost(), h.GetPath())
	if strings.EqualFold(h.GetHeaders()[CheckHeader], AllowValue) {
		log.Info("grpc check allowed", "request", seen)
		return &authv3.CheckResponse{
			Status: &status.Status{Code: int32(codes.OK)},
			HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
				Headers: []*corev3.HeaderValueOption{
					{Header: &corev3.HeaderValue{Key: ResultHeader, Value: Allowed}},
					{Header: &corev3.HeaderValue{Key: ReceivedHeader, Value: seen}},
				},
			}},
		}, nil
	}
	log.Info("grpc check denied", "request", seen)
	return &authv3.CheckResponse{
		Status: &status.Status{Code: int32(codes.PermissionDenied)},
		HttpResponse: &authv3.CheckResponse_DeniedResponse{DeniedResponse: &authv3.DeniedHttpResponse{
			Status:  &typev3.HttpStatus{Code: typev3.StatusCode_Forbidden},
			Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: ResultHeader, Value: Denied}}},
			Body:    deniedBody("grpc"),
		}},
	}, nil
}
