package agentcmd

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"regexp"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Prober is one entry of ISTIO_KUBE_APP_PROBERS: the app's original
// Kubernetes probe, which the status server runs when the kubelet calls
// the rewritten one (/app-health/CONTAINER/livez|readyz|startupz).
type Prober struct {
	HTTPGet *struct {
		Path        string    `json:"path"`
		Port        probePort `json:"port"`
		Host        string    `json:"host"`
		Scheme      string    `json:"scheme"`
		HTTPHeaders []struct {
			Name  string `json:"name"`
			Value string `json:"value"`
		} `json:"httpHeaders"`
	} `json:"httpGet,omitempty"`
	TCPSocket *struct {
		Port probePort `json:"port"`
		Host string    `json:"host"`
	} `json:"tcpSocket,omitempty"`
	GRPC *struct {
		Port    int     `json:"port"`
		Service *string `json:"service"`
	} `json:"grpc,omitempty"`
	TimeoutSeconds int `json:"timeoutSeconds,omitempty"`
}

// probePort is Kubernetes' IntOrString; the injector resolves names to
// numbers, so only numbers can be probed.
type probePort struct {
	Num  int
	Name string
}

func (p *probePort) UnmarshalJSON(b []byte) error {
	if len(b) > 0 && b[0] == '"' {
		return json.Unmarshal(b, &p.Name)
	}
	return json.Unmarshal(b, &p.Num)
}

var appProbePath = regexp.MustCompile(`^/app-health/[^/]+/(livez|readyz|startupz)$`)

// ParseAppProbers decodes ISTIO_KUBE_APP_PROBERS and checks each entry as
// pilot-agent does: a path of Istio's form, exactly one probe kind, a
// numeric port.
func ParseAppProbers(s string) (map[string]*Prober, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	var m map[string]*Prober
	if err := json.Unmarshal([]byte(s), &m); err != nil {
		return nil, fmt.Errorf("environment ISTIO_KUBE_APP_PROBERS: %v; want a JSON object of path → {httpGet|tcpSocket|grpc, timeoutSeconds}, as the injector writes it", err)
	}
	for path, p := range m {
		where := "environment ISTIO_KUBE_APP_PROBERS[" + strconv.Quote(path) + "]"
		if !appProbePath.MatchString(path) {
			return nil, fmt.Errorf("%s: the path must be /app-health/CONTAINER/livez|readyz|startupz", where)
		}
		if p == nil {
			return nil, fmt.Errorf("%s: empty probe", where)
		}
		n := 0
		for _, set := range []bool{p.HTTPGet != nil, p.TCPSocket != nil, p.GRPC != nil} {
			if set {
				n++
			}
		}
		if n != 1 {
			return nil, fmt.Errorf("%s: want exactly one of httpGet, tcpSocket or grpc, got %d", where, n)
		}
		switch {
		case p.HTTPGet != nil && p.HTTPGet.Port.Num <= 0:
			return nil, fmt.Errorf("%s.httpGet.port: %q must be a port number (named ports are resolved by the injector)", where, p.HTTPGet.Port.Name)
		case p.TCPSocket != nil && p.TCPSocket.Port.Num <= 0:
			return nil, fmt.Errorf("%s.tcpSocket.port: %q must be a port number (named ports are resolved by the injector)", where, p.TCPSocket.Port.Name)
		case p.GRPC != nil && (p.GRPC.Port <= 0 || p.GRPC.Port > 65535):
			return nil, fmt.Errorf("%s.grpc.port: %d is not a port number", where, p.GRPC.Port)
		}
	}
	return m, nil
}

// appProber runs app probes against the pod's address, from 127.0.0.6 (which
// Istio's capture rules let through, so the probe is not itself captured),
// as the kubelet would with the probe's timeout (the kubelet's 1 s when
// unset).
type appProber struct {
	probers map[string]*Prober
	dest    string // the pod IP, or "localhost" with REWRITE_PROBE_LEGACY_LOCALHOST_DESTINATION
	local   *net.TCPAddr
	log     *slog.Logger
}

// maxProbeBody is how much of the app's answer is passed back (pilot-agent's 10 KiB).
const maxProbeBody = 10 << 10

func newAppProber(probers map[string]*Prober, podIP string, legacyLocalhost bool, log *slog.Logger) *appProber {
	a := &appProber{probers: probers, dest: podIP, log: log}
	if legacyLocalhost || podIP == "" {
		a.dest = "localhost"
	}
	if ip := net.ParseIP(podIP); ip != nil && ip.To4() != nil {
		a.local = &net.TCPAddr{IP: net.IPv4(127, 0, 0, 6)}
	} else if ip != nil {
		a.local = &net.TCPAddr{IP: net.ParseIP("::6")}
	}
	if a.dest == "localhost" {
		a.local = nil
	}
	return a
}

func timeoutOf(p *Prober) time.Duration {
	if p.TimeoutSeconds <= 0 {
		return time.Second
	}
	return time.Duration(p.TimeoutSeconds) * time.Second
}

