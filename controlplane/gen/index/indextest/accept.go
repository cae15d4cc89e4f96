package indextest

import (
	"io"
	"log/slog"
	"testing"

	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/controlplane/xds"
	"github.com/skiff-mesh/skiff/dataplane/compile"
	"github.com/skiff-mesh/skiff/dataplane/core"
	"github.com/skiff-mesh/skiff/dataplane/hcm"
	"github.com/skiff-mesh/skiff/dataplane/listener"
	"github.com/skiff-mesh/skiff/dataplane/route"
)

// Unpack returns the messages of resources, unwrapping Anys.
func Unpack[M proto.Message](t testing.TB, res []xds.Resource) []M {
	t.Helper()
	out := make([]M, 0, len(res))
	for _, r := range res {
		msg := r.Message
		if a, ok := msg.(*anypb.Any); ok {
			m, err := a.UnmarshalNew()
			if err != nil {
				t.Fatalf("resource %q: %v", r.Name, err)
			}
			msg = m
		}
		m, ok := msg.(M)
		if !ok {
			t.Fatalf("resource %q is %T", r.Name, msg)
		}
		if name := resourceName(msg); name != r.Name {
			t.Errorf("resource named %q holds %q", r.Name, name)
		}
		out = append(out, m)
	}
	return out
}

func resourceName(m proto.Message) string {
	switch v := m.(type) {
	case *listenerv3.Listener:
		return v.GetName()
	case *routev3.RouteConfiguration:
		return v.GetName()
	}
	return ""
}

// AcceptRoutes runs every route configuration through skiff-proxy's
// route.Compile, as the proxy does on RDS, failing the test where it would NACK.
func AcceptRoutes(t testing.TB, rcs []*routev3.RouteConfiguration) {
	t.Helper()
	for _, rc := range rcs {
		if _, err := route.Compile(rc); err != nil {
			t.Errorf("skiff-proxy would NACK route configuration %q: %v", rc.GetName(), err)
		}
	}
}

// anySecret answers every SDS name with an empty secret, so listeners that
// refer to SDS secrets validate as they would once the secret arrived.
type anySecret struct{}

func (anySecret) Secret(string) *tlsv3.Secret { return nil }

// noClusters is an empty cluster set: chain construction does not look
// clusters up, traffic would.
type noClusters struct{}

func (noClusters) Cluster(string) core.Cluster { return nil }

// AcceptListeners runs every listener through skiff-proxy's
// listener.Manager.Validate with its real chain factory (HTTP connection
// manager and tcp_proxy construction included), failing the test where
// the proxy would NACK.
func AcceptListeners(t testing.TB, ls []*listenerv3.Listener) {
	t.Helper()
	m := listener.NewManager(listener.Options{
		Secrets: anySecret{},
		Logger:  slog.New(slog.NewTextHandler(io.Discard, nil)),
		Factory: &compile.ChainFactory{Clusters: noClusters{}, Routes: hcm.NewRouteRegistry()},
	})
	defer m.Close()
	for _, l := range ls {
		if err := m.Validate(l); err != nil {
			t.Errorf("skiff-proxy would NACK listener %q: %v", l.GetName(), err)
		}
	}
}
