// Package kubelet is a minimal node agent for tests against a real API
// server (internal/testing/kubetest): it registers a Node, binds the Pods
// no scheduler binds, and runs each Pod bound to it as local processes in
// its own network namespace (localmesh/netns), with the local mesh's
// process supervision (localmesh.Process). Per pod it allocates an address
// in 198.18.0.0/15, keeps a hosts file of the cluster's Services, lays out
// the volumes (projected service-account tokens from the TokenRequest API,
// ConfigMaps, Secrets, downward API, emptyDirs) under a per-pod directory,
// runs the init containers in order (native sidecars, restartPolicy
// Always, stay running and gate the next container on their startup
// probe), then the app containers (postStart exec hooks held before the
// next), each as its securityContext's user, probes them as a kubelet
// does, and writes the pod's status, so the EndpointSlice controller
// publishes it. Container images map to local programs (Options.Images).
//
// It needs root, iproute2, util-linux's setpriv and iptables, as
// localmesh/netns does. Its pods live in 198.18.128.0/17 on their own
// bridge: inside 198.18.0.0/15 but apart from the addresses a netns local
// mesh allocates (from 198.18.0.2 up), so both can run on one host; one
// kubelet at a time, which Start waits for.
package kubelet

import (
	"context"
	"fmt"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"

	"github.com/skiff-mesh/skiff/localmesh/netns"
)

// Options configure Start. Programs must name the binaries the pods' images
// and commands map to.
type Options struct {
	// Node is the Node's name (default "kubelet-test"); pods with an empty
	// spec.nodeName are bound to it.
	Node string
	// Programs maps program names (a container command's first word, and
	// the names Images returns) to binaries, e.g. "skiff-proxy" and
	// "bookinfo". They are copied into a directory every pod user can read.
	// Other names are looked up on PATH.
	Programs map[string]string
	// Images maps a container image to the program and arguments its
	// entrypoint runs (the container's args are appended; its command,
	// when set, replaces both). Nil means DefaultImages.
	Images func(image string) ([]string, bool)
	// Hosts are extra /etc/hosts entries of every pod, e.g. istiod's name
	// at the host's bridge address where the test runs skiffd.
	Hosts []netns.HostEntry
	// Network: the bridge and namespace prefix (default "skiffk0" and
	// "skk-") and the gateway (default 198.18.128.1/17). Pod addresses are
	// allocated after the gateway.
	Bridge, Prefix string
	Gateway        netip.Prefix
	// MaxProbePeriod caps every probe's periodSeconds (default 2 s), so a
	// test does not wait Istio's 15 s between readiness probes.
	MaxProbePeriod time.Duration
	// LockWait bounds the wait for another kubelet on the host (default 3 min).
	LockWait time.Duration
	// Logf receives progress lines (default tb.Logf).
	Logf func(format string, args ...any)
}

// Kubelet is a running node agent.
type Kubelet struct {
	opts   Options
	cs     kubernetes.Interface
	host   *netns.Host
	dir    string // per-pod directories, the program copies
	binDir string
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	pods     map[string]*podRunner // namespace/name
	deleting map[string]bool       // pods whose deletion finishDeletion is completing
	nextIP   netip.Addr
	services []*corev1.Service
	wg       sync.WaitGroup
}

