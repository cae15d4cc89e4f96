// Package kubetest runs a real Kubernetes control plane for Skiff's tests:
// etcd, kube-apiserver and (optionally) kube-controller-manager as child
// processes on 127.0.0.1, with Istio's and the Gateway API's CRDs installed.
// No fake clientset: what a test writes goes through admission, validation,
// storage and watch exactly as in a cluster.
//
// The Kubernetes binaries come from the tools/kube module (see Binaries);
// etcd from the system (Debian's etcd-server, installed by scripts/test.sh).
package kubetest

import (
	"encoding/base64"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
)

// Address ranges of a test cluster. Every address a test can touch stays in
// 198.18.0.0/15 (RFC 2544, benchmarking) or on loopback.
const (
	ServiceCIDR = "198.19.0.0/16" // --service-cluster-ip-range
	PodCIDR     = "198.18.0.0/16" // for pod IPs a test assigns
	// AdvertiseAddress is what the apiserver publishes as the endpoint of
	// default/kubernetes (loopback is refused there); nothing listens on it.
	AdvertiseAddress = "198.18.255.254"
)

// DefaultControllers run in kube-controller-manager when Options.Controllers
// is empty: EndpointSlices for Services, and the default ServiceAccount of
// each namespace (the ServiceAccount admission plugin refuses Pods without
// it).
var DefaultControllers = []string{"endpointslice-controller", "serviceaccount-controller"}

// Options choose what Start runs.
type Options struct {
	// ControllerManager starts kube-controller-manager running Controllers.
	ControllerManager bool
	// Controllers for kube-controller-manager's --controllers (names as
	// kube-controller-manager 1.35 spells them, e.g. "garbage-collector-controller",
	// "namespace-controller"); empty means DefaultControllers.
	Controllers []string
	// NoCRDs skips installing Istio's and the Gateway API's CRDs.
	NoCRDs bool
	// GatewayAPIChannel is "experimental" (default: a superset of standard,
	// with TCPRoute, TLSRoute, UDPRoute) or "standard".
	GatewayAPIChannel string
	// APIServerFlags are appended to kube-apiserver's command line.
	APIServerFlags []string
}

// Env is a running control plane. Its processes are stopped and its
// directories removed when the test that started it ends.
type Env struct {
	// URL of kube-apiserver, https://127.0.0.1:PORT.
	URL string
	// Kubeconfig is a kubeconfig file for the admin user (for kubectl-like
	// tools and for processes a test starts).
	Kubeconfig string
	// Token is the admin user's bearer token (group system:masters).
	Token string
	// CAData is the PEM CA that signed the apiserver's serving certificate.
	CAData []byte
	// Dir holds certificates, keys, the token file and the process logs.
	Dir string
	// Bins are the Kubernetes binaries in use.
	Bins Bins

	etcd, apiserver, kcm *proc
	etcdDir              string
	kcmCert, kcmKey      string // serving pair of kube-controller-manager
	stopOnce             sync.Once
}

const (
	etcdReadyTimeout      = 30 * time.Second
	apiserverReadyTimeout = 90 * time.Second
	kcmReadyTimeout       = 60 * time.Second
	startAttempts         = 3
)

// Start runs etcd and kube-apiserver (and kube-controller-manager when asked),
// waits for /readyz, installs the CRDs and waits until they are Established.
// Any failure fails tb with what failed and the tail of that process's log.
func Start(tb testing.TB, opts Options) *Env {
	tb.Helper()
	bins := Binaries(tb)
	etcdBin, err := exec.LookPath("etcd")
	if err != nil {
		tb.Fatalf("kubetest: etcd not found on PATH: install Debian's etcd-server (apt-get install etcd-server; scripts/test.sh does it)")
	}
	began := time.Now()
	e := &Env{Dir: tb.TempDir(), Bins: bins, Token: randomToken()}
	tb.Cleanup(e.Stop)
	if err := e.start(tb, etcdBin, opts); err != nil {
		tb.Fatalf("kubetest: %v", err)
	}
	tb.Logf("kubetest: control plane ready in %v (%s)", time.Since(began).Round(time.Millisecond), e.URL)
	return e
}

