package lds

import (
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/gen/rds"
	"github.com/skiff-mesh/skiff/controlplane/xds"
	"github.com/skiff-mesh/skiff/dataplane/compile"
	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/dataplane/listener"
	"github.com/skiff-mesh/skiff/dataplane/upstream"
	"github.com/skiff-mesh/skiff/dataplane/xdsclient"
	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
)

// TestSidecarOutboundTraffic drives a sidecar's generated listeners and
// routes through skiff-proxy's own managers, with the capture simulated:
// connections to virtualOutbound (moved to 127.0.0.1) report the reviews
// VIP as their original destination, so they are handed to 0.0.0.0_9080,
// sniffed as HTTP, and routed by RDS "9080" with Bookinfo's
// jason-v2-v3 VirtualService. Clusters are written by hand to reach
// local backends.
func TestSidecarOutboundTraffic(t *testing.T) {
	ix := bookinfoIndex(t,
		indextest.Sample(t, "bookinfo/networking/destination-rule-all.yaml"),
		indextest.Sample(t, "bookinfo/networking/virtual-service-reviews-jason-v2-v3.yaml"))
	pp := indextest.SidecarFor(t, ix, "default", "productpage-v1-0")
	vip := ix.Registry().Service("reviews.default.svc.cluster.local", "default").Addresses[0]
	origDst := &net.TCPAddr{IP: net.ParseIP(vip), Port: 9080}

	routes := hcm.NewRouteRegistry()
	logger := slog.New(slog.NewTextHandler(io.Discard, nil))
	cfg := compile.New(compile.Options{Routes: routes, Logger: logger})
	clusters := upstream.NewManager(upstream.Options{Secrets: cfg.Secrets(), Logger: logger})
	lm := listener.NewManager(listener.Options{
		Secrets: cfg.Secrets(), Logger: logger, DrainTime: 10 * time.Millisecond,
		Factory:     &compile.ChainFactory{Clusters: clusters, Routes: routes, Logger: logger},
		OriginalDst: func(net.Conn) (*net.TCPAddr, error) { return origDst, nil },
	})
	t.Cleanup(lm.Close)
	cfg.SetParts(clusters, lm)

	var cds, eds []xdsclient.Resource
	for _, v := range []string{"v1", "v2", "v3"} {
		name := fmt.Sprintf("outbound|9080|%s|reviews.default.svc.cluster.local", v)
		cds = append(cds, xdsclient.Resource{Name: name, Message: xdsres.EDSCluster(name)})
		eds = append(eds, xdsclient.Resource{Name: name, Message: xdsres.Endpoints(name, backend(t, "reviews-"+v))})
	}
	apply := func(typeURL string, rs []xdsclient.Resource) {
		t.Helper()
		if err := cfg.OnUpdate(typeURL, &xdsclient.Update{Full: true, Resources: rs, Version: "1"}); err != nil {
			t.Fatalf("skiff-proxy would NACK %s: %v", xds.ShortType(typeURL), err)
		}
	}
	apply(xds.ClusterType, cds)
	apply(xds.EndpointType, eds)
	var lds []xdsclient.Resource
	for _, l := range indextest.Unpack[*listenerv3.Listener](t, Generate(pp, ix)) {
		if l.GetName() == "virtualOutbound" {
			l = proto.Clone(l).(*listenerv3.Listener)
			l.Address = &corev3.Address{Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{
				Address: "127.0.0.1", PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: 0}}}}
		}
		if l.GetName() == "virtualInbound" {
			continue // binds 0.0.0.0:15006; inbound is not under test here
		}
		lds = append(lds, xdsclient.Resource{Name: l.GetName(), Message: l})
	}
	apply(xds.ListenerType, lds)
	rcs := indextest.Unpack[*routev3.RouteConfiguration](t, rds.Generate(pp, ix, []string{"9080"}))
	apply(xds.RouteType, []xdsclient.Resource{{Name: "9080", Message: rcs[0]}})

	addr := lm.Addr("virtualOutbound")
	if addr == nil {
		t.Fatal("virtualOutbound is not listening")
	}
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
	for _, c := range []struct{ user, want string }{{"", "reviews-v3"}, {"jason", "reviews-v2"}} {
		req, _ := http.NewRequest("GET", "http://"+addr.String()+"/reviews/0", nil)
		req.Host = "reviews:9080"
		if c.user != "" {
			req.Header.Set("end-user", c.user)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("GET reviews (end-user %q): %v", c.user, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || resp.Header.Get("x-upstream") != c.want {
			t.Errorf("end-user %q: status %d from %q, want 200 from %q", c.user, resp.StatusCode, resp.Header.Get("x-upstream"), c.want)
		}
	}
}