// Start registers the Node, creates the bridge and starts watching Pods and
// Services through cs. Everything is stopped and removed in tb.Cleanup:
// processes, namespaces, the bridge.
func Start(tb testing.TB, cs kubernetes.Interface, opts Options) *Kubelet {
	tb.Helper()
	if opts.Node == "" {
		opts.Node = "kubelet-test"
	}
	if opts.Bridge == "" {
		opts.Bridge = "skiffk0"
	}
	if opts.Prefix == "" {
		opts.Prefix = "skk-"
	}
	if !opts.Gateway.IsValid() {
		opts.Gateway = netip.MustParsePrefix("198.18.128.1/17")
	}
	if opts.MaxProbePeriod <= 0 {
		opts.MaxProbePeriod = 2 * time.Second
	}
	if opts.LockWait <= 0 {
		opts.LockWait = 3 * time.Minute
	}
	if opts.Logf == nil {
		opts.Logf = tb.Logf
	}
	if opts.Images == nil {
		opts.Images = DefaultImages
	}
	dir, err := os.MkdirTemp("", "kubelet-")
	if err != nil {
		tb.Fatalf("kubelet: %v", err)
	}
	// The proxy runs as 1337 and must reach its files and binary.
	if err := os.Chmod(dir, 0o755); err != nil {
		tb.Fatalf("kubelet: %v", err)
	}
	tb.Cleanup(func() { os.RemoveAll(dir) })
	k := &Kubelet{opts: opts, cs: cs, dir: dir, binDir: filepath.Join(dir, "bin"), pods: map[string]*podRunner{},
		deleting: map[string]bool{}, nextIP: opts.Gateway.Addr().Next()}
	if err := k.copyPrograms(); err != nil {
		tb.Fatalf("kubelet: %v", err)
	}
	unlock, err := lockNetns(opts.LockWait)
	if err != nil {
		tb.Fatalf("kubelet: %v", err)
	}
	setupCtx, cancelSetup := context.WithTimeout(context.Background(), time.Minute)
	defer cancelSetup()
	k.host, err = netns.Setup(setupCtx, netns.Options{Bridge: opts.Bridge, Prefix: opts.Prefix, Gateway: opts.Gateway})
	if err != nil {
		unlock()
		tb.Fatalf("kubelet: %v", err)
	}
	k.ctx, k.cancel = context.WithCancel(context.Background())
	tb.Cleanup(func() {
		k.stop()
		if err := k.host.Close(); err != nil {
			tb.Errorf("kubelet: removing the pod network: %v", err)
		}
		unlock()
	})
	if err := k.registerNode(setupCtx); err != nil {
		tb.Fatalf("kubelet: %v", err)
	}
	k.watch()
	return k
}

// Gateway is the host's address on the pods' bridge: where a pod reaches a
// server the test runs on the host (e.g. skiffd).
func (k *Kubelet) Gateway() netip.Addr { return k.host.Gateway() }

// Node is the Node's name.
func (k *Kubelet) Node() string { return k.opts.Node }

// PodNetwork returns the network namespace of the running pod
// namespace/name, for a test to run commands inside it (Command), or nil.
func (k *Kubelet) PodNetwork(namespace, name string) *netns.Pod {
	k.mu.Lock()
	defer k.mu.Unlock()
	if r := k.pods[namespace+"/"+name]; r != nil {
		return r.net.Load()
	}
	return nil
}

// Logs returns what container c of pod namespace/name wrote so far.
func (k *Kubelet) Logs(namespace, name, c string) string {
	b, _ := os.ReadFile(filepath.Join(k.podDir(namespace, name), "logs", c+".log"))
	return string(b)
}

func (k *Kubelet) podDir(namespace, name string) string {
	return filepath.Join(k.dir, "pods", namespace, name)
}

func (k *Kubelet) copyPrograms() error {
	if err := os.MkdirAll(k.binDir, 0o755); err != nil {
		return err
	}
	for name, path := range k.opts.Programs {
		if strings.Contains(name, "/") {
			return fmt.Errorf("Options.Programs[%q]: want a program name without '/'", name)
		}
		src, err := os.Open(path)
		if err != nil {
			return fmt.Errorf("Options.Programs[%q]: %w; build it first (go build -o DIR/%s ./cmd/...)", name, err, name)
		}
		dst, err := os.OpenFile(filepath.Join(k.binDir, name), os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o755)
		if err == nil {
			_, err = io.Copy(dst, src)
			if cerr := dst.Close(); err == nil {
				err = cerr
			}
		}
		src.Close()
		if err != nil {
			return fmt.Errorf("Options.Programs[%q]: copying %s: %w", name, path, err)
		}
	}
	return nil
}

// lockNetns takes the host-wide kubelet lock: kubelets share the bridge
// name, the namespace prefix and the pod network.
func lockNetns(wait time.Duration) (func(), error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "skiff-kubelet.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	deadline := time.Now().Add(wait)
	for unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		if time.Now().After(deadline) {
			f.Close()
			return nil, fmt.Errorf("another test kubelet on this host held %s for %v (kubelets share the bridge and pod network); wait for it to end", f.Name(), wait)
		}
		time.Sleep(500 * time.Millisecond)
	}
	return func() { f.Close() }, nil
}

