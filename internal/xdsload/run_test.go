package xdsload_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"testing"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	endpointv3 "github.com/envoyproxy/go-control-plane/envoy/config/endpoint/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	cachev3 "github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	serverv3 "github.com/envoyproxy/go-control-plane/pkg/server/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"
	"google.golang.org/protobuf/types/known/wrapperspb"
	networking "istio.io/api/networking/v1alpha3"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/internal/xdsload"
)

// oneSnapshot gives every proxy the same snapshot, as a mesh with default
// visibility does.
type oneSnapshot struct{}

func (oneSnapshot) ID(*corev3.Node) string { return "mesh" }

// fileControlPlane is a stand-in for skiffd in Run's test: it polls the
// config directory and serves, through go-control-plane, clusters,
// endpoints and one route config built from the Services, Pods,
// VirtualServices and DestinationRules there, with Istio's names.
type fileControlPlane struct {
	dir     string
	addr    string
	cache   cachev3.SnapshotCache
	version int
	mtimes  map[string]time.Time
}

func startFileControlPlane(t *testing.T, dir string) *fileControlPlane {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cp := &fileControlPlane{dir: dir, addr: ln.Addr().String(), cache: cachev3.NewSnapshotCache(true, oneSnapshot{}, nil)}
	g := grpc.NewServer()
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(g, serverv3.NewServer(ctx, cp.cache, nil))
	go g.Serve(ln)
	done := make(chan struct{})
	go func() {
		defer close(done)
		for ctx.Err() == nil {
			if err := cp.reload(); err != nil {
				t.Errorf("control plane: %v", err)
				return
			}
			select {
			case <-ctx.Done():
			case <-time.After(20 * time.Millisecond):
			}
		}
	}()
	t.Cleanup(func() { cancel(); <-done; g.Stop() })
	return cp
}

// reload rebuilds the snapshot when any file changed.
func (cp *fileControlPlane) reload() error {
	mtimes := map[string]time.Time{}
	var files []string
	err := filepath.WalkDir(cp.dir, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() || strings.HasPrefix(d.Name(), ".") {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		mtimes[p] = info.ModTime()
		files = append(files, p)
		return nil
	})
	if err != nil || len(files) == 0 || sameTimes(mtimes, cp.mtimes) {
		return err
	}
	cp.mtimes = mtimes
	var objs []*config.Object
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			return err
		}
		os, errs := config.Decode(data, f)
		if len(errs) > 0 {
			return errs[0]
		}
		objs = append(objs, os...)
	}
	cp.version++
	snap, err := cachev3.NewSnapshot(strconv.Itoa(cp.version), meshResources(objs))
	if err != nil {
		return err
	}
	return cp.cache.SetSnapshot(context.Background(), "mesh", snap)
}

func sameTimes(a, b map[string]time.Time) bool {
	if len(a) != len(b) {
		return false
	}
	for k, v := range a {
		if !b[k].Equal(v) {
			return false
		}
	}
	return true
}

