package xds_test

import (
	"context"
	"fmt"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
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
