package localmesh

import (
	"context"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sort"

	"golang.org/x/sys/unix"
	corev1 "k8s.io/api/core/v1"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/localmesh/netns"
)

// nsNetwork gives each pod a network namespace on the host bridge, with
// Istio's capture rules installed by the pod's init step.
type nsNetwork struct {
	host   *netns.Host
	unlock func()
}

// setupNetns takes the host-wide netns lock (one such mesh per host: they
// share the bridge and 198.18.0.0/15) and creates the bridge.
func setupNetns(ctx context.Context) (*nsNetwork, error) {
	f, err := os.OpenFile(filepath.Join(os.TempDir(), "skiff-netns.lock"), os.O_CREATE|os.O_RDWR, 0o600)
	if err != nil {
		return nil, err
	}
	if unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB) != nil {
		f.Close()
		return nil, fmt.Errorf("another local mesh on this host uses network namespaces (they share the bridge and 198.18.0.0/15)")
	}
	h, err := netns.Setup(ctx, netns.Options{})
	if err != nil {
		f.Close()
		return nil, err
	}
	return &nsNetwork{host: h, unlock: func() { f.Close() }}, nil
}

func (n *nsNetwork) AddPod(ctx context.Context, name string, ip netip.Addr, hosts []hostEntry) (podNetwork, error) {
	p, err := n.host.AddPod(ctx, name, ip, toNetnsHosts(hosts))
	if err != nil {
		return nil, err
	}
	return nsPod{p}, nil
}

func (n *nsNetwork) Close() error {
	defer n.unlock()
	return n.host.Close()
}

type nsPod struct{ *netns.Pod }

func (p nsPod) SetHosts(entries []hostEntry) error { return p.Pod.SetHosts(toNetnsHosts(entries)) }

func toNetnsHosts(in []hostEntry) []netns.HostEntry {
	out := make([]netns.HostEntry, len(in))
	for i, e := range in {
		out[i] = netns.HostEntry{IP: e.IP, Names: e.Names}
	}
	return out
}

// hostsSetter is a pod network whose resolver follows the mesh's services.
type hostsSetter interface {
	SetHosts([]hostEntry) error
}

// serviceHosts are the hosts entries of a pod in namespace ns: every
// Service's cluster IP under its qualified names, and under its short
// name for the pod's own namespace, as cluster DNS search paths resolve.
func serviceHosts(snap *config.Snapshot, ns string) []hostEntry {
	var out []hostEntry
	for _, o := range snap.List(config.Service) {
		svc, ok := o.Spec.(*corev1.Service)
		if !ok {
			continue
		}
		ip, err := netip.ParseAddr(svc.Spec.ClusterIP)
		if err != nil {
			continue
		}
		sns := namespaceOf(o)
		names := []string{o.Meta.Name + "." + sns, o.Meta.Name + "." + sns + ".svc", o.Meta.Name + "." + sns + ".svc.cluster.local"}
		if sns == ns {
			names = append([]string{o.Meta.Name}, names...)
		}
		out = append(out, hostEntry{IP: ip, Names: names})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Names[0] < out[j].Names[0] })
	return out
}

func sameHosts(a, b []hostEntry) bool {
	return slices.EqualFunc(a, b, func(x, y hostEntry) bool { return x.IP == y.IP && slices.Equal(x.Names, y.Names) })
}

// captureArgs are the arguments of `skiff-proxy iptables` for a sidecar
// pod, as Istio's injector gives istio-init: everything outbound to
// 15001, inbound to 15006, the proxy's UID exempt; the ports the host
// uses to watch the pod (admin, Prometheus, health) are not captured.
var captureArgs = []string{"iptables", "-p", "15001", "-z", "15006", "-u", "1337", "-m", "REDIRECT",
	"-i", "*", "-x", "", "-b", "*", "-d", "15000,15090,15021,15020"}

// initNetwork does istio-init's job inside the pod's network before its
// containers start: ports below 1024 open to the proxy's UID (as Istio
// sets for gateways), and for a sidecar the capture rules.
func initNetwork(ctx context.Context, pn podNetwork, proxyPath, logPath string, capture bool) error {
	if err := os.MkdirAll(filepath.Dir(logPath), 0o755); err != nil {
		return err
	}
	steps := [][]string{{"sysctl", "-w", "net.ipv4.ip_unprivileged_port_start=0"}}
	if capture {
		steps = append(steps, append([]string{proxyPath}, captureArgs...))
	}
	var log []byte
	defer func() { os.WriteFile(logPath, log, 0o644) }()
	for _, s := range steps {
		out, err := pn.Command(ctx, -1, s[0], s[1:]...).CombinedOutput()
		log = append(log, out...)
		if err != nil {
			return fmt.Errorf("pod network setup (%v): %v: %s", s, err, out)
		}
	}
	return nil
}

// proxyRunDir gives the sidecars, which run as UID 1337 in netns mode, a
// directory they can read: their bootstraps and a copy of skiff-proxy
// (the state directory or the binary's may be private to root, as /root
// is). cleanup removes it.
func (rt *podRuntime) proxyRunDir() (cleanup func(), err error) {
	dir, err := os.MkdirTemp("", "skiff-proxy-run-")
	if err != nil {
		return nil, err
	}
	cleanup = func() { os.RemoveAll(dir) }
	if err := os.Chmod(dir, 0o755); err != nil {
		cleanup()
		return nil, err
	}
	bin, err := os.ReadFile(rt.proxyPath)
	if err != nil {
		cleanup()
		return nil, fmt.Errorf("copying skiff-proxy for the sidecars: %w", err)
	}
	copyPath := filepath.Join(dir, "skiff-proxy")
	if err := os.WriteFile(copyPath, bin, 0o755); err != nil {
		cleanup()
		return nil, fmt.Errorf("copying skiff-proxy for the sidecars: %w", err)
	}
	rt.proxyPath, rt.bootDir = copyPath, filepath.Join(dir, "pods")
	return cleanup, nil
}
