//go:build netns

// Package kube is the end-to-end test of Skiff on Kubernetes: a real
// kube-apiserver, etcd and kube-controller-manager (internal/testing/kubetest),
// skiffd in Kubernetes mode with its CA and webhooks, and a test kubelet
// (internal/testing/kubelet) that runs the pods the API server schedules as
// processes in network namespaces, with the sidecar skiffd's webhook
// injected and Istio's capture. Istio's Bookinfo and its request-routing
// task are applied unchanged through the API server. Root only (build tag
// netns; CI runs as root).
package kube

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	discoveryv1 "k8s.io/api/discovery/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"k8s.io/client-go/discovery/cached/memory"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/restmapper"

	"github.com/skiff-mesh/skiff/internal/testing/bookinfotest"
	"github.com/skiff-mesh/skiff/internal/testing/kubelet"
	"github.com/skiff-mesh/skiff/internal/testing/kubetest"
	"github.com/skiff-mesh/skiff/internal/testing/meshtest"
	"github.com/skiff-mesh/skiff/localmesh/netns"
)

var (
	bin     string // skiffd, skiff-proxy, bookinfo
	samples string // Istio's Bookinfo samples (../shared/istio-samples/bookinfo)
)

func TestMain(m *testing.M) {
	dir, err := meshtest.Build(map[string]string{
		"skiffd": "github.com/skiff-mesh/skiff/cmd/skiffd", "skiff-proxy": "github.com/skiff-mesh/skiff/cmd/skiff-proxy",
		"bookinfo": "github.com/skiff-mesh/skiff/samples/bookinfo/cmd/bookinfo",
	})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	bin = dir
	repo, err := filepath.Abs("../..")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	samples = filepath.Join(filepath.Dir(repo), "shared", "istio-samples", "bookinfo")
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// gateway is the host's address on the kubelet's bridge, where the pods
// reach skiffd (istiod.istio-system.svc:15012 in their hosts files).
var gateway = netip.MustParsePrefix("198.18.128.1/17")

// TestBookinfoRequestRouting: Bookinfo's platform/kube/bookinfo.yaml,
// applied through the API server into a namespace labelled
// istio-injection=enabled, comes up with skiffd's sidecars, whose
// certificates come from skiffd's CA on the pods' projected tokens
// (TokenReview); then Istio's request-routing task: all traffic to
// reviews v1, then jason to v2. The traffic is seen crossing the sidecars
// with Istio mTLS.
func TestBookinfoRequestRouting(t *testing.T) {
	env := kubetest.Start(t, kubetest.Options{ControllerManager: true, Controllers: []string{
		"endpointslice-controller", "serviceaccount-controller", "root-ca-certificate-publisher-controller",
		"deployment-controller", "replicaset-controller"}})
	cs := env.Clientset(t)
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()

	istiod := []string{"istiod.istio-system.svc", "istiod.istio-system.svc.cluster.local", "istiod.istio-system"}
	kl := kubelet.Start(t, cs, kubelet.Options{
		Programs: map[string]string{"skiff-proxy": filepath.Join(bin, "skiff-proxy"), "bookinfo": filepath.Join(bin, "bookinfo")},
		Gateway:  gateway,
		Hosts:    []netns.HostEntry{{IP: gateway.Addr(), Names: istiod}},
	})
	// The root namespace, as `skiff install` creates it: skiffd's leader
	// election (status, root certs, webhook configurations) lives there.
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "istio-system"}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	sd := startSkiffd(t, env)

	// Injection: the namespace label, seen by skiffd's webhook once its
	// configuration is in place; a dry-run pod shows when it is.
	nsClient := cs.CoreV1().Namespaces()
	eventually(t, 30*time.Second, "labelling namespace default istio-injection=enabled", func() error {
		ns, err := nsClient.Get(ctx, "default", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if ns.Labels == nil {
			ns.Labels = map[string]string{}
		}
		ns.Labels["istio-injection"] = "enabled"
		_, err = nsClient.Update(ctx, ns, metav1.UpdateOptions{})
		return err
	})
	eventually(t, 90*time.Second, "a dry-run pod in default injected by skiffd's webhook", func() error {
		p, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "probe", Labels: map[string]string{"app": "probe"}},
			Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "probe", Image: "probe"}}}}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			return err
		}
		for _, c := range append(p.Spec.InitContainers, p.Spec.Containers...) {
			if c.Name == "istio-proxy" {
				return nil
			}
		}
		return errors.New("no istio-proxy container")
	})

	apply(t, env, sample(t, "platform/kube/bookinfo.yaml"))
	// Two more pods with an app readiness probe, which the injector
	// rewrites to the agent's :15020/app-health/…: one the app answers,
	// one it answers 404.
	for name, path := range map[string]string{"probed-ok": "/health", "probed-bad": "/no-such-page"} {
		if _, err := cs.CoreV1().Pods("default").Create(ctx, &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": name}},
			Spec: corev1.PodSpec{ServiceAccountName: "bookinfo-details", Containers: []corev1.Container{{
				Name: "details", Image: "docker.io/istio/examples-bookinfo-details-v1:1.20.3", Ports: []corev1.ContainerPort{{ContainerPort: 9080}},
				ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: path, Port: intstr.FromInt32(9080)}}, PeriodSeconds: 1},
			}}}}, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	deployments := []string{"details-v1", "ratings-v1", "reviews-v1", "reviews-v2", "reviews-v3", "productpage-v1"}
	pods := map[string]*corev1.Pod{}
	eventually(t, 150*time.Second, "Bookinfo's pods Ready with their sidecars", func() error {
		list, err := cs.CoreV1().Pods("default").List(ctx, metav1.ListOptions{})
		if err != nil {
			return err
		}
		var waiting []string
		for _, d := range deployments {
			p := podOf(list.Items, d)
			if p == nil {
				waiting = append(waiting, d+": no pod")
				continue
			}
			if !hasContainer(p, "istio-proxy") || !hasContainer(p, "istio-init") {
				return fmt.Errorf("pod %s was not injected (containers %v, init containers %v)", p.Name, p.Spec.Containers, p.Spec.InitContainers)
			}
			// The API server is 1.35: skiffd injects the proxy as a
			// native sidecar (an init container that keeps running).
			if !nativeSidecar(p) {
				return fmt.Errorf("pod %s: istio-proxy is not a native sidecar (init container with restartPolicy Always)", p.Name)
			}
			if !podReady(p) {
				waiting = append(waiting, fmt.Sprintf("%s: %s %v", p.Name, p.Status.Phase, containerStates(p)))
				continue
			}
			pods[d] = p
		}
		if len(waiting) > 0 {
			return fmt.Errorf("waiting for %s", strings.Join(waiting, "; "))
		}
		return nil
	}, func() string { return podLogs(t, cs, kl) })
	eventually(t, 60*time.Second, "pod probed-ok Ready through its rewritten probe", func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "probed-ok", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if g := p.Spec.Containers[len(p.Spec.Containers)-1].ReadinessProbe.HTTPGet; g == nil || g.Port.IntValue() != 15020 || g.Path != "/app-health/details/readyz" {
			return fmt.Errorf("the details container's readiness probe was not rewritten to :15020/app-health/details/readyz: %+v", g)
		}
		if !podReady(p) {
			return fmt.Errorf("%s %v", p.Status.Phase, containerStates(p))
		}
		return nil
	}, func() string { return podLogs(t, cs, kl) })
	eventually(t, 60*time.Second, "pod probed-bad's sidecar ready and app running", func() error {
		p, err := cs.CoreV1().Pods("default").Get(ctx, "probed-bad", metav1.GetOptions{})
		if err != nil {
			return err
		}
		if !containerRunning(p, "details") || !containerReady(p, "istio-proxy") {
			return fmt.Errorf("%v", containerStates(p))
		}
		return nil
	})
	// Its app answers the probe 404: after some probe periods (1 s) it is
	// still not ready.
	time.Sleep(3 * time.Second)
	if p, err := cs.CoreV1().Pods("default").Get(ctx, "probed-bad", metav1.GetOptions{}); err != nil {
		t.Fatal(err)
	} else if podReady(p) || containerReady(p, "details") {
		t.Errorf("pod probed-bad, whose app answers its readiness probe 404, is ready: %v", containerStates(p))
	}
	eventually(t, 60*time.Second, "EndpointSlices of Bookinfo's Services with every pod ready", func() error {
		for svc, want := range map[string][]string{"productpage": {"productpage-v1"}, "details": {"details-v1"}, "ratings": {"ratings-v1"},
			"reviews": {"reviews-v1", "reviews-v2", "reviews-v3"}} {
			list, err := cs.DiscoveryV1().EndpointSlices("default").List(ctx, metav1.ListOptions{LabelSelector: discoveryv1.LabelServiceName + "=" + svc})
			if err != nil {
				return err
			}
			ready := map[string]bool{}
			for _, s := range list.Items {
				for _, e := range s.Endpoints {
					if e.Conditions.Ready != nil && *e.Conditions.Ready && len(e.Addresses) > 0 {
						ready[e.Addresses[0]] = true
					}
				}
			}
			for _, d := range want {
				if !ready[pods[d].Status.PodIP] {
					return fmt.Errorf("service %s: pod %s (%s) not a ready endpoint; slices %v", svc, pods[d].Name, pods[d].Status.PodIP, list.Items)
				}
			}
		}
		return nil
	})

	// Identity: each sidecar holds a workload certificate for its pod's
	// service account, from skiffd's CA, which (no bootstrap tokens in
	// Kubernetes mode) took the pod's projected istio-ca token through a
	// TokenReview.
	for d, sa := range map[string]string{"reviews-v2": "bookinfo-reviews", "productpage-v1": "bookinfo-productpage"} {
		id := workloadID(t, kl, pods[d])
		if want := "spiffe://cluster.local/ns/default/sa/" + sa; id != want {
			t.Errorf("pod %s's sidecar holds a certificate for %q, want %q", pods[d].Name, id, want)
		}
	}
	if n := metric(t, sd.monitoring+"/metrics", "citadel_server_success_cert_issuance_count", nil); n < float64(len(deployments)) {
		t.Errorf("skiffd's CA issued %v certificates, want at least one per pod (%d)", n, len(deployments))
	}
	if n := metric(t, sd.monitoring+"/metrics", "citadel_server_authentication_failure_count", nil); n != 0 {
		t.Errorf("skiffd's CA refused %v requests: the pods' tokens should pass the TokenReview", n)
	}

	// Request routing, Istio's task, through the API server.
	page := "http://" + net.JoinHostPort(pods["productpage-v1"].Status.PodIP, "9080")
	apply(t, env, sample(t, "networking/destination-rule-all.yaml"))
	apply(t, env, sample(t, "networking/virtual-service-all-v1.yaml"))
	anon := newReader(page)
	anon.Until(t, 60*time.Second, 5, "reviews v1 (no stars) under virtual-service-all-v1.yaml", v1)
	anon.Each(t, 20, "reviews v1 (no stars) under virtual-service-all-v1.yaml", v1)

	apply(t, env, sample(t, "networking/virtual-service-reviews-test-v2.yaml"))
	jason := newReader(page)
	jason.SignIn(t, "jason")
	jason.Until(t, 60*time.Second, 3, "reviews v2 (black stars) for jason", v2)
	jason.Each(t, 10, "reviews v2 (black stars) for jason", v2)
	anon.Each(t, 10, "reviews v1 for a reader not signed in", v1)

	// Through the sidecars, not around them: reviews' server sidecars
	// counted productpage's requests as Istio mTLS, and none for v3.
	lbl := func(dst string) map[string]string {
		return map[string]string{"reporter": "destination", "source_workload": "productpage-v1", "destination_workload": dst,
			"connection_security_policy": "mutual_tls", "response_code": "200"}
	}
	for _, d := range []string{"reviews-v1", "reviews-v2"} {
		n := metric(t, promURL(pods[d]), "istio_requests_total", lbl(d))
		t.Logf("%s's sidecar: %v requests from productpage-v1 over mTLS", d, n)
		if n < 10 {
			t.Errorf("%s's sidecar counted %v mTLS requests from productpage-v1, want at least 10 (the reads above)", d, n)
		}
	}
	if n := metric(t, promURL(pods["ratings-v1"]), "istio_requests_total", map[string]string{
		"reporter": "destination", "source_workload": "reviews-v2", "connection_security_policy": "mutual_tls"}); n < 10 {
		t.Errorf("ratings' sidecar counted %v mTLS requests from reviews-v2, want at least 10 (jason's reads)", n)
	}
}

