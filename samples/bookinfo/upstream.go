package bookinfo

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"
)

// traceHeaders are the headers Istio's Bookinfo services copy from the
// request they serve to the requests they make, so that the proxies' spans
// join into one trace and access logs share one request id.
var traceHeaders = []string{
	"x-request-id",
	"x-b3-traceid", "x-b3-spanid", "x-b3-parentspanid", "x-b3-sampled", "x-b3-flags", "b3",
	"traceparent", "tracestate",
	"x-ot-span-context",
	"x-datadog-trace-id", "x-datadog-parent-id", "x-datadog-sampling-priority",
	"x-cloud-trace-context",
	"grpc-trace-bin",
	"sw8",
}

// contextHeaders are the application headers the services forward along
// with the trace headers (Istio's productpage and reviews forward the same).
var contextHeaders = []string{"user-agent", "cookie", "authorization", "jwt"}

// Upstream is a service this one calls: its base URL and the time one
// attempt may take, connection included.
type Upstream struct {
	URL     string
	Timeout time.Duration
}

// ServiceURL is the base URL of a Bookinfo service as Istio's samples build
// it: http://<NAME>_HOSTNAME<.SERVICES_DOMAIN>:<NAME>_SERVICE_PORT, where the
// host defaults to the service name and the port to 9080.
func ServiceURL(service string, getenv func(string) string) string {
	prefix := strings.ToUpper(service)
	host := getenv(prefix + "_HOSTNAME")
	if host == "" {
		host = service
	}
	if d := getenv("SERVICES_DOMAIN"); d != "" {
		host += "." + d
	}
	port := getenv(prefix + "_SERVICE_PORT")
	if port == "" {
		port = "9080"
	}
	return "http://" + host + ":" + port
}

// client honours HTTP_PROXY and NO_PROXY: without traffic capture the local
// mesh makes the sidecar every service's explicit HTTP proxy.
var client = &http.Client{
	Transport: &http.Transport{
		Proxy:               http.ProxyFromEnvironment,
		MaxIdleConnsPerHost: 16,
		IdleConnTimeout:     90 * time.Second,
	},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// maxBody bounds what a service reads from an upstream; Bookinfo's answers
// are a few hundred bytes.
const maxBody = 1 << 20

// get makes one GET to up.URL+path within up.Timeout with the given headers
// and returns the status and body. err is set when no complete response came
// back (refused, reset, timed out).
func get(ctx context.Context, up Upstream, path string, hdr http.Header) (int, []byte, error) {
	if up.Timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, up.Timeout)
		defer cancel()
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, up.URL+path, nil)
	if err != nil {
		return 0, nil, fmt.Errorf("upstream URL %q: %w", up.URL, err)
	}
	req.Header = hdr.Clone()
	req.Header.Set("Accept", "application/json")
	resp, err := client.Do(req)
	if err != nil {
		return 0, nil, err
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxBody))
	if err != nil {
		return resp.StatusCode, nil, err
	}
	return resp.StatusCode, body, nil
}

// forward copies the named headers present on in to a new header set.
func forward(in http.Header, names ...[]string) http.Header {
	out := http.Header{}
	for _, list := range names {
		for _, n := range list {
			if v := in.Values(n); len(v) > 0 {
				out[http.CanonicalHeaderKey(n)] = append([]string(nil), v...)
			}
		}
	}
	return out
}
