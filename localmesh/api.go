package localmesh

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	networking "istio.io/api/networking/v1alpha3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/xds"
)

// ApplyResult is what apply and delete answer: per object what happened,
// and every error or warning the store reports for them, as skiffd words
// it (file:line: Kind namespace/name: field: message).
type ApplyResult struct {
	Objects []ObjectResult `json:"objects"`
	Errors  []string       `json:"errors,omitempty"`
}

// ObjectResult is one object's outcome: created, configured, unchanged,
// rejected, deleted or not found.
type ObjectResult struct {
	Kind, Namespace, Name, Outcome string
}

// Report is what `skiff status` shows.
type Report struct {
	GatewayURL     string      `json:"gateway_url"`
	ProductPageURL string      `json:"product_page_url,omitempty"`
	MonitoringAddr string      `json:"monitoring_addr"`
	SecureAddr     string      `json:"secure_addr"` // skiffd's CA and xDS over TLS
	Capture        string      `json:"capture"`
	Pods           []PodStatus `json:"pods"`
	// Gateways are the Gateway API Gateways' listeners and their URLs.
	Gateways []GatewayURL `json:"gateways,omitempty"`
	// Problems are workloads that cannot start, with where and why, and
	// skiffd while it is down.
	Problems []string `json:"problems,omitempty"`
}

// PodStatus is one row of `skiff status`.
type PodStatus struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Ready     string `json:"ready"` // "2/2": running containers, sidecar included
	Status    string `json:"status"`
	Restarts  int    `json:"restarts"`
	IP        string `json:"ip"`
	Proxy     string `json:"proxy"` // SYNCED, STALE, NACKED, NOT CONNECTED or "-" without a sidecar
	Admin     string `json:"admin,omitempty"`
	// Identity is the SPIFFE ID the pod's proxy holds a certificate for;
	// "" without a proxy.
	Identity string        `json:"identity,omitempty"`
	Age      time.Duration `json:"age"`
	// NetNS is the pod's network namespace (netns capture), where
	// `skiff exec` runs commands; HTTPProxy is the proxy its applications
	// are given in loopback mode.
	NetNS     string `json:"netns,omitempty"`
	HTTPProxy string `json:"http_proxy,omitempty"`
}

func (m *mesh) apiHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /apply", m.serveApply)
	mux.HandleFunc("POST /delete", m.serveDelete)
	mux.HandleFunc("GET /status", m.serveStatus)
	mux.HandleFunc("POST /down", func(w http.ResponseWriter, _ *http.Request) {
		m.downMu.Do(func() { close(m.down) })
		w.WriteHeader(http.StatusAccepted)
	})
	return mux
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	json.NewEncoder(w).Encode(v)
}

// decodeBody reads a manifest sent by the CLI; the file query parameter
// names it for error positions.
func decodeBody(r *http.Request) ([]*config.Object, []error, error) {
	data, err := io.ReadAll(io.LimitReader(r.Body, 32<<20))
	if err != nil {
		return nil, nil, err
	}
	objs, errs := config.Decode(data, r.URL.Query().Get("file"))
	return objs, errs, nil
}

