package localmesh

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// owner is the Deployment a pod belongs to.
type owner struct {
	name, uid string
}

// pod is one running pod: its sidecar and its containers.
type pod struct {
	name, namespace, uid string
	labels, annotations  map[string]string
	serviceAccount       string
	spec                 *corev1.PodSpec
	owner                *owner // nil for a bare Pod
	hash                 string // pod-template-hash, or the bare Pod's resource version
	key                  string // what it was made from: "Deployment/ns/name" or "Pod/ns/name"
	gateway              bool
	sidecar              bool
	// mtls: the pod's inbound traffic goes through its sidecar, so peers
	// may speak mesh mTLS to it (a sidecar and netns capture). Published
	// as Istio's injector does, with the security.istio.io/tlsMode label.
	mtls    bool
	ip      netip.Addr
	created time.Time
	version atomic.Uint64

	net   podNetwork
	hosts []hostEntry // what the pod's hosts file holds (netns mode)
	// serviceRules is the kube-proxy chain last installed in a
	// sidecar-less pod's namespace (kubeproxy.go).
	serviceRules string
	tokenPath    string                      // its proxy's CA token (identity.go)
	init         func(context.Context) error // istio-init's job, before the sidecar
	proxy        *proc
	containers   []*proc
	ports        []int // container ports checked for readiness
	cancel       context.CancelFunc
	readyNow     atomic.Bool
}

func (p *pod) workloadName() string {
	switch {
	case p.owner != nil:
		return p.owner.name
	case p.gateway:
		return gatewayName
	}
	return p.name
}

func (p *pod) portsJSON() string {
	type port struct {
		Name          string `json:"name,omitempty"`
		ContainerPort int32  `json:"containerPort"`
		Protocol      string `json:"protocol,omitempty"`
	}
	var out []port
	for _, c := range p.spec.Containers {
		for _, cp := range c.Ports {
			out = append(out, port{cp.Name, cp.ContainerPort, string(cp.Protocol)})
		}
	}
	b, _ := json.Marshal(out)
	return string(b)
}

func (p *pod) logDir(stateDir string) string {
	return filepath.Join(stateDir, "logs", p.namespace, p.name)
}

// dir is the pod's private directory under base: its proxy's bootstrap,
// CA token and root certificate.
func (p *pod) dir(base string) string { return filepath.Join(base, p.namespace, p.name) }

func (p *pod) adminAddr() string { return net.JoinHostPort(p.ip.String(), strconv.Itoa(adminPort)) }

// podRuntime is what starting a pod needs from the supervisor.
type podRuntime struct {
	stateDir string
	bootDir  string // the sidecars' bootstraps, readable by the proxy's UID
	dir      string // the manifests' directory: the containers' working dir
	xdsAddr  string
	loopback bool
	// Identity (identity.go): skiffd's CA address, the tokens file, the
	// trust bundle skiffd writes, and whether skiff-proxy takes the agent's
	// flags.
	secureAddr string
	tokens     *podTokens
	rootCert   string
	agent      bool
	proxyPath  string
	exeDir     string
	backoff    Backoff
	grace      time.Duration
	// snapshot is the config in force, for ConfigMaps and Secrets.
	snapshot func() *config.Snapshot
	// progress tells the user about a container that exited.
	progress func(format string, args ...any)
}