func (a *appProber) dialer(timeout time.Duration) *net.Dialer {
	return &net.Dialer{Timeout: timeout, LocalAddr: a.local}
}

// ServeHTTP answers /app-health/CONTAINER/KIND.
func (a *appProber) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	p := a.probers[r.URL.Path]
	if p == nil {
		http.Error(w, fmt.Sprintf("app prober config does not exist for %s (ISTIO_KUBE_APP_PROBERS has no such entry)", r.URL.Path), http.StatusBadRequest)
		return
	}
	switch {
	case p.HTTPGet != nil:
		a.probeHTTP(w, r, p)
	case p.TCPSocket != nil:
		a.probeTCP(w, r.URL.Path, p)
	default:
		a.probeGRPC(w, r, p)
	}
}

func (a *appProber) probeHTTP(w http.ResponseWriter, r *http.Request, p *Prober) {
	hg := p.HTTPGet
	path := hg.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	scheme := "http"
	if strings.EqualFold(hg.Scheme, "HTTPS") {
		scheme = "https"
	}
	target := scheme + "://" + net.JoinHostPort(a.dest, strconv.Itoa(hg.Port.Num)) + path
	timeout := timeoutOf(p)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, target, nil)
	if err != nil {
		a.log.Error("app probe: bad target", "probe", r.URL.Path, "url", target, "err", err)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	// The kubelet's headers (the rewritten probe keeps httpHeaders) go to
	// the app; the probe's own fill in what the caller did not send.
	for k, vs := range r.Header {
		req.Header[k] = append([]string(nil), vs...)
	}
	for _, h := range hg.HTTPHeaders {
		if req.Header.Get(h.Name) == "" {
			req.Header.Set(h.Name, h.Value)
		}
	}
	req.Host = net.JoinHostPort(a.dest, strconv.Itoa(hg.Port.Num))
	if host := req.Header.Get("Host"); host != "" {
		req.Host = host
	}
	client := &http.Client{
		Transport: &http.Transport{
			DialContext:       a.dialer(timeout).DialContext,
			TLSClientConfig:   &tls.Config{InsecureSkipVerify: true}, // as the kubelet: a probe checks health, not identity
			DisableKeepAlives: true,
		},
		// The kubelet's rule: follow redirects to the same host (at most
		// 10); one elsewhere counts as success.
		CheckRedirect: func(req *http.Request, via []*http.Request) error {
			if req.URL.Hostname() != via[0].URL.Hostname() {
				return http.ErrUseLastResponse
			}
			if len(via) >= 10 {
				return errors.New("stopped after 10 redirects")
			}
			return nil
		},
	}
	resp, err := client.Do(req)
	if err != nil {
		a.log.Warn("app probe failed", "probe", r.URL.Path, "url", target, "err", err)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 300 && resp.StatusCode < 400 {
		w.WriteHeader(http.StatusOK)
		return
	}
	body, _ := io.ReadAll(io.LimitReader(resp.Body, maxProbeBody))
	w.WriteHeader(resp.StatusCode)
	w.Write(body)
}

func (a *appProber) probeTCP(w http.ResponseWriter, probe string, p *Prober) {
	addr := net.JoinHostPort(a.dest, strconv.Itoa(p.TCPSocket.Port.Num))
	c, err := a.dialer(timeoutOf(p)).Dial("tcp", addr)
	if err != nil {
		a.log.Warn("app probe failed", "probe", probe, "addr", addr, "err", err)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	c.Close()
	w.WriteHeader(http.StatusOK)
}

func (a *appProber) probeGRPC(w http.ResponseWriter, r *http.Request, p *Prober) {
	timeout := timeoutOf(p)
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	addr := net.JoinHostPort(a.dest, strconv.Itoa(p.GRPC.Port))
	opts := []grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()), // the kubelet's gRPC probe is plaintext too
		grpc.WithContextDialer(func(ctx context.Context, addr string) (net.Conn, error) {
			return a.dialer(timeout).DialContext(ctx, "tcp", addr)
		}),
	}
	if ua := r.Header.Get("User-Agent"); ua != "" {
		opts = append(opts, grpc.WithUserAgent(ua))
	}
	cc, err := grpc.NewClient("passthrough:///"+addr, opts...)
	if err != nil {
		a.log.Warn("app probe failed", "probe", r.URL.Path, "addr", addr, "err", err)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	defer cc.Close()
	var svc string
	if p.GRPC.Service != nil {
		svc = *p.GRPC.Service
	}
	resp, err := healthpb.NewHealthClient(cc).Check(ctx, &healthpb.HealthCheckRequest{Service: svc}, grpc.WaitForReady(true))
	if err != nil {
		a.log.Warn("app probe failed", "probe", r.URL.Path, "addr", addr, "err", err)
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	if resp.GetStatus() != healthpb.HealthCheckResponse_SERVING {
		a.log.Warn("app probe: not serving", "probe", r.URL.Path, "addr", addr, "status", resp.GetStatus())
		w.WriteHeader(http.StatusInternalServerError)
		return
	}
	w.WriteHeader(http.StatusOK)
}
