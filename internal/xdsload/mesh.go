// Package xdsload loads a control plane the way a large mesh does: it writes
// a generated mesh as Kubernetes-style YAML into the directory skiffd
// watches, opens many simulated sidecars on real ADS streams (each ACKing
// like Envoy), changes one VirtualService or one Pod at a time, and measures
// how long the change takes to be ACKed by every proxy, with skiffd's
// memory and CPU meanwhile. The command internal/cmd/xds-load drives it.
package xdsload

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
)

// Spec sizes a generated mesh.
type Spec struct {
	Services   int // services in the mesh
	Endpoints  int // pods per service
	Namespaces int // services are spread round-robin over these
	// SplitEvery gives every SplitEvery-th service (0, N, 2N…) a weighted
	// v1/v2 VirtualService and a DestinationRule with the two subsets; the
	// others route to the whole service. 1 splits all of them.
	SplitEvery int
	Port       int // the service port (named "http"), also the container port
	// Private exports every VirtualService and DestinationRule to its own
	// namespace alone (exportTo: ["."]), so a routing change concerns only
	// that namespace's proxies.
	Private bool
}

// Mesh is a generated mesh on disk; its methods rewrite single files to
// make the changes the load tool times.
type Mesh struct {
	Dir      string
	Spec     Spec
	Services []*Service
	Pods     []*Pod // every pod, in service order

	nextIP int // index of the next unused pod address
}

// Service is one generated service.
type Service struct {
	Name, Namespace string
	Port            int
	Split           bool // has a v1/v2 DestinationRule and weighted routes
	WeightV1        int  // current weight of subset v1 when Split
	Pods            []*Pod
}

// Host is the service's cluster-local host name.
func (s *Service) Host() string { return s.Name + "." + s.Namespace + ".svc.cluster.local" }

// Pod is one generated workload instance.
type Pod struct {
	Name, Namespace string
	App, Version    string
	ServiceAccount  string
	IP              string
	Service         *Service
}

// podBase is the first pod address: pods live in 198.18.0.0/16 (the
// benchmarking range), written into config and never dialled.
var podBase = netip.MustParseAddr("198.18.0.1")

// podIP is the n-th pod address; it fails past the /16.
func podIP(n int) (string, error) {
	if n < 0 || n >= 65534 {
		return "", fmt.Errorf("pod address %d is outside 198.18.0.0/16: use fewer services × endpoints (at most 65534 pods, counting moved ones)", n)
	}
	b := podBase.As4()
	v := uint32(b[2])<<8 | uint32(b[3]) + uint32(n)
	return netip.AddrFrom4([4]byte{198, 18, byte(v >> 8), byte(v)}).String(), nil
}

// Generate writes the mesh described by spec into dir (created if needed):
// namespaces.yaml, then per service NS/NAME.yaml (Service),
// NS/NAME-pods.yaml (its Pods) and NS/NAME-routing.yaml (VirtualService and,
// when split, DestinationRule), so every change rewrites one small file.
func Generate(dir string, spec Spec) (*Mesh, error) {
	if spec.Services < 1 || spec.Endpoints < 1 || spec.Namespaces < 1 {
		return nil, fmt.Errorf("mesh spec %+v: services, endpoints and namespaces must each be at least 1", spec)
	}
	if spec.SplitEvery < 1 {
		spec.SplitEvery = 1
	}
	if spec.Port == 0 {
		spec.Port = 8080
	}
	// Leftovers from another run would be served too and skew every count.
	if entries, err := os.ReadDir(dir); err == nil && len(entries) > 0 {
		return nil, fmt.Errorf("config directory %s is not empty: give a new or empty directory, the load tool writes the whole mesh", dir)
	}
	m := &Mesh{Dir: dir, Spec: spec}
	var ns strings.Builder
	for i := 0; i < spec.Namespaces; i++ {
		name := nsName(i)
		if err := os.MkdirAll(filepath.Join(dir, name), 0o755); err != nil {
			return nil, err
		}
		fmt.Fprintf(&ns, "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: %s\n  labels:\n    istio-injection: enabled\n", name)
	}
	if err := writeFile(filepath.Join(dir, "namespaces.yaml"), ns.String()); err != nil {
		return nil, err
	}
	for i := 0; i < spec.Services; i++ {
		s := &Service{Name: fmt.Sprintf("svc-%d", i), Namespace: nsName(i % spec.Namespaces), Port: spec.Port,
			Split: i%spec.SplitEvery == 0, WeightV1: 50}
		for e := 0; e < spec.Endpoints; e++ {
			ip, err := m.NextIP()
			if err != nil {
				return nil, err
			}
			v := "v1"
			if e%2 == 1 {
				v = "v2"
			}
			p := &Pod{Name: fmt.Sprintf("%s-%s-%d", s.Name, v, e), Namespace: s.Namespace, App: s.Name, Version: v,
				ServiceAccount: s.Name, IP: ip, Service: s}
			s.Pods = append(s.Pods, p)
			m.Pods = append(m.Pods, p)
		}
		m.Services = append(m.Services, s)
		if err := writeFile(m.path(s, ""), serviceYAML(s)); err != nil {
			return nil, err
		}
		if err := m.writePods(s); err != nil {
			return nil, err
		}
		if err := m.writeRouting(s); err != nil {
			return nil, err
		}
	}
	return m, nil
}

