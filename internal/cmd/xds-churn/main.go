// Command xds-churn shows that configuration changes do not cost requests:
// it runs a real xDS server, two upstreams and a skiff-proxy process, sends
// HTTP load at a fixed rate through the proxy, pushes route and cluster
// updates meanwhile, and reports every request that did not get a 200. It
// exits non-zero when any request failed or any update was not ACKed.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"google.golang.org/protobuf/types/known/durationpb"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"github.com/skiff-mesh/skiff/internal/testing/xdsserver"
)

func main() {
	var (
		proxyBin = flag.String("proxy", "bin/skiff-proxy", "skiff-proxy binary")
		qps      = flag.Int("qps", 1000, "request rate through the proxy")
		conns    = flag.Int("c", 16, "client connections")
		updates  = flag.Int("updates", 50, "route and cluster updates to push during the load")
		duration = flag.Duration("t", 15*time.Second, "load duration (updates are spread over it)")
		delta    = flag.Bool("delta", false, "use delta xDS instead of state of the world")
	)
	flag.Parse()
	if err := run(*proxyBin, *qps, *conns, *updates, *duration, *delta); err != nil {
		fmt.Fprintln(os.Stderr, "xds-churn:", err)
		os.Exit(1)
	}
}

// fatalT lets the test xDS server report failures from a command.
type fatalT struct{ cleanups []func() }

func (t *fatalT) Helper()                   {}
func (t *fatalT) Fatal(a ...any)            { panic(fmt.Sprint(a...)) }
func (t *fatalT) Fatalf(f string, a ...any) { panic(fmt.Sprintf(f, a...)) }
func (t *fatalT) Cleanup(f func())          { t.cleanups = append(t.cleanups, f) }
func (t *fatalT) done() {
	for i := len(t.cleanups) - 1; i >= 0; i-- {
		t.cleanups[i]()
	}
}

func upstream(name string) (string, func()) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	body := strings.Repeat("x", 1024)
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("x-upstream", name)
		io.WriteString(w, body)
	})}
	go srv.Serve(ln)
	return ln.Addr().String(), func() { srv.Close() }
}

func freePort() string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