func (k *Kubelet) registerNode(ctx context.Context) error {
	nodes := k.cs.CoreV1().Nodes()
	node, err := nodes.Create(ctx, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: k.opts.Node,
		Labels: map[string]string{"kubernetes.io/hostname": k.opts.Node, "kubernetes.io/os": "linux"}}}, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		node, err = nodes.Get(ctx, k.opts.Node, metav1.GetOptions{})
	}
	if err != nil {
		return fmt.Errorf("registering node %s: %w", k.opts.Node, err)
	}
	now := metav1.Now()
	node.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue,
		Reason: "KubeletReady", LastHeartbeatTime: now, LastTransitionTime: now}}
	node.Status.Addresses = []corev1.NodeAddress{{Type: corev1.NodeInternalIP, Address: k.host.Gateway().String()},
		{Type: corev1.NodeHostName, Address: k.opts.Node}}
	node.Status.Allocatable = nodeAllocatable()
	node.Status.Capacity = nodeAllocatable()
	if _, err := nodes.UpdateStatus(ctx, node, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("status of node %s: %w", k.opts.Node, err)
	}
	return nil
}

// watch runs the Pod and Service informers. Their callbacks never block:
// starting and stopping pods happens in goroutines.
func (k *Kubelet) watch() {
	f := informers.NewSharedInformerFactory(k.cs, 0)
	pods := f.Core().V1().Pods().Informer()
	svcs := f.Core().V1().Services().Informer()
	pods.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    func(o any) { k.podChanged(o) },
		UpdateFunc: func(_, o any) { k.podChanged(o) },
		DeleteFunc: func(o any) {
			if d, ok := o.(cache.DeletedFinalStateUnknown); ok {
				o = d.Obj
			}
			if p, ok := o.(*corev1.Pod); ok {
				k.podGone(p.Namespace + "/" + p.Name)
			}
		},
	})
	svcStore := svcs.GetStore()
	onSvc := func(any) {
		var list []*corev1.Service
		for _, o := range svcStore.List() {
			if s, ok := o.(*corev1.Service); ok {
				list = append(list, s)
			}
		}
		k.servicesChanged(list)
	}
	svcs.AddEventHandler(cache.ResourceEventHandlerFuncs{AddFunc: onSvc, UpdateFunc: func(_, o any) { onSvc(o) }, DeleteFunc: onSvc})
	f.Start(k.ctx.Done())
}

func (k *Kubelet) podChanged(o any) {
	p, ok := o.(*corev1.Pod)
	if !ok {
		return
	}
	key := p.Namespace + "/" + p.Name
	switch {
	case p.Spec.NodeName == "" && p.DeletionTimestamp == nil:
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			k.bind(p)
		}()
	case p.Spec.NodeName != k.opts.Node:
	case p.DeletionTimestamp != nil:
		k.finishDeletion(p, k.podGone(key))
	case p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
	default:
		k.mu.Lock()
		r := k.pods[key]
		if r == nil && k.ctx.Err() == nil {
			r = k.newRunner(key, string(p.UID))
			k.pods[key] = r
			k.wg.Add(1)
			go func() {
				defer k.wg.Done()
				r.run(p)
			}()
		}
		k.mu.Unlock()
	}
}

// bind does the scheduler's job for an unscheduled pod.
func (k *Kubelet) bind(p *corev1.Pod) {
	ctx, cancel := context.WithTimeout(k.ctx, 30*time.Second)
	defer cancel()
	err := k.cs.CoreV1().Pods(p.Namespace).Bind(ctx, &corev1.Binding{
		ObjectMeta: metav1.ObjectMeta{Name: p.Name, Namespace: p.Namespace, UID: p.UID},
		Target:     corev1.ObjectReference{Kind: "Node", Name: k.opts.Node},
	}, metav1.CreateOptions{})
	if err != nil && !apierrors.IsConflict(err) && !apierrors.IsNotFound(err) && ctx.Err() == nil {
		k.opts.Logf("kubelet: binding pod %s/%s to node %s: %v", p.Namespace, p.Name, k.opts.Node, err)
	}
}

// podGone stops the pod's processes and removes its namespace, in the
// background.
func (k *Kubelet) podGone(key string) *podRunner {
	k.mu.Lock()
	r := k.pods[key]
	delete(k.pods, key)
	k.mu.Unlock()
	if r != nil {
		k.wg.Add(1)
		go func() {
			defer k.wg.Done()
			r.stop()
		}()
	}
	return r
}