// meshResources translates the objects as Istio would for a sidecar, for
// the few features the generated mesh uses.
func meshResources(objs []*config.Object) map[string][]types.Resource {
	type svc struct {
		host   string
		port   int
		app    string
		routes []*networking.HTTPRouteDestination
	}
	svcs := map[string]*svc{} // by host
	var pods []*corev1.Pod
	subsets := map[string][]string{}
	for _, o := range objs {
		switch spec := o.Spec.(type) {
		case *corev1.Service:
			h := spec.Name + "." + spec.Namespace + ".svc.cluster.local"
			svcs[h] = &svc{host: h, port: int(spec.Spec.Ports[0].Port), app: spec.Spec.Selector["app"]}
		case *corev1.Pod:
			pods = append(pods, spec)
		case *networking.DestinationRule:
			for _, s := range spec.GetSubsets() {
				subsets[spec.GetHost()] = append(subsets[spec.GetHost()], s.GetName())
			}
		}
	}
	for _, o := range objs {
		if vs, ok := o.Spec.(*networking.VirtualService); ok {
			svcs[vs.GetHosts()[0]].routes = vs.GetHttp()[0].GetRoute()
		}
	}
	out := map[string][]types.Resource{}
	hcm, _ := anypb.New(&hcmv3.HttpConnectionManager{StatPrefix: "outbound_0.0.0.0_8080",
		RouteSpecifier: &hcmv3.HttpConnectionManager_Rds{Rds: &hcmv3.Rds{RouteConfigName: "8080"}}})
	out[xdsload.ListenerType] = []types.Resource{&listenerv3.Listener{Name: "0.0.0.0_8080", FilterChains: []*listenerv3.FilterChain{{
		Filters: []*listenerv3.Filter{{Name: "envoy.filters.network.http_connection_manager", ConfigType: &listenerv3.Filter_TypedConfig{TypedConfig: hcm}}}}}}}
	rc := &routev3.RouteConfiguration{Name: "8080"}
	var hosts []string
	for h := range svcs {
		hosts = append(hosts, h)
	}
	sort.Strings(hosts)
	for _, h := range hosts {
		s := svcs[h]
		prefix := "outbound|" + strconv.Itoa(s.port) + "|"
		for _, sub := range append([]string{""}, subsets[h]...) {
			name := prefix + sub + "|" + h
			out[xdsload.ClusterType] = append(out[xdsload.ClusterType], &clusterv3.Cluster{Name: name,
				ClusterDiscoveryType: &clusterv3.Cluster_Type{Type: clusterv3.Cluster_EDS},
				EdsClusterConfig: &clusterv3.Cluster_EdsClusterConfig{ServiceName: name,
					EdsConfig: &corev3.ConfigSource{ConfigSourceSpecifier: &corev3.ConfigSource_Ads{Ads: &corev3.AggregatedConfigSource{}}}}})
			la := &endpointv3.ClusterLoadAssignment{ClusterName: name, Endpoints: []*endpointv3.LocalityLbEndpoints{{}}}
			for _, p := range pods {
				if p.Labels["app"] == s.app && (sub == "" || p.Labels["version"] == sub) {
					la.Endpoints[0].LbEndpoints = append(la.Endpoints[0].LbEndpoints, &endpointv3.LbEndpoint{
						HostIdentifier: &endpointv3.LbEndpoint_Endpoint{Endpoint: &endpointv3.Endpoint{Address: &corev3.Address{
							Address: &corev3.Address_SocketAddress{SocketAddress: &corev3.SocketAddress{Address: p.Status.PodIP,
								PortSpecifier: &corev3.SocketAddress_PortValue{PortValue: uint32(s.port)}}}}}}})
				}
			}
			out[xdsload.EndpointType] = append(out[xdsload.EndpointType], la)
		}
		wc := &routev3.WeightedCluster{}
		for _, d := range s.routes {
			wc.Clusters = append(wc.Clusters, &routev3.WeightedCluster_ClusterWeight{
				Name: prefix + d.GetDestination().GetSubset() + "|" + h, Weight: wrapperspb.UInt32(uint32(weight(d, len(s.routes))))})
		}
		rc.VirtualHosts = append(rc.VirtualHosts, &routev3.VirtualHost{Name: h + ":" + strconv.Itoa(s.port), Domains: []string{h},
			Routes: []*routev3.Route{{Match: &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: "/"}},
				Action: &routev3.Route_Route{Route: &routev3.RouteAction{ClusterSpecifier: &routev3.RouteAction_WeightedClusters{WeightedClusters: wc}}}}}})
	}
	out[xdsload.RouteType] = []types.Resource{rc}
	return out
}

// weight is a destination's share: an unweighted single destination takes
// all the traffic.
func weight(d *networking.HTTPRouteDestination, n int) int32 {
	if d.GetWeight() == 0 {
		return 100 / int32(n)
	}
	return d.GetWeight()
}

