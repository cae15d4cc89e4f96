package xds_test

import (
	"context"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// BenchmarkPush measures full CDS pushes of 100 clusters to N SotW proxies
// over real gRPC on 127.0.0.1, each proxy ACKing: one op is one push
// reaching and being ACKed by all N. Resources are pre-marshalled Anys, as
// a generator sharing bytes between proxies would return them.
func BenchmarkPush(b *testing.B) {
	for _, n := range []int{10, 100, 500} {
		b.Run(fmt.Sprintf("proxies=%d", n), func(b *testing.B) { benchPush(b, n) })
	}
}

func benchPush(b *testing.B, n int) {
	gen := newFakeGen()
	var res []xds.Resource
	for i := range 100 {
		r := cluster(fmt.Sprintf("outbound|9080||svc-%d.default.svc.cluster.local", i))
		a, err := anypb.New(r.Message)
		if err != nil {
			b.Fatal(err)
		}
		res = append(res, xds.Resource{Name: r.Name, Message: a})
	}
	gen.set(xds.ClusterType, res...)
	s := startServer(b, xds.Options{Generator: gen, DebounceAfter: time.Microsecond})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan struct{}, n)
	for i := range n {
		cc := dial(b, s.addr)
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(cc).StreamAggregatedResources(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node(b, fmt.Sprintf("pod-%d", i), "default", "10.0.0.1"), TypeUrl: xds.ClusterType}); err != nil {
			b.Fatal(err)
		}
		go func() {
			for {
				r, err := st.Recv()
				if err != nil {
					return
				}
				if st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: xds.ClusterType, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce()}) != nil {
					return
				}
				got <- struct{}{}
			}
		}()
	}
	wait := func() {
		for range n {
			select {
			case <-got:
			case <-time.After(30 * time.Second):
				b.Fatal("push not received by every proxy within 30s")
			}
		}
	}
	wait() // initial responses
	b.ReportAllocs()
	b.ResetTimer()
	start := time.Now()
	for range b.N {
		s.Push(&xds.PushRequest{Full: true, Reason: "config"})
		wait()
	}
	elapsed := time.Since(start)
	b.ReportMetric(float64(b.N*n)/elapsed.Seconds(), "proxy-pushes/s")
	b.ReportMetric(float64(elapsed.Microseconds())/float64(b.N)/1000, "ms/full-push")
}

// BenchmarkEndpointPush measures an endpoint change (one
// ClusterLoadAssignment of 2 endpoints) reaching 2000 SotW proxies, from
// Push to the last proxy's ACK being recorded by the server, through the
// default debounce settings. It reports the p50/p99/max of that time and
// the process heap with 2000 streams open (clients included).
func BenchmarkEndpointPush(b *testing.B) {
	const n = 2000
	gen := newFakeGen()
	gen.set(xds.EndpointType, cla("outbound|9080||reviews.default.svc.cluster.local", "10.1.0.1", "10.1.0.2"))
	s := startServer(b, xds.Options{Generator: gen})
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	got := make(chan struct{}, n)
	ccs := make([]*grpc.ClientConn, 20) // 100 streams per connection
	for i := range ccs {
		ccs[i] = dial(b, s.addr)
	}
	for i := range n {
		st, err := discoveryv3.NewAggregatedDiscoveryServiceClient(ccs[i%len(ccs)]).StreamAggregatedResources(ctx)
		if err != nil {
			b.Fatal(err)
		}
		if err := st.Send(&discoveryv3.DiscoveryRequest{Node: node(b, fmt.Sprintf("pod-%d", i), "default", "10.0.0.1"),
			TypeUrl: xds.EndpointType, ResourceNames: []string{"outbound|9080||reviews.default.svc.cluster.local"}}); err != nil {
			b.Fatal(err)
		}
		go func() {
			for {
				r, err := st.Recv()
				if err != nil {
					return
				}
				if st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: xds.EndpointType, VersionInfo: r.GetVersionInfo(), ResponseNonce: r.GetNonce(),
					ResourceNames: []string{"outbound|9080||reviews.default.svc.cluster.local"}}) != nil {
					return
				}
				got <- struct{}{}
			}
		}()
	}
	for range n {
		select {
		case <-got:
		case <-time.After(60 * time.Second):
			b.Fatal("initial EDS not received by every proxy within 60s")
		}
	}
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)

	var times []time.Duration
	b.ResetTimer()
	for i := range b.N {
		key := xds.ConfigKey{Kind: "EndpointSlice", Namespace: "default", Name: "reviews", ResourceVersion: fmt.Sprint(i)}
		start := time.Now()
		s.Push(&xds.PushRequest{Types: map[string]bool{xds.EndpointType: true}, Reason: "endpoint", ConfigsUpdated: []xds.ConfigKey{key}})
		for range n {
			select {
			case <-got:
			case <-time.After(60 * time.Second):
				b.Fatal("endpoint push not received by every proxy within 60s")
			}
		}
		// The clients have sent their ACKs; wait for the server to record
		// them (polling sparingly: each poll walks every connection).
		for traceAcked(s.Server, key) < n && time.Since(start) < time.Minute {
			time.Sleep(5 * time.Millisecond)
		}
		times = append(times, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(times)
	pct := func(p float64) float64 { return float64(times[int(p*float64(len(times)-1))].Microseconds()) / 1000 }
	b.ReportMetric(pct(0.5), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
	b.ReportMetric(pct(1), "max-ms")
	b.ReportMetric(float64(ms.HeapInuse)/(1<<20), "heap-MB")
}
