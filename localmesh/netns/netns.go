// Package netns gives each local-mesh pod its own Linux network namespace,
// as a Kubernetes pod has: a bridge on the host (skiff0, 198.18.0.1/15),
// and per pod a named namespace that `ip netns exec` knows, a veth pair
// whose pod end is eth0 with the pod's address and a default route via the
// bridge, lo up, and /etc/netns/NAME/{hosts,resolv.conf} so names of mesh
// services resolve inside the pod. It needs root and iproute2's `ip`;
// commands run as another user go through util-linux's `setpriv`.
//
// Everything it creates is named with a prefix ("skiff-" by default) so a
// later Setup or Cleanup can remove what a crashed run left behind.
package netns

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"
)

// Directories iproute2 uses for named namespaces and their /etc overlays.
const (
	runDir = "/var/run/netns"
	etcDir = "/etc/netns"
)

// maxIfName is IFNAMSIZ-1, the longest interface name Linux accepts.
const maxIfName = 15

// Options name what Setup creates. The zero value means the defaults.
type Options struct {
	// Bridge is the host bridge's name (default "skiff0").
	Bridge string
	// Prefix starts every namespace, veth and /etc/netns entry (default
	// "skiff-"); at most 10 characters, so veth names fit in 15.
	Prefix string
	// Gateway is the bridge's address and the pods' network (default
	// 198.18.0.1/15). Pod addresses must lie inside it.
	Gateway netip.Prefix
}

func (o Options) withDefaults() (Options, error) {
	if o.Bridge == "" {
		o.Bridge = "skiff0"
	}
	if o.Prefix == "" {
		o.Prefix = "skiff-"
	}
	if !o.Gateway.IsValid() {
		o.Gateway = netip.MustParsePrefix("198.18.0.1/15")
	}
	if len(o.Bridge) > maxIfName {
		return o, fmt.Errorf("netns: bridge name %q is longer than %d characters", o.Bridge, maxIfName)
	}
	if len(o.Prefix) > 10 || strings.ContainsAny(o.Prefix, "/ ") {
		return o, fmt.Errorf("netns: prefix %q: want at most 10 characters, no '/' or spaces", o.Prefix)
	}
	if !o.Gateway.Addr().Is4() || o.Gateway.Bits() >= 31 {
		return o, fmt.Errorf("netns: gateway %s: want an IPv4 address with its network, e.g. 198.18.0.1/15", o.Gateway)
	}
	return o, nil
}

// HostEntry is one line of a pod's /etc/hosts: an address and its names,
// e.g. 198.19.0.10 reviews reviews.default reviews.default.svc.cluster.local.
type HostEntry struct {
	IP    netip.Addr
	Names []string
}

// Host owns the bridge and the pods added to it.
type Host struct {
	opts Options
	mu   sync.Mutex
	pods map[string]*Pod
}

// Setup checks the prerequisites, removes leftovers of an earlier run with
// the same names (only one local mesh may use a prefix at a time), and
// creates the bridge with the gateway address, which also gives the host
// its route to the pods.
func Setup(ctx context.Context, opts Options) (*Host, error) {
	opts, err := opts.withDefaults()
	if err != nil {
		return nil, err
	}
	if runtime.GOOS != "linux" {
		return nil, errors.New("netns: pod network namespaces need Linux; run without root for the loopback fallback")
	}
	if os.Geteuid() != 0 {
		return nil, errors.New("netns: creating network namespaces needs root; run as root, or without root for the loopback fallback")
	}
	// iptables is run by skiff-proxy inside each pod; without it no pod
	// could be captured, so it is checked here, before anything is made.
	for _, tool := range []struct{ name, pkg string }{{"ip", "iproute2"}, {"setpriv", "util-linux"}, {"iptables", "iptables"}} {
		if _, err := exec.LookPath(tool.name); err != nil {
			return nil, fmt.Errorf("netns: %s not found on PATH: install it (Debian: apt-get install %s)", tool.name, tool.pkg)
		}
	}
	if err := Cleanup(ctx, opts); err != nil {
		return nil, fmt.Errorf("netns: removing leftovers of an earlier run: %w", err)
	}
	h := &Host{opts: opts, pods: map[string]*Pod{}}
	steps := [][]string{
		{"link", "add", opts.Bridge, "type", "bridge"},
		{"addr", "add", opts.Gateway.String(), "dev", opts.Bridge},
		{"link", "set", opts.Bridge, "up"},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			_ = ip(context.Background(), "link", "del", opts.Bridge)
			return nil, err
		}
	}
	return h, nil
}