// prepare resolves everything a pod's containers need before anything
// starts, so a manifest error leaves nothing half-running. path is the
// pod spec's field path in its manifest ("spec.template.spec").
func (rt *podRuntime) prepare(ctx context.Context, p *pod, path string) error {
	facts := PodFacts{Name: p.name, Namespace: p.namespace, UID: p.uid, Labels: p.labels, Annotations: p.annotations,
		NodeName: nodeName, ServiceAccount: p.serviceAccount, PodIP: p.ip.String(), HostIP: hostIP,
		Data: func(kind, name string) (map[string]string, bool) {
			return objectData(rt.snapshot(), kind, p.namespace, name)
		}}
	base := []EnvVar{{"PATH", os.Getenv("PATH")}, {"HOME", os.Getenv("HOME")}, {"HOSTNAME", p.name}}
	if rt.loopback && p.sidecar {
		proxy := "http://" + net.JoinHostPort(p.ip.String(), strconv.Itoa(httpProxyPort))
		base = append(base, EnvVar{"HTTP_PROXY", proxy}, EnvVar{"http_proxy", proxy},
			EnvVar{"NO_PROXY", "localhost,127.0.0.1"}, EnvVar{"no_proxy", "localhost,127.0.0.1"})
	}
	logDir := p.logDir(rt.stateDir)
	if !p.gateway {
		for i := range p.spec.Containers {
			c := &p.spec.Containers[i]
			cpath := fmt.Sprintf("%s.containers[%d]", path, i)
			if len(c.Command) == 0 {
				return fmt.Errorf("%s.command: container %q has no command: the local mesh runs commands, not images; add command: [program, args...] (the program is looked up next to skiff, then in PATH)", cpath, c.Name)
			}
			env, err := ContainerEnv(c, facts, base, cpath)
			if err != nil {
				return err
			}
			argv := ExpandCommand(append(append([]string(nil), c.Command...), c.Args...), env)
			prog, err := rt.resolve(argv[0])
			if err != nil {
				return fmt.Errorf("%s.command[0]: %w", cpath, err)
			}
			environ := make([]string, len(env))
			for j, e := range env {
				environ[j] = e.Name + "=" + e.Value
			}
			workDir := rt.dir
			if c.WorkingDir != "" {
				workDir = c.WorkingDir
			}
			pn := p.net
			p.containers = append(p.containers, &proc{
				name: c.Name, logPath: filepath.Join(logDir, c.Name+".log"),
				policy: string(p.spec.RestartPolicy), backoff: rt.backoff, grace: rt.grace,
				onExit: rt.exitReporter(p.namespace + "/" + p.name + " container " + c.Name),
				newCmd: func(ctx context.Context) *exec.Cmd {
					cmd := pn.Command(ctx, -1, prog, argv[1:]...)
					cmd.Env, cmd.Dir = environ, workDir
					return cmd
				},
			})
			for _, cp := range c.Ports {
				if cp.Protocol == "" || cp.Protocol == corev1.ProtocolTCP {
					p.ports = append(p.ports, int(cp.ContainerPort))
				}
			}
		}
	}
	if p.sidecar || p.gateway {
		boot, err := bootstrapConfig(p, rt.xdsAddr, rt.loopback)
		if err != nil {
			return err
		}
		bootPath := filepath.Join(p.dir(rt.bootDir), "bootstrap.json")
		if err := os.MkdirAll(filepath.Dir(bootPath), 0o755); err != nil {
			return err
		}
		if err := os.WriteFile(bootPath, boot, 0o644); err != nil {
			return err
		}
		tokenPath, rootPath, err := rt.writePodCredentials(p, filepath.Dir(bootPath))
		if err != nil {
			return err
		}
		idArgs, idEnv := rt.identityArgs(tokenPath, rootPath)
		pn, proxyPath := p.net, rt.proxyPath
		if !rt.loopback {
			initLog, capture := filepath.Join(logDir, "istio-init.log"), !p.gateway
			p.init = func(ctx context.Context) error { return initNetwork(ctx, pn, proxyPath, initLog, capture) }
		}
		args := append([]string{"-c", bootPath, "--prometheus-addr", net.JoinHostPort(p.ip.String(), strconv.Itoa(prometheusPort))}, idArgs...)
		p.proxy = &proc{
			name: "skiff-proxy", logPath: filepath.Join(logDir, "skiff-proxy.log"),
			policy: "Always", backoff: rt.backoff, grace: rt.grace,
			onExit: rt.exitReporter(p.namespace + "/" + p.name + " sidecar"),
			newCmd: func(ctx context.Context) *exec.Cmd {
				// UID 1337 is the proxy's in a captured pod, so its own
				// traffic is not redirected back to it.
				uid := -1
				if !rt.loopback {
					uid = proxyUID
				}
				cmd := pn.Command(ctx, uid, proxyPath, args...)
				if len(idEnv) > 0 {
					cmd.Env = append(os.Environ(), idEnv...)
				}
				return cmd
			},
		}
	}
	return nil
}

// resolve finds a container's program: a path (relative to the manifests'
// directory), else next to the skiff executable, else in PATH.
func (rt *podRuntime) resolve(name string) (string, error) {
	if strings.Contains(name, "/") {
		if !filepath.IsAbs(name) {
			name = filepath.Join(rt.dir, name)
		}
		if _, err := os.Stat(name); err != nil {
			return "", fmt.Errorf("program %s: %w", name, err)
		}
		return name, nil
	}
	if rt.exeDir != "" {
		cand := filepath.Join(rt.exeDir, name)
		if fi, err := os.Stat(cand); err == nil && !fi.IsDir() && fi.Mode()&0o111 != 0 {
			return cand, nil
		}
	}
	path, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("program %q is neither next to skiff (%s) nor in PATH; build it there (go build -o %s ./...) or give its path", name, rt.exeDir, rt.exeDir)
	}
	return path, nil
}

