package lds

import (
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/proxytest"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/gen/rds"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"github.com/skiff-mesh/skiff/internal/testing/xdsserver"
)

// backend answers with its name and what it saw.
func backend(t *testing.T, name string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-upstream", name)
		w.Header().Set("x-seen-uri", r.RequestURI)
		w.Header().Set("x-seen-from", r.Header.Get("x-from"))
		io.WriteString(w, name)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String()
}

// TestGatewayTraffic serves the generated gateway listener and routes
// from an xDS server to a real skiff-proxy and sends requests through
// it: the proxy must ACK them and route as the VirtualService says. The
// listener's address is moved to 127.0.0.1:0 (tests bind loopback only);
// clusters are written by hand to reach local backends.
func TestGatewayTraffic(t *testing.T) {
	ix := bookinfoIndex(t, indextest.Testdata(t, "gateway-traffic.yaml"))
	gw := indextest.Router("default", map[string]string{"istio": "ingressgateway"})
	ls := indextest.Unpack[*listenerv3.Listener](t, Generate(gw, ix))
	rcs := indextest.Unpack[*routev3.RouteConfiguration](t, rds.Generate(gw, ix, nil))
	if len(ls) != 1 || len(rcs) != 1 {
		t.Fatalf("want one listener and one route configuration, got %d and %d", len(ls), len(rcs))
	}
	ls[0].Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
		Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0},
	}}}
	res := []types.Resource{ls[0], rcs[0]}
	for _, v := range []string{"v1", "v2", "v3"} {
		name := fmt.Sprintf("outbound|9080|%s|reviews.default.svc.cluster.local", v)
		res = append(res, xdsres.EDSCluster(name), xdsres.Endpoints(name, backend(t, "reviews-"+v)))
	}
	xds := xdsserver.Start(t)
	xds.Set(t, res...)
	p := proxytest.Start(t, xds.Bootstrap(false))
	addr := p.ListenerAddr(ls[0].GetName())
	if addr == nil {
		t.Fatalf("listener %q not running", ls[0].GetName())
	}
	for _, r := range xds.Responses() {
		if r.NACK != "" {
			t.Fatalf("skiff-proxy NACKed %s: %s", r.TypeURL, r.NACK)
		}
	}
	base := "http://" + addr.String()

	cases := []struct {
		path, header         string
		status               int
		upstream, uri, extra string
	}{
		{path: "/reviews/1", status: 200, upstream: "reviews-v1", uri: "/reviews/1"},
		{path: "/reviews/1", header: "end-user=jason", status: 200, upstream: "reviews-v2", uri: "/reviews/1"},
		{path: "/old/page", status: 308, extra: "/new"},
		{path: "/reviews/1", header: "x-abort=yes", status: 418},
		{path: "/api/x", status: 200, upstream: "reviews-v3", uri: "/v2/x", extra: "edge"},
		{path: "/strip/x/y", status: 200, upstream: "reviews-v3", uri: "/x/y"},
		{path: "/strip", status: 200, upstream: "reviews-v3", uri: "/"},
		{path: "/stripped", status: 200, upstream: "reviews-v1", uri: "/stripped"},
	}
	client := &http.Client{Timeout: 5 * time.Second, CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	for _, c := range cases {
		req, _ := http.NewRequest("GET", base+c.path, nil)
		if c.header != "" {
			k, v, _ := strings.Cut(c.header, "=")
			req.Header.Set(k, v)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET %s: %v", c.path, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != c.status {
			t.Errorf("GET %s (%s): status %d, want %d", c.path, c.header, resp.StatusCode, c.status)
			continue
		}
		if got := resp.Header.Get("x-upstream"); got != c.upstream {
			t.Errorf("GET %s (%s): served by %q, want %q", c.path, c.header, got, c.upstream)
		}
		if c.uri != "" && resp.Header.Get("x-seen-uri") != c.uri {
			t.Errorf("GET %s: backend saw %q, want %q", c.path, resp.Header.Get("x-seen-uri"), c.uri)
		}
		if c.status == 308 && resp.Header.Get("Location") != "http://"+addr.String()+c.extra {
			t.Errorf("redirect Location = %q", resp.Header.Get("Location"))
		}
		if c.upstream == "reviews-v3" && c.extra != "" && resp.Header.Get("x-seen-from") != c.extra {
			t.Errorf("header set: backend saw x-from %q, want %q", resp.Header.Get("x-seen-from"), c.extra)
		}
	}
}
