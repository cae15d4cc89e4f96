package server_test

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/skiff-mesh/skiff/controlplane/server"
)

const (
	cdsType = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
	ldsType = "type.googleapis.com/envoy.config.listener.v3.Listener"
	rdsType = "type.googleapis.com/envoy.config.route.v3.RouteConfiguration"
)

// scopeProxy is one sidecar on a real ADS stream: it ACKs what it gets
// and hands every response to the test.
type scopeProxy struct {
	id     string
	stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	got    chan *discoveryv3.DiscoveryResponse
}

func connectSidecar(t *testing.T, ctx context.Context, cc *grpc.ClientConn, pod, ns, app string) *scopeProxy {
	t.Helper()
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	md, _ := structpb.NewStruct(map[string]any{"NAMESPACE": ns, "LABELS": map[string]any{"app": app}})
	p := &scopeProxy{id: pod + "." + ns, stream: stream, got: make(chan *discoveryv3.DiscoveryResponse, 16)}
	node := &corev3.Node{Id: "sidecar~198.18.0.9~" + pod + "." + ns + "~" + ns + ".svc.cluster.local", Metadata: md}
	go func() {
		for {
			r, err := stream.Recv()
			if err != nil {
				close(p.got)
				return
			}
			p.got <- r
		}
	}()
	// Clusters and listeners (wildcard), then the route configurations
	// of both ports, each ACKed as Envoy does.
	for _, req := range []*discoveryv3.DiscoveryRequest{
		{Node: node, TypeUrl: cdsType}, {TypeUrl: ldsType}, {TypeUrl: rdsType, ResourceNames: []string{"8080", "9080"}},
	} {
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		r := p.next(t, req.TypeUrl)
		if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce, ResourceNames: req.ResourceNames}); err != nil {
			t.Fatal(err)
		}
	}
	return p
}

// next waits for p's next response, which must be of typeURL, and ACKs it.
func (p *scopeProxy) next(t *testing.T, typeURL string) *discoveryv3.DiscoveryResponse {
	t.Helper()
	select {
	case r, ok := <-p.got:
		if !ok {
			t.Fatalf("%s: stream ended", p.id)
		}
		if r.TypeUrl != typeURL {
			t.Fatalf("%s got %s, want %s", p.id, r.TypeUrl, typeURL)
		}
		return r
	case <-time.After(10 * time.Second):
		t.Fatalf("%s: no %s response within 10 s", p.id, typeURL)
	}
	return nil
}

// routes ACKs p's responses until its route configurations come. (With a
// Sidecar in the mesh a VirtualService edit pushes clusters and listeners
// too: the Sidecar imports what the VirtualService routes to.)
func (p *scopeProxy) routes(t *testing.T) {
	t.Helper()
	for {
		var r *discoveryv3.DiscoveryResponse
		select {
		case r = <-p.got:
			if r == nil {
				t.Fatalf("%s: stream ended", p.id)
			}
		case <-time.After(10 * time.Second):
			t.Fatalf("%s: no route configuration pushed within 10 s", p.id)
		}
		var names []string
		if r.TypeUrl == rdsType {
			names = []string{"8080", "9080"}
		}
		if err := p.stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: r.TypeUrl, VersionInfo: r.VersionInfo, ResponseNonce: r.Nonce, ResourceNames: names}); err != nil {
			t.Fatal(err)
		}
		if r.TypeUrl == rdsType {
			return
		}
	}
}

// quiet requires that p got nothing: the push of the change, when one is
// made, has been dispatched by the time quiet is called.
func (p *scopeProxy) quiet(t *testing.T, what string) {
	t.Helper()
	select {
	case r := <-p.got:
		t.Errorf("%s: %s got a %s push (version %s); its config did not change", what, p.id, r.GetTypeUrl(), r.GetVersionInfo())
	default:
	}
}

// skiffd on files, with sidecars of three namespaces on real ADS streams:
// an edit of config only some of them see is pushed to those alone, as
// Istio scopes pushes (testdata/scope.yaml: b's private VirtualService;
// search's, which a's Sidecar does not import; a gateway's).
func TestEditReachesOnlyTheProxiesThatSeeIt(t *testing.T) {
	data, err := os.ReadFile("testdata/scope.yaml")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	file := filepath.Join(dir, "mesh.yaml")
	if err := os.WriteFile(file, data, 0o644); err != nil {
		t.Fatal(err)
	}
	o := server.Options{ConfigDir: dir, XDSAddr: "127.0.0.1:0", MonitoringAddr: "127.0.0.1:0",
		Logger: slog.New(slog.DiscardHandler)}
	srv, err := server.New(o)
	if err != nil {
		t.Fatal(err)
	}
	runServer(t, o, srv)
	cc, err := grpc.NewClient(srv.XDSAddr().String(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	web := connectSidecar(t, ctx, cc, "web-0", "a", "web")
	api := connectSidecar(t, ctx, cc, "api-0", "b", "api")
	client := connectSidecar(t, ctx, cc, "client-0", "c", "client")

	text := string(data)
	edit := func(old, new string) {
		t.Helper()
		if !strings.Contains(text, old) {
			t.Fatalf("testdata/scope.yaml lacks %q", old)
		}
		text = strings.Replace(text, old, new, 1)
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	for _, step := range []struct {
		what, old, new  string
		reached, passed []*scopeProxy
	}{
		{"b's private VirtualService retried 3 times", "attempts: 5", "attempts: 3", []*scopeProxy{api}, []*scopeProxy{web, client}},
		{"search's timeout 4s", "timeout: 3s", "timeout: 4s", []*scopeProxy{api, client}, []*scopeProxy{web}},
		{"the gateway's VirtualService", "port: {number: 9080}}}]", "port: {number: 9080}}, headers: {request: {set: {x-via: gw}}}}]", nil, []*scopeProxy{web, api, client}},
		{"web's routes", "  - route: [{destination: {host: web}}]", "  - route: [{destination: {host: web}}]\n    timeout: 2s", []*scopeProxy{web, api, client}, nil},
	} {
		edit(step.old, step.new)
		for _, p := range step.reached {
			p.routes(t)
		}
		// Well past the file source's 20 ms and the 100 ms debounce: a
		// push to the others would have come with the first ones.
		time.Sleep(700 * time.Millisecond)
		for _, p := range step.passed {
			p.quiet(t, step.what)
		}
	}
}
