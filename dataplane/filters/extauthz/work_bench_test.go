package extauthz

import (
	"net"
	"net/http"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	authv3 "github.com/envoyproxy/go-control-plane/envoy/service/auth/v3"
	"google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/dataplane/core"
)

// BenchmarkCheckWork is the filter's own work on the allow path of a gRPC
// authorizer, without the network: filling and encoding the CheckRequest,
// decoding an OK with a header to set, applying it to the request.
func BenchmarkCheckWork(b *testing.B) {
	g := &grpcService{ingestMetadata: true}
	conn := &core.ConnInfo{RemoteAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 40000}, LocalAddr: &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 8000}}
	okBytes, _ := proto.Marshal(&authv3.CheckResponse{Status: &status.Status{}, HttpResponse: &authv3.CheckResponse_OkResponse{OkResponse: &authv3.OkHttpResponse{
		Headers: []*corev3.HeaderValueOption{{Header: &corev3.HeaderValue{Key: "x-ext-authz-check-result", Value: "allowed"}}}}}})
	req, _ := http.NewRequest("GET", "http://httpbin.foo:8000/headers?x=1", nil)
	req.Header = http.Header{"X-Ext-Authz": {"allow"}, "User-Agent": {"curl/8"}, "Accept": {"*/*"}, "X-Request-Id": {"0b6d1d4e-2c6f-4c0c-9e0f-3f7c8a7b9d10"}}
	b.ReportAllocs()
	for b.Loop() {
		cr := g.buildRequest(&checkInput{req: req, conn: conn})
		if _, err := proto.Marshal(cr); err != nil {
			b.Fatal(err)
		}
		out := &authv3.CheckResponse{}
		if err := proto.Unmarshal(okBytes, out); err != nil {
			b.Fatal(err)
		}
		r := g.toResponse(out)
		h := req.Header
		for _, op := range r.upstream {
			applyOp(h, op)
		}
	}
}