// start runs the sidecar, waits (bounded) for it to be live, then the
// containers.
func (p *pod) start(ctx context.Context, proxyWait time.Duration) error {
	ctx, p.cancel = context.WithCancel(ctx)
	if p.init != nil {
		if err := p.init(ctx); err != nil {
			return err
		}
	}
	if p.proxy != nil {
		if err := p.proxy.start(ctx); err != nil {
			return err
		}
		// The application's first calls go through the proxy; give it a
		// moment to be live first (Istio's holdApplicationUntilProxyStarts).
		waitHTTP(ctx, "http://"+p.adminAddr()+"/ready", proxyWait)
	}
	for _, c := range p.containers {
		if err := c.start(ctx); err != nil {
			return err
		}
	}
	return nil
}

// stop ends the containers, then the sidecar, and waits for them.
func (p *pod) stop() {
	if p.cancel == nil {
		return
	}
	var wg sync.WaitGroup
	for _, c := range p.containers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			c.stopAndWait()
		}()
	}
	wg.Wait()
	if p.proxy != nil {
		p.proxy.stopAndWait()
	}
	p.cancel()
}

// checkReady is the pod's readiness: every container running and every
// TCP port it declares accepting connections on the pod's address, and
// the sidecar live.
func (p *pod) checkReady(ctx context.Context) bool {
	for _, c := range p.containers {
		if _, running, _, _, _ := c.snapshot(); !running {
			return false
		}
	}
	for _, port := range p.ports {
		d := net.Dialer{Timeout: 300 * time.Millisecond}
		conn, err := d.DialContext(ctx, "tcp", net.JoinHostPort(p.ip.String(), strconv.Itoa(port)))
		if err != nil {
			return false
		}
		conn.Close()
	}
	if p.proxy != nil {
		if _, running, _, _, _ := p.proxy.snapshot(); !running {
			return false
		}
		return httpOK(ctx, "http://"+p.adminAddr()+"/ready")
	}
	return true
}

func httpOK(ctx context.Context, url string) bool {
	ctx, cancel := context.WithTimeout(ctx, time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, "GET", url, nil)
	if err != nil {
		return false
	}
	resp, err := noProxyClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

func waitHTTP(ctx context.Context, url string, limit time.Duration) bool {
	deadline := time.Now().Add(limit)
	for time.Now().Before(deadline) && ctx.Err() == nil {
		if httpOK(ctx, url) {
			return true
		}
		time.Sleep(50 * time.Millisecond)
	}
	return false
}

// noProxyClient talks to the mesh's own endpoints directly, whatever the
// environment's HTTP_PROXY says.
var noProxyClient = &http.Client{Transport: &http.Transport{Proxy: nil, DisableKeepAlives: true}}

// exitReporter returns the message a process prints when it exits on its
// own, naming its log.
func (rt *podRuntime) exitReporter(what string) func(status, logPath string, restartIn time.Duration) {
	return func(status, logPath string, restartIn time.Duration) {
		if rt.progress == nil {
			return
		}
		if restartIn > 0 {
			rt.progress("pod %s exited (%s); restarting in %s; log: %s", what, status, restartIn, logPath)
		} else {
			rt.progress("pod %s exited (%s); not restarted (restartPolicy); log: %s", what, status, logPath)
		}
	}
}

// objectData is a ConfigMap's data (binaryData as text) or a Secret's
// (stringData over data), as the kubelet reads them for env.
func objectData(snap *config.Snapshot, kind, ns, name string) (map[string]string, bool) {
	k := config.Key{Kind: config.ConfigMap, Namespace: ns, Name: name}
	if kind == "Secret" {
		k.Kind = config.Secret
	}
	o := snap.Get(k)
	if o == nil {
		return nil, false
	}
	out := map[string]string{}
	switch v := o.Spec.(type) {
	case *corev1.ConfigMap:
		for key, b := range v.BinaryData {
			out[key] = string(b)
		}
		for key, val := range v.Data {
			out[key] = val
		}
	case *corev1.Secret:
		for key, b := range v.Data {
			out[key] = string(b)
		}
		for key, val := range v.StringData {
			out[key] = val
		}
	}
	return out, true
}