func TestRunMeasuresChangesEndToEnd(t *testing.T) {
	for _, delta := range []bool{false, true} {
		t.Run(map[bool]string{false: "sotw", true: "delta"}[delta], func(t *testing.T) {
			dir := t.TempDir()
			cp := startFileControlPlane(t, dir)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rep, err := xdsload.Run(ctx, xdsload.Options{
				Spec:        xdsload.Spec{Services: 6, Endpoints: 2, Namespaces: 2, SplitEvery: 2, Port: 9080},
				Dir:         dir,
				Proxies:     5,
				Fleet:       xdsload.FleetOptions{Addr: cp.addr, Delta: delta, ProxiesPerConn: 2},
				Reps:        3,
				PID:         os.Getpid(), // the control plane runs in this process
				SyncTimeout: 20 * time.Second, ChangeTimeout: 10 * time.Second, Gap: 50 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			if rep.Conns != 3 || rep.Proxies != 5 || rep.Delta != delta {
				t.Errorf("report: %d conns, %d proxies, delta %v; want 3, 5, %v", rep.Conns, rep.Proxies, rep.Delta, delta)
			}
			// 6 services, 3 of them with two subsets; one listener, one route config.
			if got := rep.Resources; got["CDS"] != 12 || got["EDS"] != 12 || got["LDS"] != 1 || got["RDS"] != 1 {
				t.Errorf("resources per proxy %v, want CDS 12, EDS 12, LDS 1, RDS 1", got)
			}
			for name, c := range map[string]xdsload.ChangeStats{"VirtualService": rep.VirtualService, "endpoint": rep.Endpoint} {
				if c.Reps != 3 || c.Complete != 3 || c.Missing != 0 || len(c.Failures) != 0 {
					t.Errorf("%s changes: %+v; want 3 complete", name, c)
				}
				// The control plane polls every 20ms: no change can arrive sooner than the write.
				if !(c.LastP50MS > 0 && c.LastP50MS <= c.LastP99MS && c.LastP99MS <= c.LastMaxMS && c.LastMaxMS < 5000) {
					t.Errorf("%s change times p50 %v p99 %v max %v", name, c.LastP50MS, c.LastP99MS, c.LastMaxMS)
				}
				if !(c.ProxyP50MS > 0 && c.ProxyP99MS <= c.LastMaxMS) {
					t.Errorf("%s per-proxy times p50 %v p99 %v beyond the last proxy's %v", name, c.ProxyP50MS, c.ProxyP99MS, c.LastMaxMS)
				}
			}
			if rep.Skiffd == nil || rep.Skiffd.RSSAfterSyncMB <= 0 || rep.Skiffd.HWMEndMB < rep.Skiffd.RSSAfterChangesMB {
				t.Errorf("process figures %+v", rep.Skiffd)
			}
			if rep.ToolPeakRSSMB <= 0 || rep.ToolCPUSec <= 0 {
				t.Errorf("tool figures: peak RSS %v MB, %v CPU s", rep.ToolPeakRSSMB, rep.ToolCPUSec)
			}
			if tl := rep.Tool; tl == nil || tl.RSSAfterSyncMB <= 0 || tl.HWMEndMB < tl.HWMSyncMB || tl.CPUSyncSec+tl.CPUChangesSec > rep.ToolCPUSec+0.01 {
				t.Errorf("tool phases: %+v (all: %v CPU s)", tl, rep.ToolCPUSec)
			}
			if rep.DecodeErrors != 0 || rep.StreamErrors != 0 {
				t.Errorf("%d decode errors, %d stream errors", rep.DecodeErrors, rep.StreamErrors)
			}

			var table bytes.Buffer
			rep.WriteTable(&table)
			for _, want := range []string{
				"mesh: 6 services × 2 endpoints in 2 namespaces; 5 proxies (",
				"per proxy: CDS 12, EDS 12, LDS 1, RDS 1 resources",
				"VirtualService       3         3 | ",
				"endpoint             3         3 | ",
				"load tool: peak RSS ",
				"proxy errors: 0 responses or resources not decodable, 0 broken streams",
			} {
				if !strings.Contains(table.String(), want) {
					t.Errorf("table lacks %q:\n%s", want, table.String())
				}
			}
			var js bytes.Buffer
			if err := rep.WriteJSON(&js); err != nil {
				t.Fatal(err)
			}
			var back map[string]any
			if err := json.Unmarshal(js.Bytes(), &back); err != nil {
				t.Fatalf("JSON report does not parse: %v\n%s", err, js.String())
			}
			if vs := back["VirtualService"].(map[string]any); vs["Complete"] != 3.0 || vs["LastP99MS"] == nil {
				t.Errorf("JSON VirtualService %v", vs)
			}
		})
	}
}

// -only makes changes of one kind alone, so a profile covers that kind.
func TestRunOnlyOneKind(t *testing.T) {
	for _, only := range []string{"endpoint", "virtualservice"} {
		t.Run(only, func(t *testing.T) {
			dir := t.TempDir()
			cp := startFileControlPlane(t, dir)
			ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
			defer cancel()
			rep, err := xdsload.Run(ctx, xdsload.Options{
				Spec: xdsload.Spec{Services: 4, Endpoints: 2, Namespaces: 1, SplitEvery: 2, Port: 9080},
				Dir:  dir, Proxies: 3, Fleet: xdsload.FleetOptions{Addr: cp.addr, Delta: true, ProxiesPerConn: 1},
				Reps: 2, Only: only, SyncTimeout: 20 * time.Second, ChangeTimeout: 10 * time.Second, Gap: 50 * time.Millisecond,
			})
			if err != nil {
				t.Fatal(err)
			}
			made, skipped := rep.Endpoint, rep.VirtualService
			skippedMB := rep.VirtualServiceMB
			if only == "virtualservice" {
				made, skipped, skippedMB = skipped, made, rep.EndpointMB
			}
			if made.Reps != 2 || made.Complete != 2 {
				t.Errorf("%s changes: %+v; want 2 complete", only, made)
			}
			if skipped.Reps != 0 || skippedMB != 0 {
				t.Errorf("the other kind: %+v, %v MB; want none made", skipped, skippedMB)
			}
		})
	}
}

// -private exports routing to its own namespace and times a VirtualService
// change over that namespace's proxies alone, counting what the others
// receive meanwhile: this reference control plane gives every proxy the
// same snapshot, so the others receive every change (skiffd's scoped
// pushes give them none: docs/performance.md).
func TestRunPrivateRouting(t *testing.T) {
	dir := t.TempDir()
	cp := startFileControlPlane(t, dir)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	rep, err := xdsload.Run(ctx, xdsload.Options{
		Spec: xdsload.Spec{Services: 4, Endpoints: 2, Namespaces: 2, SplitEvery: 1, Port: 9080, Private: true},
		Dir:  dir, Proxies: 8, Fleet: xdsload.FleetOptions{Addr: cp.addr, Delta: true, ProxiesPerConn: 2},
		Reps: 2, Only: "virtualservice", SyncTimeout: 20 * time.Second, ChangeTimeout: 10 * time.Second, Gap: 50 * time.Millisecond,
	})
	if err != nil {
		t.Fatal(err)
	}
	routing, err := os.ReadFile(filepath.Join(dir, "load-0", "svc-0-routing.yaml"))
	if err != nil || strings.Count(string(routing), "exportTo: [\".\"]") != 2 {
		t.Errorf("svc-0's routing file exports its VirtualService and DestinationRule to: %v\n%s", err, routing)
	}
	vs := rep.VirtualService
	if !rep.Private || vs.Complete != 2 || vs.Missing != 0 {
		t.Errorf("private routing: report %v, VirtualService changes %+v; want 2 complete", rep.Private, vs)
	}
	// Each change concerns the 4 proxies of one namespace; the other 4
	// receive the new route configuration too, most of them before the
	// concerned ones are done (what comes later is not counted).
	if vs.OthersPushed < 1 || vs.OthersPushed > 8 {
		t.Errorf("the other namespace's proxies received %d route responses over 2 changes; want 1–8 from this control plane", vs.OthersPushed)
	}
	var table bytes.Buffer
	rep.WriteTable(&table)
	if want := fmt.Sprintf("timed over that namespace's proxies; the others received %d route responses meanwhile", vs.OthersPushed); !strings.Contains(table.String(), want) {
		t.Errorf("table lacks %q:\n%s", want, table.String())
	}
}

func TestRunRefusesMoreProxiesThanPods(t *testing.T) {
	_, err := xdsload.Run(context.Background(), xdsload.Options{Spec: xdsload.Spec{Services: 2, Endpoints: 2, Namespaces: 1},
		Dir: t.TempDir(), Proxies: 5, Fleet: xdsload.FleetOptions{Addr: "127.0.0.1:1"}})
	if err == nil || err.Error() != "5 proxies need as many pods: raise -services or -endpoints (now 2 × 2)" {
		t.Errorf("error %v", err)
	}
}
