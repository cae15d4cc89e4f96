package kubelet

import (
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// probeClient probes from the host, as the kubelet does from the node: no
// proxy from the environment, no redirects followed, no connection reuse.
var probeClient = &http.Client{
	Transport:     &http.Transport{Proxy: nil, DisableKeepAlives: true},
	CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
}

// probeLoop runs c's startup probe until it passes, then its readiness
// probe for as long as the pod runs. Periods are capped by
// Options.MaxProbePeriod; thresholds are honoured.
func (r *podRunner) probeLoop(c *ctr) {
	ctx := r.ctx
	running := func() bool {
		p := c.proc.Load()
		return p != nil && p.Status().Running
	}
	sleep := func(d time.Duration) bool {
		select {
		case <-ctx.Done():
			return false
		case <-time.After(d):
			return true
		}
	}
	if sp := c.spec.StartupProbe; sp != nil {
		if !sleep(time.Duration(sp.InitialDelaySeconds) * time.Second) {
			return
		}
		for !(running() && r.probe(ctx, c, sp)) {
			if !sleep(r.period(sp)) {
				return
			}
		}
	} else {
		for !running() {
			if !sleep(50 * time.Millisecond) {
				return
			}
		}
	}
	c.started.Store(true)
	rp := c.spec.ReadinessProbe
	if rp == nil {
		return
	}
	if !sleep(time.Duration(rp.InitialDelaySeconds) * time.Second) {
		return
	}
	success, failure := threshold(rp.SuccessThreshold), threshold(rp.FailureThreshold)
	var okRun, failRun int32
	for {
		if running() && r.probe(ctx, c, rp) {
			okRun, failRun = okRun+1, 0
			if okRun >= success || c.probeOK.Load() {
				c.probeOK.Store(true)
			}
		} else {
			okRun, failRun = 0, failRun+1
			if failRun >= failure || !running() {
				c.probeOK.Store(false)
			}
		}
		// Until the first success, probe often: a pod becomes ready as
		// soon as it can, as the kubelet's first probe after start does.
		next := r.period(rp)
		if !c.probeOK.Load() {
			next = min(next, 250*time.Millisecond)
		}
		if !sleep(next) {
			return
		}
	}
}

func threshold(v int32) int32 {
	if v <= 0 {
		return 1
	}
	return v
}

func (r *podRunner) period(p *corev1.Probe) time.Duration {
	d := time.Duration(p.PeriodSeconds) * time.Second
	if d <= 0 {
		d = 10 * time.Second
	}
	return min(d, r.k.opts.MaxProbePeriod)
}

// probe runs one probe against c: httpGet and tcpSocket from the host to
// the pod's address, exec inside the container's context.
func (r *podRunner) probe(ctx context.Context, c *ctr, p *corev1.Probe) bool {
	timeout := time.Duration(p.TimeoutSeconds) * time.Second
	if timeout <= 0 {
		timeout = time.Second
	}
	switch {
	case p.HTTPGet != nil:
		return r.httpProbe(ctx, c, p.HTTPGet, timeout)
	case p.TCPSocket != nil:
		port, err := resolvePort(c.spec, p.TCPSocket.Port)
		if err != nil {
			return false
		}
		host := cmpOr(p.TCPSocket.Host, r.podIP())
		d := net.Dialer{Timeout: timeout}
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(host, strconv.Itoa(port)))
		if err != nil {
			return false
		}
		conn.Close()
		return true
	case p.Exec != nil:
		ctx, cancel := context.WithTimeout(ctx, timeout)
		defer cancel()
		return r.execIn(ctx, c, p.Exec.Command) == nil
	}
	return false
}

func (r *podRunner) podIP() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.ip.String()
}

func (r *podRunner) httpProbe(ctx context.Context, c *ctr, g *corev1.HTTPGetAction, timeout time.Duration) bool {
	port, err := resolvePort(c.spec, g.Port)
	if err != nil {
		return false
	}
	scheme := strings.ToLower(cmpOr(string(g.Scheme), "http"))
	if scheme != "http" {
		return false // HTTPS probes skip verification in Kubernetes; none of ours use them
	}
	path := g.Path
	if !strings.HasPrefix(path, "/") {
		path = "/" + path
	}
	url := fmt.Sprintf("http://%s%s", net.JoinHostPort(cmpOr(g.Host, r.podIP()), strconv.Itoa(port)), path)
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	req.Header.Set("User-Agent", "kube-probe/1.35")
	for _, h := range g.HTTPHeaders {
		req.Header.Set(h.Name, h.Value)
	}
	resp, err := probeClient.Do(req)
	if err != nil {
		return false
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 10<<10))
	resp.Body.Close()
	return resp.StatusCode >= 200 && resp.StatusCode < 400
}

// resolvePort is a probe's port: a number, or the name of one of the
// container's ports.
func resolvePort(c *corev1.Container, p intstr.IntOrString) (int, error) {
	if p.Type == intstr.Int {
		return p.IntValue(), nil
	}
	if n, err := strconv.Atoi(p.StrVal); err == nil {
		return n, nil
	}
	for _, cp := range c.Ports {
		if cp.Name == p.StrVal {
			return int(cp.ContainerPort), nil
		}
	}
	return 0, fmt.Errorf("container %s has no port named %q", c.Name, p.StrVal)
}