func run(proxyBin string, qps, conns, updates int, duration time.Duration, delta bool) (err error) {
	t := &fatalT{}
	defer t.done()
	defer func() {
		if r := recover(); r != nil {
			err = fmt.Errorf("%v", r)
		}
	}()
	xds := xdsserver.Start(t)
	a, stopA := upstream("a")
	defer stopA()
	b, stopB := upstream("b")
	defer stopB()
	b2, stopB2 := upstream("b2")
	defer stopB2()
	listen := freePort()

	// snapshot i: the route's weights shift between a and b, cluster b's
	// settings and endpoints change, so every update touches RDS, CDS or EDS.
	snapshot := func(i int) []types.Resource {
		wa := uint32(10 + (i*17)%80)
		cb := xdsres.EDSCluster("b")
		cb.ConnectTimeout = durationpb.New(time.Duration(500+i) * time.Millisecond)
		cb.CircuitBreakers = &clusterv3.CircuitBreakers{Thresholds: []*clusterv3.CircuitBreakers_Thresholds{{
			MaxConnections: wrapperspb.UInt32(uint32(1000 + i)), MaxRequests: wrapperspb.UInt32(uint32(1000 + i))}}}
		bHosts := []string{b}
		if i%2 == 1 {
			bHosts = append(bHosts, b2)
		}
		return []types.Resource{
			xdsres.EDSCluster("a"), cb,
			xdsres.Endpoints("a", a), xdsres.Endpoints("b", bHosts...),
			xdsres.Listener("churn", listen, xdsres.HCM("churn", "churn-routes")),
			xdsres.RouteConfig("churn-routes", xdsres.WeightedRoute("/", map[string]uint32{"a": wa, "b": 100 - wa})),
		}
	}
	xds.Set(t, snapshot(0)...)

	dir, err := os.MkdirTemp("", "xds-churn")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	bootPath := filepath.Join(dir, "bootstrap.yaml")
	if err := os.WriteFile(bootPath, []byte(xds.Bootstrap(delta)), 0o644); err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	cmd := exec.CommandContext(ctx, proxyBin, "-c", bootPath, "--log-level", "warn", "--drain-time-s", "1")
	cmd.Stderr = os.Stderr
	cmd.Env = append(os.Environ(), "GOMAXPROCS=2")
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start %s: %w", proxyBin, err)
	}
	defer func() { cmd.Process.Signal(os.Interrupt); cmd.Wait() }()

	url := "http://" + listen + "/churn"
	if err := waitOK(url, 10*time.Second); err != nil {
		return err
	}

	var ok, bad, skipped atomic.Int64
	var mu sync.Mutex
	failures := map[string]int{}
	var lat []time.Duration
	tokens := make(chan struct{}, conns)
	loadCtx, stopLoad := context.WithTimeout(ctx, duration)
	defer stopLoad()
	var wg sync.WaitGroup
	for w := 0; w < conns; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{MaxIdleConnsPerHost: 1, DisableCompression: true}}
			for range tokens {
				start := time.Now()
				resp, err := client.Get(url)
				d := time.Since(start)
				if err != nil {
					bad.Add(1)
					mu.Lock()
					failures["error: "+err.Error()]++
					mu.Unlock()
					continue
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				mu.Lock()
				lat = append(lat, d)
				if resp.StatusCode != 200 {
					failures[fmt.Sprintf("status %d flags %s", resp.StatusCode, resp.Header.Get("x-skiff-response-flags"))]++
				}
				mu.Unlock()
				if resp.StatusCode == 200 {
					ok.Add(1)
				} else {
					bad.Add(1)
				}
			}
		}()
	}
	// Open-loop pacing: tokens are issued for the time elapsed, so timer
	// coarseness does not lower the rate.
	go func() {
		defer close(tokens)
		start := time.Now()
		sent := 0
		tick := time.NewTicker(time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-loadCtx.Done():
				return
			case now := <-tick.C:
				due := int(now.Sub(start).Seconds() * float64(qps))
				for ; sent < due; sent++ {
					select {
					case tokens <- struct{}{}:
					default: // every connection busy: not sent, and reported as such
						skipped.Add(1)
					}
				}
			}
		}
	}()
	// Updates spread over the middle 80% of the run.
	var versions []string
	gap := duration * 8 / 10 / time.Duration(updates)
	time.Sleep(duration / 10)
	for i := 1; i <= updates; i++ {
		versions = append(versions, xds.Set(t, snapshot(i)...))
		time.Sleep(gap)
	}
	wg.Wait()

	// Every update must have been ACKed by the proxy for clusters and routes.
	last := versions[len(versions)-1]
	acked := func(typeURL string) bool {
		for _, r := range xds.Responses() {
			if r.TypeURL == typeURL && r.NACK == "" && (r.Version == last || delta) {
				return true
			}
		}
		return false
	}
	nacks := 0
	for _, r := range xds.Responses() {
		if r.NACK != "" {
			nacks++
		}
	}
	sort.Slice(lat, func(i, j int) bool { return lat[i] < lat[j] })
	pct := func(p float64) time.Duration {
		if len(lat) == 0 {
			return 0
		}
		return lat[int(p*float64(len(lat)-1))]
	}
	fmt.Printf("xds-churn: %d updates pushed (%s xDS) during %v at %d qps over %d connections\n",
		updates, map[bool]string{true: "delta", false: "state-of-the-world"}[delta], duration, qps, conns)
	fmt.Printf("requests: %d ok, %d failed, %d not sent (client busy); latency p50 %v p99 %v max %v\n",
		ok.Load(), bad.Load(), skipped.Load(), pct(0.5), pct(0.99), pct(1))
	fmt.Printf("proxy answers: %d NACKs; cluster update %s ACKed: %v; route update %s ACKed: %v\n",
		nacks, last, acked("type.googleapis.com/envoy.config.cluster.v3.Cluster"), last, acked("type.googleapis.com/envoy.config.route.v3.RouteConfiguration"))
	for f, n := range failures {
		fmt.Printf("  %6d × %s\n", n, f)
	}
	if bad.Load() > 0 || nacks > 0 || ok.Load() == 0 {
		return fmt.Errorf("%d failed requests, %d NACKs", bad.Load(), nacks)
	}
	return nil
}

func waitOK(url string, d time.Duration) error {
	deadline := time.Now().Add(d)
	var last string
	for time.Now().Before(deadline) {
		resp, err := http.Get(url)
		if err == nil {
			last = resp.Status
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return nil
			}
		} else {
			last = err.Error()
		}
		time.Sleep(50 * time.Millisecond)
	}
	return fmt.Errorf("proxy did not answer 200 on %s within %v (last: %s)", url, d, last)
}