// skiffd is a running skiffd in Kubernetes mode.
type skiffd struct {
	monitoring string // http://127.0.0.1:PORT
}

// startSkiffd runs skiffd against env: its CA and ADS on the bridge's
// gateway:15012 (the pods' istiod), webhooks on loopback where the API
// server calls them.
func startSkiffd(t *testing.T, env *kubetest.Env) *skiffd {
	t.Helper()
	dir := t.TempDir()
	wh, mon := freePort(t), freePort(t)
	webhook := net.JoinHostPort("127.0.0.1", strconv.Itoa(wh))
	s := &skiffd{monitoring: "http://" + net.JoinHostPort("127.0.0.1", strconv.Itoa(mon))}
	logPath := filepath.Join(dir, "skiffd.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(filepath.Join(bin, "skiffd"), "--kubeconfig", env.Kubeconfig,
		"--xds-addr", "127.0.0.1:0", "--secure-addr", net.JoinHostPort(gateway.Addr().String(), "15012"),
		"--monitoring-addr", net.JoinHostPort("127.0.0.1", strconv.Itoa(mon)),
		"--webhook-addr", webhook, "--webhook-url", "https://"+webhook, "--ca-dir", filepath.Join(dir, "ca"))
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	t.Cleanup(func() {
		cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-exited:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-exited
		}
		logf.Close()
		if t.Failed() {
			b, _ := os.ReadFile(logPath)
			t.Logf("skiffd's log (last 6 KiB):\n%s", tail(b, 6<<10))
		}
	})
	c := &http.Client{Timeout: 2 * time.Second, Transport: &http.Transport{Proxy: nil}}
	eventually(t, 60*time.Second, "skiffd's monitoring endpoint", func() error {
		select {
		case <-exited:
			b, _ := os.ReadFile(logPath)
			t.Fatalf("skiffd exited: %s", tail(b, 4<<10))
		default:
		}
		resp, err := c.Get(s.monitoring + "/metrics")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	return s
}

func tail(b []byte, n int) []byte {
	if len(b) > n {
		return b[len(b)-n:]
	}
	return b
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

func sample(t *testing.T, rel string) string {
	t.Helper()
	p := filepath.Join(samples, rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("Istio's Bookinfo sample %s is missing (%v): this test applies Istio's files unchanged from ../shared/istio-samples beside the repository", p, err)
	}
	return p
}

// apply is `kubectl apply -f FILE` into namespace default: server-side
// apply of each document, its resource found through discovery.
func apply(t *testing.T, env *kubetest.Env, file string) {
	t.Helper()
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	dc, err := kubernetes.NewForConfig(env.RESTConfig())
	if err != nil {
		t.Fatal(err)
	}
	mapper := restmapper.NewDeferredDiscoveryRESTMapper(memory.NewMemCacheClient(dc.Discovery()))
	dyn := env.Dynamic(t)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	for i := 0; ; i++ {
		var obj map[string]any
		if err := dec.Decode(&obj); err == io.EOF {
			break
		} else if err != nil {
			t.Fatalf("%s: document %d: %v", file, i, err)
		}
		if len(obj) == 0 {
			continue
		}
		u := &unstructured.Unstructured{Object: obj}
		gvk := u.GroupVersionKind()
		m, err := mapper.RESTMapping(schema.GroupKind{Group: gvk.Group, Kind: gvk.Kind}, gvk.Version)
		if err != nil {
			t.Fatalf("%s: document %d (%s %s): %v", file, i, gvk.Kind, u.GetName(), err)
		}
		var ri dynamic.ResourceInterface = dyn.Resource(m.Resource)
		if m.Scope.Name() == "namespace" {
			ns := u.GetNamespace()
			if ns == "" {
				ns = "default"
			}
			ri = dyn.Resource(m.Resource).Namespace(ns)
		}
		if _, err := ri.Apply(ctx, u.GetName(), u, metav1.ApplyOptions{FieldManager: "kube-e2e", Force: true}); err != nil {
			t.Fatalf("applying %s: %s %s: %v", filepath.Base(file), gvk.Kind, u.GetName(), err)
		}
	}
}

func podOf(pods []corev1.Pod, deployment string) *corev1.Pod {
	for i := range pods {
		p := &pods[i]
		if p.DeletionTimestamp == nil && strings.HasPrefix(p.Name, deployment+"-") && strings.Count(strings.TrimPrefix(p.Name, deployment+"-"), "-") == 1 {
			return p
		}
	}
	return nil
}

func hasContainer(p *corev1.Pod, name string) bool {
	for _, c := range append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
		if c.Name == name {
			return true
		}
	}
	return false
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func containerStatus(p *corev1.Pod, name string) corev1.ContainerStatus {
	for _, cs := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		if cs.Name == name {
			return cs
		}
	}
	return corev1.ContainerStatus{}
}

func containerRunning(p *corev1.Pod, name string) bool {
	return containerStatus(p, name).State.Running != nil
}

func containerReady(p *corev1.Pod, name string) bool { return containerStatus(p, name).Ready }

func containerStates(p *corev1.Pod) []string {
	var out []string
	for _, cs := range append(append([]corev1.ContainerStatus(nil), p.Status.InitContainerStatuses...), p.Status.ContainerStatuses...) {
		s := "?"
		switch {
		case cs.State.Running != nil:
			s = fmt.Sprintf("running ready=%v", cs.Ready)
		case cs.State.Terminated != nil:
			s = "terminated " + cs.State.Terminated.Reason
		case cs.State.Waiting != nil:
			s = "waiting " + cs.State.Waiting.Reason + " " + cs.State.Waiting.Message
		}
		out = append(out, cs.Name+": "+s)
	}
	return out
}

// podLogs is the tail of every container's log, for a failure message.
func podLogs(t *testing.T, cs kubernetes.Interface, kl *kubelet.Kubelet) string {
	list, err := cs.CoreV1().Pods("default").List(context.Background(), metav1.ListOptions{})
	if err != nil {
		return err.Error()
	}
	var b strings.Builder
	for _, p := range list.Items {
		for _, c := range append(append([]corev1.Container(nil), p.Spec.InitContainers...), p.Spec.Containers...) {
			fmt.Fprintf(&b, "--- %s/%s:\n%s\n", p.Name, c.Name, tail([]byte(kl.Logs(p.Namespace, p.Name, c.Name)), 1500))
		}
	}
	return b.String()
}

// workloadID is the URI SAN of the workload certificate pod's sidecar
// holds, read from its admin config dump inside the pod's network (the
// admin port listens on the pod's loopback only).
func workloadID(t *testing.T, kl *kubelet.Kubelet, p *corev1.Pod) string {
	t.Helper()
	pn := kl.PodNetwork(p.Namespace, p.Name)
	if pn == nil {
		t.Fatalf("pod %s is not running on the kubelet", p.Name)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	out, err := pn.Command(ctx, -1, "curl", "-sS", "--noproxy", "*", "http://127.0.0.1:15000/config_dump?resource=dynamic_active_secrets").Output()
	if err != nil {
		t.Fatalf("pod %s: the sidecar's config dump: %v", p.Name, err)
	}
	var dump struct {
		Configs []struct {
			Name   string `json:"name"`
			Secret struct {
				TLSCertificate struct {
					CertificateChain struct {
						InlineBytes string `json:"inline_bytes"`
					} `json:"certificate_chain"`
				} `json:"tls_certificate"`
			} `json:"secret"`
		} `json:"configs"`
	}
	if err := json.Unmarshal(out, &dump); err != nil {
		t.Fatalf("pod %s: the sidecar's config dump: %v\n%s", p.Name, err, tail(out, 2000))
	}
	for _, c := range dump.Configs {
		if c.Name != "default" {
			continue
		}
		chain, err := base64.StdEncoding.DecodeString(c.Secret.TLSCertificate.CertificateChain.InlineBytes)
		if err != nil {
			t.Fatalf("pod %s: certificate chain: %v", p.Name, err)
		}
		blk, _ := pem.Decode(chain)
		if blk == nil {
			t.Fatalf("pod %s: certificate chain is not PEM: %q", p.Name, chain)
		}
		cert, err := x509.ParseCertificate(blk.Bytes)
		if err != nil {
			t.Fatalf("pod %s: %v", p.Name, err)
		}
		if len(cert.URIs) != 1 {
			t.Fatalf("pod %s: workload certificate URIs %v, want one SPIFFE ID", p.Name, cert.URIs)
		}
		return cert.URIs[0].String()
	}
	t.Fatalf("pod %s: no active secret \"default\" in the sidecar's config dump:\n%s", p.Name, tail(out, 2000))
	return ""
}

func promURL(p *corev1.Pod) string {
	return "http://" + net.JoinHostPort(p.Status.PodIP, "15090") + "/stats/prometheus"
}

// metric sums the samples of name whose labels include want.
func metric(t *testing.T, url, name string, want map[string]string) float64 {
	t.Helper()
	c := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{Proxy: nil}}
	resp, err := c.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	var sum float64
	for _, line := range strings.Split(string(body), "\n") {
		if !strings.HasPrefix(line, name+"{") && !strings.HasPrefix(line, name+" ") {
			continue
		}
		ok := true
		for k, v := range want {
			if !strings.Contains(line, k+`="`+v+`"`) {
				ok = false
			}
		}
		if !ok {
			continue
		}
		f := strings.Fields(line)
		if v, err := strconv.ParseFloat(f[len(f)-1], 64); err == nil {
			sum += v
		}
	}
	return sum
}

func eventually(t *testing.T, limit time.Duration, what string, f func() error, more ...func() string) {
	t.Helper()
	var err error
	for deadline := time.Now().Add(limit); time.Now().Before(deadline); time.Sleep(250 * time.Millisecond) {
		if err = f(); err == nil {
			return
		}
	}
	extra := ""
	for _, m := range more {
		extra += "\n" + m()
	}
	t.Fatalf("%s: not within %v: %v%s", what, limit, err, extra)
}

// The product page as Bookinfo's users read it (internal/testing/bookinfotest).
var (
	newReader = bookinfotest.NewReader
	v1, v2    = bookinfotest.V1, bookinfotest.V2
)

func nativeSidecar(p *corev1.Pod) bool {
	for _, c := range p.Spec.InitContainers {
		if c.Name == "istio-proxy" {
			return c.RestartPolicy != nil && *c.RestartPolicy == corev1.ContainerRestartPolicyAlways
		}
	}
	return false
}