func (e *Env) start(tb testing.TB, etcdBin string, opts Options) error {
	t0 := time.Now()
	// etcd on tmpfs when there is one: fsync on a shared disk dominates
	// apiserver writes otherwise.
	base := ""
	if fi, err := os.Stat("/dev/shm"); err == nil && fi.IsDir() {
		base = "/dev/shm"
	}
	etcdDir, err := os.MkdirTemp(base, "kubetest-etcd-")
	if err != nil {
		return fmt.Errorf("etcd data directory: %v", err)
	}
	e.etcdDir = etcdDir

	var etcdURL string
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(2)
		if err != nil {
			return err
		}
		etcdURL = fmt.Sprintf("http://127.0.0.1:%d", ports[0])
		peerURL := fmt.Sprintf("http://127.0.0.1:%d", ports[1])
		e.etcd, err = startProc("etcd", etcdBin, []string{
			"--name=kubetest",
			"--data-dir=" + filepath.Join(etcdDir, "data"),
			"--listen-client-urls=" + etcdURL,
			"--advertise-client-urls=" + etcdURL,
			"--listen-peer-urls=" + peerURL,
			"--initial-advertise-peer-urls=" + peerURL,
			"--initial-cluster=kubetest=" + peerURL,
			"--logger=zap",
			"--log-level=warn",
		}, filepath.Join(e.Dir, "etcd.log"))
		if err != nil {
			return err
		}
		err = waitFor(e.etcd, "etcd "+etcdURL, etcdReadyTimeout, func() (bool, error) {
			return etcdHealthy(etcdURL)
		})
		if err == nil {
			break
		}
		e.etcd.stop(time.Second)
		if attempt == startAttempts || !bindConflict(e.etcd) {
			return err
		}
		os.RemoveAll(filepath.Join(etcdDir, "data"))
	}
	tb.Logf("kubetest: etcd ready in %v (%s)", time.Since(t0).Round(time.Millisecond), etcdURL)

	t1 := time.Now()
	if err := e.startAPIServer(etcdURL, opts.APIServerFlags); err != nil {
		return err
	}
	tb.Logf("kubetest: kube-apiserver ready in %v (%s)", time.Since(t1).Round(time.Millisecond), e.URL)

	if opts.ControllerManager {
		t2 := time.Now()
		controllers := opts.Controllers
		if len(controllers) == 0 {
			controllers = DefaultControllers
		}
		if err := e.startControllerManager(controllers); err != nil {
			return err
		}
		tb.Logf("kubetest: kube-controller-manager ready in %v (controllers %s)", time.Since(t2).Round(time.Millisecond), strings.Join(controllers, ","))
	}

	if !opts.NoCRDs {
		t3 := time.Now()
		n, err := e.installCRDs(opts.GatewayAPIChannel)
		if err != nil {
			return err
		}
		tb.Logf("kubetest: %d CRDs established in %v", n, time.Since(t3).Round(time.Millisecond))
	}
	return nil
}

func (e *Env) startAPIServer(etcdURL string, extra []string) error {
	p, err := newPKI()
	if err != nil {
		return err
	}
	e.CAData = p.caPEM
	certFile, keyFile, err := p.servingPair(e.Dir, "apiserver", 2)
	if err != nil {
		return err
	}
	saPub, saKey, err := serviceAccountKeys(e.Dir)
	if err != nil {
		return err
	}
	if e.kcmCert, e.kcmKey, err = p.servingPair(e.Dir, "controller-manager", 3); err != nil {
		return err
	}
	tokens := filepath.Join(e.Dir, "tokens.csv")
	if err := os.WriteFile(tokens, []byte(e.Token+",admin,admin,system:masters\n"), 0o600); err != nil {
		return err
	}
	certDir := filepath.Join(e.Dir, "apiserver-certs") // unused: the pair above is given; keeps it off /var/run
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		e.URL = fmt.Sprintf("https://127.0.0.1:%d", ports[0])
		args := []string{
			"--etcd-servers=" + etcdURL,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(ports[0]),
			"--advertise-address=" + AdvertiseAddress,
			"--cert-dir=" + certDir,
			"--tls-cert-file=" + certFile,
			"--tls-private-key-file=" + keyFile,
			"--service-cluster-ip-range=" + ServiceCIDR,
			"--service-account-issuer=https://kubernetes.default.svc",
			"--service-account-key-file=" + saPub,
			"--service-account-signing-key-file=" + saKey,
			"--token-auth-file=" + tokens,
			"--authorization-mode=RBAC",
			"--allow-privileged=true",
			"--profiling=false",
			// Cut watches on SIGTERM: otherwise the controller-manager's
			// connections hold a stopping apiserver for its 60 s timeout.
			"--shutdown-watch-termination-grace-period=2s",
		}
		args = append(args, extra...)
		if e.apiserver == nil {
			e.apiserver = &proc{name: "kube-apiserver", bin: e.Bins.APIServer, logPath: filepath.Join(e.Dir, "kube-apiserver.log")}
		}
		e.apiserver.args = args
		if err := e.apiserver.start(); err != nil {
			return err
		}
		err = e.waitAPIServer()
		if err == nil {
			err = e.waitSystemNamespaces()
		}
		if err == nil {
			return e.writeKubeconfig()
		}
		e.apiserver.stop(time.Second)
		if attempt == startAttempts || !bindConflict(e.apiserver) {
			return err
		}
	}
}