func nsName(i int) string { return fmt.Sprintf("load-%d", i) }

func (m *Mesh) path(s *Service, suffix string) string {
	return filepath.Join(m.Dir, s.Namespace, s.Name+suffix+".yaml")
}

// SplitServices are the services with a weighted v1/v2 split, the ones a
// VirtualService change can reweight.
func (m *Mesh) SplitServices() []*Service {
	var out []*Service
	for _, s := range m.Services {
		if s.Split {
			out = append(out, s)
		}
	}
	return out
}

// SetWeight rewrites s's routing file so subset v1 gets w percent and v2
// the rest.
func (m *Mesh) SetWeight(s *Service, w int) error {
	if !s.Split || w < 0 || w > 100 {
		return fmt.Errorf("service %s: cannot set v1 weight %d (split %v; want 0..100 on a split service)", s.Host(), w, s.Split)
	}
	s.WeightV1 = w
	return m.writeRouting(s)
}

// NextIP reserves an unused pod address, for MovePod.
func (m *Mesh) NextIP() (string, error) {
	ip, err := podIP(m.nextIP)
	if err != nil {
		return "", err
	}
	m.nextIP++
	return ip, nil
}

// MovePod gives p the address ip (from NextIP) and rewrites its service's
// pods file.
func (m *Mesh) MovePod(p *Pod, ip string) error {
	p.IP = ip
	return m.writePods(p.Service)
}

func (m *Mesh) writePods(s *Service) error {
	var b strings.Builder
	for _, p := range s.Pods {
		b.WriteString(podYAML(p))
	}
	return writeFile(m.path(s, "-pods"), b.String())
}

func (m *Mesh) writeRouting(s *Service) error {
	y := routingYAML(s)
	if m.Spec.Private {
		y = strings.ReplaceAll(y, "\nspec:\n", "\nspec:\n  exportTo: [\".\"]\n")
	}
	return writeFile(m.path(s, "-routing"), y)
}

// writeFile replaces path atomically (a hidden temporary file renamed over
// it) so the watcher never reads half a file; the file source ignores
// dot-files.
func writeFile(path, content string) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(content), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func serviceYAML(s *Service) string {
	return fmt.Sprintf(`apiVersion: v1
kind: Service
metadata:
  name: %[1]s
  namespace: %[2]s
  labels:
    app: %[1]s
spec:
  selector:
    app: %[1]s
  ports:
  - name: http
    port: %[3]d
    targetPort: %[3]d
---
apiVersion: v1
kind: ServiceAccount
metadata:
  name: %[1]s
  namespace: %[2]s
`, s.Name, s.Namespace, s.Port)
}

func podYAML(p *Pod) string {
	return fmt.Sprintf(`---
apiVersion: v1
kind: Pod
metadata:
  name: %[1]s
  namespace: %[2]s
  labels:
    app: %[3]s
    version: %[4]s
spec:
  serviceAccountName: %[5]s
  containers:
  - name: app
    image: skiff/load:latest
    command: ["sleep", "infinity"]
    ports:
    - containerPort: %[6]d
status:
  phase: Running
  podIP: %[7]s
  podIPs:
  - ip: %[7]s
  conditions:
  - type: Ready
    status: "True"
`, p.Name, p.Namespace, p.App, p.Version, p.ServiceAccount, p.Service.Port, p.IP)
}

func routingYAML(s *Service) string {
	if !s.Split {
		return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  hosts:
  - %[3]s
  http:
  - route:
    - destination:
        host: %[3]s
        port:
          number: %[4]d
    timeout: 10s
`, s.Name, s.Namespace, s.Host(), s.Port)
	}
	return fmt.Sprintf(`apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  hosts:
  - %[3]s
  http:
  - route:
    - destination:
        host: %[3]s
        subset: v1
        port:
          number: %[4]d
      weight: %[5]d
    - destination:
        host: %[3]s
        subset: v2
        port:
          number: %[4]d
      weight: %[6]d
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: %[1]s
  namespace: %[2]s
spec:
  host: %[3]s
  subsets:
  - name: v1
    labels:
      version: v1
  - name: v2
    labels:
      version: v2
`, s.Name, s.Namespace, s.Host(), s.Port, s.WeightV1, 100-s.WeightV1)
}
