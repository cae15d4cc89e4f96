package extauthz_test

import (
	"io"
	"net/http"
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/internal/testing/proxytest"
)

// BenchmarkAllowPath is one allowed GET through a real skiff-proxy:
// without ext_authz (the baseline), and with an HTTP and a gRPC authorizer
// that allow at once. The difference to the baseline is the filter's cost
// plus one loopback round trip to the authorizer; BenchmarkCheckWork has
// the filter's own work without the round trip.
func BenchmarkAllowPath(b *testing.B) {
	httpAuth, grpcAuth := startHTTPAuthorizer(b), startGRPCAuthorizer(b)
	cfg := "admin: {address: {socket_address: {address: 127.0.0.1, port_value: 0}}}\nstatic_resources:\n  clusters:" +
		staticCluster("backend", proxytest.ServeHTTP(b, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") })), false) +
		staticCluster("authz-http", httpAuth.addr, false) +
		staticCluster("outbound|9000||ext-authz.foo.svc.cluster.local", grpcAuth.addr, true) +
		"  listeners:" +
		listenerYAML("none", "", "") +
		listenerYAML("http_authz", httpAuthzFilter, "") +
		listenerYAML("grpc_authz", grpcAuthzFilter, "")
	p := proxytest.Start(b, cfg)
	for _, l := range []string{"none", "http_authz", "grpc_authz"} {
		b.Run(l, func(b *testing.B) {
			tr := &http.Transport{MaxIdleConnsPerHost: 64}
			defer tr.CloseIdleConnections()
			url := "http://" + p.ListenerAddr(l).String() + "/headers"
			b.ReportAllocs()
			b.RunParallel(func(pb *testing.PB) {
				req, _ := http.NewRequest("GET", url, nil)
				req.Header.Set(checkHeader, "allow")
				for pb.Next() {
					resp, err := tr.RoundTrip(req)
					if err != nil {
						b.Fatal(err)
					}
					body, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "ok") {
						b.Fatalf("%s: %d %q", l, resp.StatusCode, body)
					}
				}
			})
		})
	}
}