// Gateway is the bridge's address: the pods' default route and the host
// as the pods see it.
func (h *Host) Gateway() netip.Addr { return h.opts.Gateway.Addr() }

// Bridge is the host bridge's interface name.
func (h *Host) Bridge() string { return h.opts.Bridge }

// Pod is one pod's network namespace.
type Pod struct {
	host  *Host
	name  string
	netns string
	veth  string
	ip    netip.Addr

	hostsMu sync.Mutex
}

// AddPod creates the namespace Prefix+name with eth0 at ip on the bridge,
// lo up, a default route via the gateway, and /etc/hosts entries for the
// pod itself and hosts.
func (h *Host) AddPod(ctx context.Context, name string, ip netip.Addr, hosts []HostEntry) (*Pod, error) {
	if err := checkName(name); err != nil {
		return nil, err
	}
	gw := h.opts.Gateway
	if !ip.Is4() || !gw.Contains(ip) || ip == gw.Addr() || ip == gw.Masked().Addr() {
		return nil, fmt.Errorf("netns: pod %s: address %s is not a host address in %s other than the gateway %s", name, ip, gw.Masked(), gw.Addr())
	}
	p := &Pod{host: h, name: name, netns: h.opts.Prefix + name, veth: vethName(h.opts.Prefix, name), ip: ip}
	h.mu.Lock()
	for _, o := range h.pods {
		if o.name == name || o.ip == ip || o.veth == p.veth {
			h.mu.Unlock()
			return nil, fmt.Errorf("netns: pod %s (%s) clashes with pod %s (%s): pod names and addresses must be unique", name, ip, o.name, o.ip)
		}
	}
	h.pods[name] = p
	h.mu.Unlock()

	if err := p.create(ctx, hosts); err != nil {
		if rerr := p.Remove(); rerr != nil {
			err = fmt.Errorf("%w (and removing the partial namespace failed: %v)", err, rerr)
		}
		return nil, err
	}
	return p, nil
}

func (p *Pod) create(ctx context.Context, hosts []HostEntry) error {
	if err := ip(ctx, "netns", "add", p.netns); err != nil {
		return err
	}
	dir := filepath.Join(etcDir, p.netns)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("netns: pod %s: %w", p.name, err)
	}
	if err := os.WriteFile(filepath.Join(dir, "hosts"), p.hostsFile(hosts), 0o644); err != nil {
		return fmt.Errorf("netns: pod %s: %w", p.name, err)
	}
	// Names outside /etc/hosts go to the gateway, where nothing answers
	// unless the pod's DNS capture sends them to the proxy: a miss fails
	// at once instead of waiting on the host's resolver, which the pod
	// cannot reach.
	resolv := fmt.Sprintf("# written by skiff for pod %s\nnameserver %s\noptions timeout:1 attempts:1\n", p.name, p.host.Gateway())
	if err := os.WriteFile(filepath.Join(dir, "resolv.conf"), []byte(resolv), 0o644); err != nil {
		return fmt.Errorf("netns: pod %s: %w", p.name, err)
	}
	bits := p.host.opts.Gateway.Bits()
	steps := [][]string{
		{"link", "add", p.veth, "type", "veth", "peer", "name", "eth0", "netns", p.netns},
		{"link", "set", p.veth, "master", p.host.opts.Bridge, "up"},
		{"-n", p.netns, "addr", "add", fmt.Sprintf("%s/%d", p.ip, bits), "dev", "eth0"},
		{"-n", p.netns, "link", "set", "lo", "up"},
		{"-n", p.netns, "link", "set", "eth0", "up"},
		{"-n", p.netns, "route", "add", "default", "via", p.host.Gateway().String()},
	}
	for _, s := range steps {
		if err := ip(ctx, s...); err != nil {
			return fmt.Errorf("netns: pod %s: %w", p.name, err)
		}
	}
	return nil
}