func (e *Env) waitAPIServer() error {
	client, err := rest.HTTPClientFor(e.RESTConfig())
	if err != nil {
		return err
	}
	client.Timeout = 5 * time.Second
	return waitFor(e.apiserver, "kube-apiserver "+e.URL+"/readyz", apiserverReadyTimeout, func() (bool, error) {
		return httpOK(client, e.URL+"/readyz")
	})
}

// waitSystemNamespaces waits for the namespaces the apiserver creates after
// it reports ready (/readyz does not wait for them); objects in kube-system
// or default fail until they exist.
func (e *Env) waitSystemNamespaces() error {
	client, err := rest.HTTPClientFor(e.RESTConfig())
	if err != nil {
		return err
	}
	client.Timeout = 5 * time.Second
	for _, ns := range []string{"default", "kube-system", "kube-public"} {
		url := e.URL + "/api/v1/namespaces/" + ns
		if err := waitFor(e.apiserver, "namespace "+ns, apiserverReadyTimeout, func() (bool, error) {
			return httpOK(client, url)
		}); err != nil {
			return err
		}
	}
	return nil
}

func (e *Env) startControllerManager(controllers []string) error {
	cfg := e.RESTConfig()
	cfg.BearerToken = ""
	client, err := rest.HTTPClientFor(cfg) // trusts our CA; /healthz needs no credentials
	if err != nil {
		return err
	}
	client.Timeout = 5 * time.Second
	for attempt := 1; ; attempt++ {
		ports, err := freePorts(1)
		if err != nil {
			return err
		}
		args := []string{
			"--kubeconfig=" + e.Kubeconfig,
			"--authentication-kubeconfig=" + e.Kubeconfig,
			"--authorization-kubeconfig=" + e.Kubeconfig,
			"--bind-address=127.0.0.1",
			"--secure-port=" + strconv.Itoa(ports[0]),
			"--tls-cert-file=" + e.kcmCert,
			"--tls-private-key-file=" + e.kcmKey,
			"--leader-elect=false",
			"--controllers=" + strings.Join(controllers, ","),
			"--profiling=false",
		}
		if e.kcm == nil {
			e.kcm = &proc{name: "kube-controller-manager", bin: e.Bins.ControllerManager, logPath: filepath.Join(e.Dir, "kube-controller-manager.log")}
		}
		e.kcm.args = args
		if err := e.kcm.start(); err != nil {
			return err
		}
		url := fmt.Sprintf("https://127.0.0.1:%d/healthz", ports[0])
		err = waitFor(e.kcm, "kube-controller-manager "+url, kcmReadyTimeout, func() (bool, error) {
			return httpOK(client, url)
		})
		if err == nil {
			return nil
		}
		e.kcm.stop(time.Second)
		if attempt == startAttempts || !bindConflict(e.kcm) {
			return err
		}
	}
}