func (m *mesh) serveApply(w http.ResponseWriter, r *http.Request) {
	objs, decodeErrs, err := decodeBody(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var res ApplyResult
	for _, e := range decodeErrs {
		res.Errors = append(res.Errors, e.Error())
	}
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	for _, o := range objs {
		o = m.vips.transform(o)
		k := o.Key()
		prev := m.store.Snapshot().Get(k)
		if msg := checkWorkload(o); msg != "" {
			res.Errors = append(res.Errors, msg)
			res.Objects = append(res.Objects, objectResult(o, "rejected"))
			continue
		}
		m.store.Upsert(originApply, o)
		var errs []string
		for _, e := range m.store.Errors() {
			if e.Key == k && e.Pos.File == o.Source.File {
				errs = append(errs, e.Error())
			}
		}
		res.Errors = append(res.Errors, errs...)
		now := m.store.Snapshot().Get(k)
		var outcome string
		switch {
		case now == o && prev == nil:
			outcome = "created"
		case now == o && prev.Meta.ResourceVersion == o.Meta.ResourceVersion:
			outcome = "unchanged"
		case now == o:
			outcome = "configured"
		case len(errs) == 0 && now != nil:
			// Another origin holds the key and wins over apply (the
			// running pods' own objects).
			outcome = "rejected"
			res.Errors = append(res.Errors, fmt.Sprintf("%s: %s is the local mesh's own (%s); it cannot be replaced", o.Source, k, now.Source))
		default:
			outcome = "rejected"
		}
		switch last := m.applied[k]; {
		case outcome != "rejected":
			m.applied[k] = o
		case last != nil:
			// A rejected apply changes nothing, as with kubectl: the last
			// applied version stays and the error is not kept.
			m.store.Upsert(originApply, last)
		default:
			m.store.Delete(originApply, k)
		}
		res.Objects = append(res.Objects, objectResult(o, outcome))
	}
	writeJSON(w, res)
}

func objectResult(o *config.Object, outcome string) ObjectResult {
	kind := o.Kind.Kind
	if o.Kind == PodTemplateKind {
		kind = "Pod"
	}
	return ObjectResult{Kind: kind, Namespace: o.Meta.Namespace, Name: o.Meta.Name, Outcome: outcome}
}

// checkWorkload finds, before it is stored, what would keep a Deployment
// or Pod from running locally (a container without a command, an env
// entry the local mesh cannot resolve), placed on its line.
func checkWorkload(o *config.Object) string {
	var spec *corev1.PodSpec
	var path string
	switch s := o.Spec.(type) {
	case *appsv1.Deployment:
		spec, path = &s.Spec.Template.Spec, "spec.template.spec"
	case *corev1.PodTemplate:
		spec, path = &s.Template.Spec, "spec"
	default:
		return ""
	}
	if err := checkPodSpec(spec, path); err != nil {
		return describeAt(o, err)
	}
	return ""
}

func checkPodSpec(spec *corev1.PodSpec, path string) error {
	for i := range spec.Containers {
		c := &spec.Containers[i]
		cpath := fmt.Sprintf("%s.containers[%d]", path, i)
		if len(c.Command) == 0 {
			return fmt.Errorf("%s.command: container %q has no command: the local mesh runs commands, not images; add command: [program, args...] (the program is looked up next to skiff, then in PATH)", cpath, c.Name)
		}
		if _, err := ContainerEnv(c, PodFacts{}, nil, cpath); err != nil {
			return err
		}
	}
	return nil
}

func (m *mesh) serveDelete(w http.ResponseWriter, r *http.Request) {
	objs, decodeErrs, err := decodeBody(r)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var res ApplyResult
	for _, e := range decodeErrs {
		res.Errors = append(res.Errors, e.Error())
	}
	m.applyMu.Lock()
	defer m.applyMu.Unlock()
	for _, o := range objs {
		o = m.vips.transform(o)
		k := o.Key()
		cur := m.store.Snapshot().Get(k)
		switch {
		case m.applied[k] != nil:
			m.store.Delete(originApply, k)
			delete(m.applied, k)
			outcome := "deleted"
			if now := m.store.Snapshot().Get(k); now != nil {
				// The applied object had replaced one the directory
				// declares, which is in force again.
				outcome = fmt.Sprintf("deleted (%s is in force again)", now.Source)
			}
			res.Objects = append(res.Objects, objectResult(o, outcome))
		case cur != nil:
			res.Objects = append(res.Objects, objectResult(o, "not deleted"))
			res.Errors = append(res.Errors, fmt.Sprintf("%s is declared in %s under the mesh's directory; remove it from that file (skiff delete removes what skiff apply added)", k, cur.Source))
		default:
			res.Objects = append(res.Objects, objectResult(o, "not found"))
		}
	}
	writeJSON(w, res)
}

func (m *mesh) serveStatus(w http.ResponseWriter, r *http.Request) {
	rep := Report{GatewayURL: m.gatewayURL, MonitoringAddr: m.monAddr, SecureAddr: m.secAddr, Capture: m.capture,
		Gateways: m.gatewayURLs()}
	if path := productPagePath(m.store.Snapshot()); path != "" {
		rep.ProductPageURL = m.gatewayURL + path
	}
	sync := m.proxySync(r.Context())
	for _, p := range m.sortedPods() {
		ps := PodStatus{Namespace: p.namespace, Name: p.name, IP: p.ip.String(), Status: "Running", Proxy: "-",
			Age: time.Since(p.created).Round(time.Second)}
		procs := append([]*proc(nil), p.containers...)
		if p.proxy != nil {
			procs = append(procs, p.proxy)
			ps.Admin = p.adminAddr()
			ps.Proxy = syncOf(sync, p.name+"."+p.namespace)
			ps.Identity = spiffeID(p.namespace, p.serviceAccount)
			if m.capture == CaptureLoopback && p.sidecar {
				ps.HTTPProxy = "http://" + net.JoinHostPort(p.ip.String(), strconv.Itoa(httpProxyPort))
			}
		}
		if ns, ok := p.net.(interface{ NetNS() string }); ok {
			ps.NetNS = ns.NetNS()
		}
		running := 0
		for _, c := range procs {
			_, up, restarts, state, _ := c.snapshot()
			ps.Restarts += restarts
			if up {
				running++
			} else if state != "" && state != "Running" {
				ps.Status = state
			} else if ps.Status == "Running" {
				ps.Status = "Pending"
			}
		}
		if ps.Status == "Running" && !p.readyNow.Load() {
			ps.Status = "Running (not ready)"
		}
		ps.Ready = fmt.Sprintf("%d/%d", running, len(procs))
		rep.Pods = append(rep.Pods, ps)
	}
	m.mu.Lock()
	for _, msg := range m.failures {
		rep.Problems = append(rep.Problems, msg)
	}
	m.mu.Unlock()
	if _, running, _, _, lastErr := m.skiffd.snapshot(); !running {
		rep.Problems = append(rep.Problems, fmt.Sprintf("skiffd is not running (%s); it is being restarted with back-off, and the proxies keep serving their last config meanwhile; log: %s", lastErr, m.skiffd.logPath))
	}
	writeJSON(w, rep)
}

// proxySync reads skiffd's /debug/syncz and sums each proxy up as
// istioctl proxy-status does, keyed by "pod.namespace". While skiffd is
// down it answers nothing at once: its socket stays bound for the next
// start (bindAddr), so a request would wait out the timeout in the
// backlog instead of being refused.
func (m *mesh) proxySync(ctx context.Context) map[string]string {
	out := map[string]string{}
	if _, running, _, _, _ := m.skiffd.snapshot(); !running {
		return out
	}
	monURL := "http://" + m.monAddr
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", monURL+"/debug/syncz", nil)
	resp, err := noProxyClient.Do(req)
	if err != nil {
		return out
	}
	defer resp.Body.Close()
	var list []xds.ProxyStatus
	if json.NewDecoder(resp.Body).Decode(&list) != nil {
		return out
	}
	for _, ps := range list {
		state := "SYNCED"
		for _, t := range ps.Types {
			switch {
			case t.LastNACK != "":
				state = "NACKED"
			case t.VersionAcked != t.VersionSent && state == "SYNCED":
				state = "STALE"
			}
		}
		out[ps.ProxyID] = state
	}
	return out
}

// syncOf is a proxy's state in proxySync's answer; a proxy skiffd does
// not list has not connected.
func syncOf(sync map[string]string, proxyID string) string {
	if s, ok := sync[proxyID]; ok {
		return s
	}
	return "NOT CONNECTED"
}

// routesOnGateway is whether a VirtualService bound to a gateway (not
// only "mesh") matches the URI path.
func routesOnGateway(o *config.Object, path string) bool {
	vs, ok := o.Spec.(*networking.VirtualService)
	if !ok {
		return false
	}
	onGateway := false
	for _, g := range vs.GetGateways() {
		if g != "mesh" {
			onGateway = true
		}
	}
	if !onGateway {
		return false
	}
	for _, h := range vs.GetHttp() {
		for _, mt := range h.GetMatch() {
			switch u := mt.GetUri(); {
			case u.GetExact() == path, u.GetPrefix() != "" && strings.HasPrefix(path, u.GetPrefix()):
				return true
			}
		}
	}
	return false
}

// forward relays connections accepted on ln to target until ctx ends.
func forward(ctx context.Context, ln net.Listener, target string) {
	go func() {
		<-ctx.Done()
		ln.Close()
	}()
	for {
		c, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil || errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		go relay(ctx, c, target)
	}
}

func relay(ctx context.Context, c net.Conn, target string) {
	defer c.Close()
	d := net.Dialer{Timeout: 5 * time.Second}
	up, err := d.DialContext(ctx, "tcp", target)
	if err != nil {
		return
	}
	defer up.Close()
	done := make(chan struct{}, 2)
	pipe := func(dst, src net.Conn) {
		io.Copy(dst, src)
		if tc, ok := dst.(*net.TCPConn); ok {
			tc.CloseWrite()
		}
		done <- struct{}{}
	}
	go pipe(up, c)
	go pipe(c, up)
	<-done
	<-done
}

// Client calls a running mesh's control API.
type Client struct {
	Addr string
	HTTP *http.Client
}

func (c *Client) http() *http.Client {
	if c.HTTP != nil {
		return c.HTTP
	}
	return noProxyClient
}

// Apply sends a manifest (file names it in error positions).
func (c *Client) Apply(ctx context.Context, file string, data []byte) (*ApplyResult, error) {
	return c.send(ctx, "/apply", file, data)
}

// Delete removes the objects of a manifest that apply added.
func (c *Client) Delete(ctx context.Context, file string, data []byte) (*ApplyResult, error) {
	return c.send(ctx, "/delete", file, data)
}

func (c *Client) send(ctx context.Context, path, file string, data []byte) (*ApplyResult, error) {
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+c.Addr+path+"?file="+url.QueryEscape(file), bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	var res ApplyResult
	if err := c.do(req, &res); err != nil {
		return nil, err
	}
	return &res, nil
}

// Status reports the pods and their proxies.
func (c *Client) Status(ctx context.Context) (*Report, error) {
	req, err := http.NewRequestWithContext(ctx, "GET", "http://"+c.Addr+"/status", nil)
	if err != nil {
		return nil, err
	}
	var rep Report
	if err := c.do(req, &rep); err != nil {
		return nil, err
	}
	return &rep, nil
}

// Down asks the mesh to stop; it returns once the request is accepted.
func (c *Client) Down(ctx context.Context) error {
	req, err := http.NewRequestWithContext(ctx, "POST", "http://"+c.Addr+"/down", nil)
	if err != nil {
		return err
	}
	return c.do(req, nil)
}

func (c *Client) do(req *http.Request, out any) error {
	resp, err := c.http().Do(req)
	if err != nil {
		return fmt.Errorf("local mesh control API at %s: %w (is skiff up still running?)", c.Addr, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("local mesh control API %s: %s: %s", req.URL.Path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out == nil {
		return nil
	}
	return json.NewDecoder(resp.Body).Decode(out)
}