// finishDeletion removes a pod the API server marked for graceful deletion
// once its processes (r's, if it ran here) are gone, as the kubelet does.
func (k *Kubelet) finishDeletion(p *corev1.Pod, r *podRunner) {
	key := p.Namespace + "/" + p.Name
	k.mu.Lock()
	if k.deleting[key] {
		k.mu.Unlock()
		return
	}
	k.deleting[key] = true
	k.mu.Unlock()
	k.wg.Add(1)
	go func() {
		defer k.wg.Done()
		defer func() {
			k.mu.Lock()
			delete(k.deleting, key)
			k.mu.Unlock()
		}()
		if r != nil {
			select {
			case <-r.done:
			case <-k.ctx.Done():
				return
			}
		}
		ctx, cancel := context.WithTimeout(k.ctx, 30*time.Second)
		defer cancel()
		zero := int64(0)
		err := k.cs.CoreV1().Pods(p.Namespace).Delete(ctx, p.Name, metav1.DeleteOptions{
			GracePeriodSeconds: &zero, Preconditions: &metav1.Preconditions{UID: &p.UID}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) && ctx.Err() == nil {
			k.opts.Logf("kubelet: deleting pod %s/%s: %v", p.Namespace, p.Name, err)
		}
	}()
}

func (k *Kubelet) servicesChanged(list []*corev1.Service) {
	k.mu.Lock()
	k.services = list
	runners := make([]*podRunner, 0, len(k.pods))
	for _, r := range k.pods {
		runners = append(runners, r)
	}
	k.mu.Unlock()
	for _, r := range runners {
		r.updateHosts()
	}
}

// hostsFor is a pod's hosts entries in namespace ns: every Service's
// cluster IP under NAME.NS, NAME.NS.svc and NAME.NS.svc.cluster.local,
// and under NAME for the pod's own namespace (cluster DNS's search path);
// then Options.Hosts.
func (k *Kubelet) hostsFor(ns string) []netns.HostEntry {
	k.mu.Lock()
	svcs := k.services
	k.mu.Unlock()
	var out []netns.HostEntry
	for _, s := range svcs {
		ip, err := netip.ParseAddr(s.Spec.ClusterIP)
		if err != nil {
			continue // headless or ExternalName
		}
		names := []string{s.Name + "." + s.Namespace, s.Name + "." + s.Namespace + ".svc", s.Name + "." + s.Namespace + ".svc.cluster.local"}
		if s.Namespace == ns {
			names = append([]string{s.Name}, names...)
		}
		out = append(out, netns.HostEntry{IP: ip, Names: names})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Names[0] < out[j].Names[0] })
	return append(out, k.opts.Hosts...)
}

// serviceEnv is the Docker-links-style environment the kubelet gives a
// container for each Service of its namespace (enableServiceLinks).
func (k *Kubelet) serviceEnv(ns string) []envVar {
	k.mu.Lock()
	svcs := k.services
	k.mu.Unlock()
	var out []envVar
	for _, s := range svcs {
		if s.Namespace != ns || s.Spec.ClusterIP == "" || s.Spec.ClusterIP == "None" || len(s.Spec.Ports) == 0 {
			continue
		}
		prefix := strings.ToUpper(strings.ReplaceAll(s.Name, "-", "_"))
		out = append(out, envVar{Name: prefix + "_SERVICE_HOST", Value: s.Spec.ClusterIP},
			envVar{Name: prefix + "_SERVICE_PORT", Value: fmt.Sprint(s.Spec.Ports[0].Port)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

func (k *Kubelet) allocIP() netip.Addr {
	k.mu.Lock()
	defer k.mu.Unlock()
	for {
		ip := k.nextIP
		k.nextIP = ip.Next()
		if b := ip.As4(); b[3] != 0 && b[3] != 255 {
			return ip
		}
	}
}

func (k *Kubelet) stop() {
	k.cancel()
	k.mu.Lock()
	runners := make([]*podRunner, 0, len(k.pods))
	for key, r := range k.pods {
		runners = append(runners, r)
		delete(k.pods, key)
	}
	k.mu.Unlock()
	var wg sync.WaitGroup
	for _, r := range runners {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r.stop()
		}()
	}
	wg.Wait()
	k.wg.Wait()
}