// Name is the pod's name.
func (p *Pod) Name() string { return p.name }

// NetNS is the namespace's name, as `ip netns exec NAME` takes it.
func (p *Pod) NetNS() string { return p.netns }

// IP is the pod's address on eth0.
func (p *Pod) IP() netip.Addr { return p.ip }

// Command runs name inside the pod's namespace, seeing the pod's hosts and
// resolv.conf, as uid (and gid) uid, or as root when uid is negative. The
// sidecar runs as 1337 so the capture rules leave its own traffic alone.
// Both `ip netns exec` and setpriv exec in place, so the returned Cmd's
// process is the command itself and cancelling ctx kills it.
func (p *Pod) Command(ctx context.Context, uid int, name string, args ...string) *exec.Cmd {
	full := []string{"netns", "exec", p.netns}
	if uid >= 0 {
		id := fmt.Sprint(uid)
		full = append(full, "setpriv", "--reuid="+id, "--regid="+id, "--clear-groups", "--")
	}
	full = append(full, name)
	full = append(full, args...)
	return exec.CommandContext(ctx, "ip", full...)
}

// SetHosts replaces the pod's /etc/hosts entries (services can appear
// after the pod starts). The file is rewritten in place: `ip netns exec`
// bind-mounts it into running processes, and a new file would not be seen.
func (p *Pod) SetHosts(entries []HostEntry) error {
	p.hostsMu.Lock()
	defer p.hostsMu.Unlock()
	path := filepath.Join(etcDir, p.netns, "hosts")
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_TRUNC, 0)
	if err != nil {
		return fmt.Errorf("netns: pod %s: updating hosts: %w", p.name, err)
	}
	_, werr := f.Write(p.hostsFile(entries))
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("netns: pod %s: updating hosts: %w", p.name, werr)
	}
	return nil
}

func (p *Pod) hostsFile(entries []HostEntry) []byte {
	var b strings.Builder
	fmt.Fprintf(&b, "# written by skiff for pod %s\n127.0.0.1\tlocalhost\n::1\tlocalhost ip6-localhost ip6-loopback\n%s\t%s\n", p.name, p.ip, p.name)
	for _, e := range entries {
		if len(e.Names) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%s\t%s\n", e.IP, strings.Join(e.Names, " "))
	}
	return []byte(b.String())
}

// Remove deletes the pod's veth pair, namespace and /etc/netns directory.
// Processes still running in the namespace lose their network. Removing a
// removed pod is a no-op.
func (p *Pod) Remove() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	err := removeNamed(ctx, p.netns, p.veth)
	p.host.mu.Lock()
	if p.host.pods[p.name] == p {
		delete(p.host.pods, p.name)
	}
	p.host.mu.Unlock()
	if err != nil {
		return fmt.Errorf("netns: removing pod %s: %w", p.name, err)
	}
	return nil
}