func (e *Env) writeKubeconfig() error {
	e.Kubeconfig = filepath.Join(e.Dir, "kubeconfig")
	kc := fmt.Sprintf(`apiVersion: v1
kind: Config
clusters:
- name: kubetest
  cluster:
    server: %s
    certificate-authority-data: %s
users:
- name: admin
  user:
    token: %s
contexts:
- name: kubetest
  context:
    cluster: kubetest
    user: admin
current-context: kubetest
`, e.URL, base64.StdEncoding.EncodeToString(e.CAData), e.Token)
	return os.WriteFile(e.Kubeconfig, []byte(kc), 0o600)
}

// RESTConfig returns a new client configuration for the admin user, its
// client-side rate limit raised so tests are not throttled. Callers may
// change the copy they get.
func (e *Env) RESTConfig() *rest.Config {
	return &rest.Config{
		Host:            e.URL,
		BearerToken:     e.Token,
		TLSClientConfig: rest.TLSClientConfig{CAData: append([]byte(nil), e.CAData...)},
		QPS:             1000,
		Burst:           2000,
		// No Timeout: it would bound watches too.
	}
}

// Clientset returns a typed client for the admin user.
func (e *Env) Clientset(tb testing.TB) kubernetes.Interface {
	tb.Helper()
	c, err := kubernetes.NewForConfig(e.RESTConfig())
	if err != nil {
		tb.Fatalf("kubetest: clientset: %v", err)
	}
	return c
}

// Dynamic returns a dynamic client for the admin user (CRDs, unstructured).
func (e *Env) Dynamic(tb testing.TB) dynamic.Interface {
	tb.Helper()
	c, err := dynamic.NewForConfig(e.RESTConfig())
	if err != nil {
		tb.Fatalf("kubetest: dynamic client: %v", err)
	}
	return c
}

// Restart stops kube-apiserver (SIGTERM, as a rolling upgrade would) and
// starts it again on the same port, etcd and certificates, waiting for
// /readyz. Watches open against it break and must resume.
func (e *Env) Restart(tb testing.TB) {
	tb.Helper()
	start := time.Now()
	if killed := e.apiserver.stop(15 * time.Second); killed {
		tb.Logf("kubetest: kube-apiserver did not stop within 15s of SIGTERM; killed")
	}
	tb.Logf("kubetest: kube-apiserver stopped in %v", time.Since(start).Round(time.Millisecond))
	if err := e.apiserver.start(); err != nil {
		tb.Fatalf("kubetest: restarting kube-apiserver: %v", err)
	}
	if err := e.waitAPIServer(); err != nil {
		tb.Fatalf("kubetest: restarting kube-apiserver: %v", err)
	}
	tb.Logf("kubetest: kube-apiserver restarted in %v", time.Since(start).Round(time.Millisecond))
}

// RSS reports the resident set size in bytes of "etcd", "kube-apiserver" or
// "kube-controller-manager".
func (e *Env) RSS(component string) (int64, error) {
	for _, p := range []*proc{e.etcd, e.apiserver, e.kcm} {
		if p != nil && p.name == component {
			return p.rss()
		}
	}
	return 0, fmt.Errorf("kubetest: no running component %q (etcd, kube-apiserver, kube-controller-manager)", component)
}

// Stop kills every process and removes etcd's data. It runs at the end of
// the test that called Start; calling it earlier is allowed.
func (e *Env) Stop() {
	e.stopOnce.Do(func() {
		for _, p := range []*proc{e.kcm, e.apiserver, e.etcd} {
			if p != nil {
				p.stop(5 * time.Second)
			}
		}
		if e.etcdDir != "" {
			os.RemoveAll(e.etcdDir)
		}
	})
}

func etcdHealthy(url string) (bool, error) {
	client := &http.Client{Timeout: 2 * time.Second}
	resp, err := client.Get(url + "/health")
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || !strings.Contains(string(body), `"health":"true"`) {
		return false, fmt.Errorf("etcd /health: %s %s", resp.Status, body)
	}
	return true, nil
}

func httpOK(client *http.Client, url string) (bool, error) {
	resp, err := client.Get(url)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 8192))
	if resp.StatusCode != http.StatusOK {
		return false, fmt.Errorf("GET %s: %s: %s", url, resp.Status, body)
	}
	return true, nil
}
