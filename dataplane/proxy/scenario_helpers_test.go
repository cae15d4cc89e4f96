package proxy

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"

	"github.com/skiff-mesh/skiff/internal/testing/xdsres"
	"github.com/skiff-mesh/skiff/internal/testing/xdsserver"
)

// hits counts the requests a scenario backend served.
type hits struct{ n atomic.Int64 }

func (h *hits) get() int { return int(h.n.Load()) }

// echoBackend is a backend that names itself in x-upstream and the body,
// and reflects what it received: x-seen-host, x-seen-uri and one
// x-echo-<name> response header per request header. serve, when set,
// runs first and may answer instead (returning true).
func echoBackend(t *testing.T, name string, serve func(w http.ResponseWriter, r *http.Request) bool) (string, *hits) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	h := &hits{}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h.n.Add(1)
		w.Header().Set("x-upstream", name)
		if serve != nil && serve(w, r) {
			return
		}
		w.Header().Set("x-seen-host", r.Host)
		w.Header().Set("x-seen-uri", r.RequestURI)
		for k, v := range r.Header {
			w.Header()["X-Echo-"+k] = v
		}
		io.Copy(io.Discard, r.Body)
		fmt.Fprintf(w, "%s %s", name, r.URL.Path)
	})}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return ln.Addr().String(), h
}

// scenario publishes res, starts a proxy on ADS and returns it.
func scenario(t *testing.T, res ...types.Resource) (*xdsserver.Server, *Proxy) {
	t.Helper()
	xds := xdsserver.Start(t)
	xds.Set(t, res...)
	return xds, startProxy(t, xds.Bootstrap(false))
}

// send performs req on a fresh connection, without following redirects.
func send(t *testing.T, req *http.Request) (int, string, http.Header) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DisableKeepAlives: true},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := c.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", req.Method, req.URL, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b), resp.Header
}

// getH is GET url with extra request headers ("name", "value", …).
func getH(t *testing.T, url string, kv ...string) (int, string, http.Header) {
	t.Helper()
	req, err := http.NewRequest("GET", url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(kv); i += 2 {
		if strings.EqualFold(kv[i], "host") {
			req.Host = kv[i+1]
			continue
		}
		req.Header.Add(kv[i], kv[i+1])
	}
	return send(t, req)
}

// adminStats returns the admin /stats page.
func adminStats(t *testing.T, p *Proxy) string {
	t.Helper()
	_, body, _ := get(t, "http://"+p.AdminAddr().String()+"/stats")
	return body
}

// statValue is the value of the flat stat name on a /stats page, -1 when
// absent.
func statValue(page, name string) int {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + `: (\d+)`).FindStringSubmatch(page)
	if m == nil {
		return -1
	}
	v, _ := strconv.Atoi(m[1])
	return v
}

// prefix is a route match on a path prefix.
func prefix(p string) *routev3.RouteMatch {
	return &routev3.RouteMatch{PathSpecifier: &routev3.RouteMatch_Prefix{Prefix: p}}
}

// exact is a string matcher for an exact value.
func exact(v string) *matcherv3.StringMatcher {
	return &matcherv3.StringMatcher{MatchPattern: &matcherv3.StringMatcher_Exact{Exact: v}}
}

// to is a route with match m forwarding to cluster.
func to(m *routev3.RouteMatch, cluster string) *routev3.Route {
	return &routev3.Route{Match: m, Action: &routev3.Route_Route{Route: &routev3.RouteAction{
		ClusterSpecifier: &routev3.RouteAction_Cluster{Cluster: cluster}}}}
}

// httpStack is the usual resources: EDS clusters with their hosts, an HTTP
// listener on listen with the given HCM, and route config "routes".
func httpStack(listen string, clusters map[string][]string, routes ...*routev3.Route) []types.Resource {
	return httpStackWith(listen, xdsres.HCM("http", "routes"), clusters, routes...)
}

// httpStackWith is httpStack with the listener running hcm.
func httpStackWith(listen string, hcm *hcmv3.HttpConnectionManager, clusters map[string][]string, routes ...*routev3.Route) []types.Resource {
	var res []types.Resource
	for name, hosts := range clusters {
		res = append(res, xdsres.EDSCluster(name), xdsres.Endpoints(name, hosts...))
	}
	return append(res, xdsres.Listener("http", listen, hcm), xdsres.RouteConfig("routes", routes...))
}

// waitServing polls url until it answers with want (status), for configs
// applied after start.
func waitServing(t *testing.T, url string, want int) {
	t.Helper()
	eventually(t, "GET "+url+" to answer "+strconv.Itoa(want), func() (bool, string) {
		c := &http.Client{Timeout: time.Second, Transport: &http.Transport{DisableKeepAlives: true}}
		resp, err := c.Get(url)
		if err != nil {
			return false, err.Error()
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode == want, fmt.Sprint(resp.StatusCode, " ", string(b))
	})
}

// flags is the response-flags header of a local reply.
func flags(h http.Header) string { return h.Get("x-skiff-response-flags") }

// loadLoop runs n GETs of url over a keep-alive client, returning the
// count per status and per x-upstream, stopping after the deadline.
func loadLoop(t *testing.T, url string, n int, kv ...string) (codes map[int]int, ups map[string]int) {
	t.Helper()
	codes, ups = map[int]int{}, map[string]int{}
	client := &http.Client{Timeout: 5 * time.Second}
	deadline := time.Now().Add(30 * time.Second)
	for i := 0; i < n && time.Now().Before(deadline); i++ {
		req, _ := http.NewRequest("GET", url, nil)
		for j := 0; j+1 < len(kv); j += 2 {
			req.Header.Set(kv[j], kv[j+1])
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		codes[resp.StatusCode]++
		ups[resp.Header.Get("x-upstream")]++
	}
	client.CloseIdleConnections()
	return codes, ups
}

// tlsDial dials addr with TLS for serverName and ALPN protos, trusting
// roots.
func tlsDial(ctx context.Context, addr string, cfg *tls.Config) (*tls.Conn, error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 3 * time.Second}, Config: cfg}
	c, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, err
	}
	return c.(*tls.Conn), nil
}

func itoa(v int) string { return strconv.Itoa(v) }

func fmtMap(m map[string]int) string { return fmt.Sprint(m) }