// Close removes every pod, the bridge, and anything else carrying the
// prefix. It may be called more than once.
func (h *Host) Close() error {
	h.mu.Lock()
	pods := make([]*Pod, 0, len(h.pods))
	for _, p := range h.pods {
		pods = append(pods, p)
	}
	h.mu.Unlock()
	var errs []error
	for _, p := range pods {
		errs = append(errs, p.Remove())
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	errs = append(errs, Cleanup(ctx, h.opts))
	return errors.Join(errs...)
}

// Cleanup removes the bridge and every namespace, link and /etc/netns
// directory whose name starts with the prefix, e.g. after a crash.
func Cleanup(ctx context.Context, opts Options) error {
	opts, err := opts.withDefaults()
	if err != nil {
		return err
	}
	var errs []error
	links, err := linkNames(ctx)
	if err != nil {
		return err
	}
	for _, l := range links {
		if l == opts.Bridge || strings.HasPrefix(l, opts.Prefix) {
			errs = append(errs, ignoreMissing(ip(ctx, "link", "del", l)))
		}
	}
	for _, dir := range []string{runDir, etcDir} {
		ents, err := os.ReadDir(dir)
		if err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
			continue
		}
		for _, e := range ents {
			if !strings.HasPrefix(e.Name(), opts.Prefix) {
				continue
			}
			if dir == runDir {
				errs = append(errs, ignoreMissing(ip(ctx, "netns", "del", e.Name())))
			} else {
				errs = append(errs, os.RemoveAll(filepath.Join(dir, e.Name())))
			}
		}
	}
	return errors.Join(errs...)
}

func removeNamed(ctx context.Context, netns, veth string) error {
	var errs []error
	// Deleting one end of a veth pair deletes both.
	errs = append(errs, ignoreMissing(ip(ctx, "link", "del", veth)))
	if _, err := os.Stat(filepath.Join(runDir, netns)); err == nil {
		errs = append(errs, ignoreMissing(ip(ctx, "netns", "del", netns)))
	}
	errs = append(errs, os.RemoveAll(filepath.Join(etcDir, netns)))
	return errors.Join(errs...)
}

// linkNames lists the host's interfaces (`ip -o link show`), without the
// @peer suffix veths carry.
func linkNames(ctx context.Context) ([]string, error) {
	out, err := exec.CommandContext(ctx, "ip", "-o", "link", "show").Output()
	if err != nil {
		return nil, fmt.Errorf("netns: ip -o link show: %w", err)
	}
	var names []string
	for _, line := range strings.Split(string(out), "\n") {
		f := strings.Fields(line)
		if len(f) < 2 {
			continue
		}
		n := strings.TrimSuffix(f[1], ":")
		if i := strings.IndexByte(n, '@'); i >= 0 {
			n = n[:i]
		}
		names = append(names, n)
	}
	return names, nil
}

// checkName accepts Kubernetes object names (DNS labels and subdomains),
// which are also safe as file and namespace names.
func checkName(name string) error {
	if name == "" || len(name) > 200 || name == "." || name == ".." {
		return fmt.Errorf("netns: pod name %q: want a Kubernetes name (lowercase letters, digits, '-', '.')", name)
	}
	for _, r := range name {
		if !(r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '-' || r == '.') {
			return fmt.Errorf("netns: pod name %q: character %q not allowed; want lowercase letters, digits, '-', '.'", name, r)
		}
	}
	return nil
}

// vethName derives the host end's name from the pod name: the prefix, a
// 'v', and a hash, cut to the 15 characters Linux allows.
func vethName(prefix, pod string) string {
	// FNV-1a: stable across runs, so Cleanup and a restart agree.
	var h uint64 = 14695981039346656037
	for i := 0; i < len(pod); i++ {
		h ^= uint64(pod[i])
		h *= 1099511628211
	}
	n := prefix + "v" + fmt.Sprintf("%016x", h)
	return n[:maxIfName]
}

func ip(ctx context.Context, args ...string) error {
	out, err := exec.CommandContext(ctx, "ip", args...).CombinedOutput()
	if err != nil {
		return &ipError{args: args, err: err, out: strings.TrimSpace(string(out))}
	}
	return nil
}

type ipError struct {
	args []string
	err  error
	out  string
}

func (e *ipError) Error() string {
	return fmt.Sprintf("ip %s: %v: %s", strings.Join(e.args, " "), e.err, e.out)
}

// ignoreMissing drops the error of deleting something already gone.
func ignoreMissing(err error) error {
	var ie *ipError
	if errors.As(err, &ie) && (strings.Contains(ie.out, "Cannot find device") || strings.Contains(ie.out, "No such file")) {
		return nil
	}
	return err
}
