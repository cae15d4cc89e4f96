// Package agentcmd is pilot-agent's job for skiff-proxy as an injected
// Kubernetes sidecar or gateway: `skiff-proxy proxy sidecar|router` builds
// the Envoy v3 bootstrap from the pod's environment (as istio-agent's
// template does), runs the proxy with its identity agent, and serves the
// status port (15020: app probes, /healthz/ready, /quitquitquit, merged
// metrics) and the health port (15021); `skiff-proxy wait` polls readiness
// for the postStart hook.
package agentcmd

import (
	"bufio"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/types/known/durationpb"
	"gopkg.in/yaml.v3"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
)

// Istio's defaults for what PROXY_CONFIG leaves out.
const (
	DefaultDiscoveryAddress = "istiod.istio-system.svc:15012"
	DefaultConfigPath       = "./etc/istio/proxy"
	DefaultStatusPort       = 15020
	DefaultHealthPort       = 15021
	DefaultAdminPort        = 15000
	DefaultPrometheusPort   = 15090
	// IstioVersion is the Istio release whose behaviour skiffd follows for
	// version-gated features (the local mesh announces the same).
	IstioVersion = "1.24.0"
)

// Where a pod's mounts put pilot-agent's inputs. Istio names them relative
// to the container's working directory (/); they are looked up under
// Environ.Root first, then at the absolute path.
const (
	podLabelsFile      = "./etc/istio/pod/labels"
	podAnnotationsFile = "./etc/istio/pod/annotations"
	rootCertFile       = "./var/run/secrets/istio/root-cert.pem"
	tokenFile          = "./var/run/secrets/tokens/istio-token"
)

// Environ is what pilot-agent reads besides its flags: the process
// environment and the files the injector mounts.
type Environ struct {
	// Vars is the environment as os.Environ gives it (NAME=value).
	Vars []string
	// Root is the directory Istio's relative paths (./etc/istio/pod/labels,
	// ./var/run/secrets/...) resolve against; "" is the working directory.
	Root string
}

// OSEnviron is the running process's Environ.
func OSEnviron() Environ { return Environ{Vars: os.Environ()} }

func (e Environ) get(name string) string {
	for i := len(e.Vars) - 1; i >= 0; i-- {
		if k, v, ok := strings.Cut(e.Vars[i], "="); ok && k == name {
			return v
		}
	}
	return ""
}

// find returns the first of rel (under Root) and its absolute form that
// exists, or "".
func (e Environ) find(rel string) string {
	for _, p := range []string{filepath.Join(e.Root, rel), filepath.Clean("/" + rel)} {
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	return ""
}

// Pod is the workload the proxy stands beside, as pilot-agent derives it
// from the injected environment and the downward-API files.
type Pod struct {
	Type           string // "sidecar" or "router"
	Name           string // POD_NAME
	Namespace      string // POD_NAMESPACE
	IP             string // INSTANCE_IP
	ServiceAccount string // SERVICE_ACCOUNT
	Domain         string // --domain, default NAMESPACE.svc.cluster.local
	Labels         map[string]string
	Annotations    map[string]string
	// ProxyConfig is PROXY_CONFIG over Istio's defaults.
	ProxyConfig *meshv1alpha1.ProxyConfig
	// Meta is the node metadata (ISTIO_META_*, ISTIO_METAJSON_* and the
	// fields pilot-agent adds).
	Meta map[string]any
	// env is the environment with PROXY_CONFIG's proxyMetadata applied.
	env Environ
}

// Getenv reads the environment as the agent sees it (PROXY_CONFIG's
// proxyMetadata included).
func (p *Pod) Getenv(name string) string { return p.env.get(name) }

// LoadPod reads the pod from env; nodeType is "sidecar" or "router" and
// domain the --domain flag.
func LoadPod(env Environ, nodeType, domain string) (*Pod, error) {
	switch nodeType {
	case "sidecar", "router":
	default:
		return nil, fmt.Errorf("proxy type %q: want sidecar or router (skiff-proxy proxy sidecar|router)", nodeType)
	}
	pc, err := parseProxyConfig(env.get("PROXY_CONFIG"))
	if err != nil {
		return nil, err
	}
	// pilot-agent applies proxyMetadata as environment variables.
	if md := pc.GetProxyMetadata(); len(md) > 0 {
		vars := append([]string(nil), env.Vars...)
		keys := make([]string, 0, len(md))
		for k := range md {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, k := range keys {
			vars = append(vars, k+"="+md[k])
		}
		env.Vars = vars
	}
	p := &Pod{Type: nodeType, Name: env.get("POD_NAME"), Namespace: env.get("POD_NAMESPACE"),
		IP: env.get("INSTANCE_IP"), ServiceAccount: env.get("SERVICE_ACCOUNT"), ProxyConfig: pc, env: env}
	var missing []string
	for _, v := range []struct{ name, val string }{{"POD_NAME", p.Name}, {"POD_NAMESPACE", p.Namespace}, {"INSTANCE_IP", p.IP}} {
		if v.val == "" {
			missing = append(missing, v.name)
		}
	}
	if len(missing) > 0 {
		return nil, fmt.Errorf("environment: %s not set: the injector sets them from the downward API (metadata.name, metadata.namespace, status.podIP); set them when running skiff-proxy proxy by hand", strings.Join(missing, ", "))
	}
	if net.ParseIP(p.IP) == nil {
		return nil, fmt.Errorf("environment: INSTANCE_IP %q is not an IP address (the injector sets it from status.podIP)", p.IP)
	}
	p.Domain = domain
	if p.Domain == "" {
		p.Domain = p.Namespace + ".svc.cluster.local"
	}
	if p.Labels, err = readPodInfo(env, podLabelsFile); err != nil {
		return nil, err
	}
	if p.Annotations, err = readPodInfo(env, podAnnotationsFile); err != nil {
		return nil, err
	}
	if p.Meta, err = nodeMetadata(p); err != nil {
		return nil, err
	}
	return p, nil
}

// parseProxyConfig reads PROXY_CONFIG (JSON, or YAML as Istio also takes)
// over Istio's defaults.
func parseProxyConfig(s string) (*meshv1alpha1.ProxyConfig, error) {
	pc := &meshv1alpha1.ProxyConfig{}
	if strings.TrimSpace(s) != "" {
		data := []byte(s)
		if t := strings.TrimSpace(s); !strings.HasPrefix(t, "{") {
			var v any
			if err := yaml.Unmarshal(data, &v); err != nil {
				return nil, fmt.Errorf("environment PROXY_CONFIG: not JSON or YAML: %v", err)
			}
			var err error
			if data, err = json.Marshal(v); err != nil {
				return nil, fmt.Errorf("environment PROXY_CONFIG: %v; want a JSON object of Istio's ProxyConfig", err)
			}
		}
		if err := protojson.Unmarshal(data, pc); err != nil {
			return nil, fmt.Errorf("environment PROXY_CONFIG: %v; want Istio's ProxyConfig as JSON, e.g. {\"discoveryAddress\":\"istiod.istio-system.svc:15012\"}", err)
		}
	}
	if pc.DiscoveryAddress == "" {
		pc.DiscoveryAddress = DefaultDiscoveryAddress
	}
	if _, _, err := net.SplitHostPort(pc.DiscoveryAddress); err != nil {
		return nil, fmt.Errorf("environment PROXY_CONFIG: discoveryAddress %q: want HOST:PORT such as %s", pc.DiscoveryAddress, DefaultDiscoveryAddress)
	}
	if pc.ConfigPath == "" {
		pc.ConfigPath = DefaultConfigPath
	}
	if pc.DrainDuration == nil {
		pc.DrainDuration = durationpb.New(45 * time.Second)
	}
	if pc.TerminationDrainDuration == nil {
		pc.TerminationDrainDuration = durationpb.New(5 * time.Second)
	}
	for _, d := range []struct {
		name string
		v    *durationpb.Duration
	}{{"drainDuration", pc.DrainDuration}, {"terminationDrainDuration", pc.TerminationDrainDuration}} {
		if err := d.v.CheckValid(); err != nil || d.v.AsDuration() < 0 {
			return nil, fmt.Errorf("environment PROXY_CONFIG: %s %v: want a non-negative duration such as \"5s\"", d.name, d.v)
		}
	}
	if pc.StatusPort == 0 {
		pc.StatusPort = DefaultStatusPort
	}
	if pc.ProxyAdminPort == 0 {
		pc.ProxyAdminPort = DefaultAdminPort
	}
	if pc.ControlPlaneAuthPolicy == meshv1alpha1.AuthenticationPolicy_NONE {
		pc.ControlPlaneAuthPolicy = meshv1alpha1.AuthenticationPolicy_MUTUAL_TLS
	}
	if pc.StatNameLength == 0 {
		pc.StatNameLength = 189
	}
	if pc.Concurrency != nil && pc.Concurrency.Value < 0 {
		return nil, fmt.Errorf("environment PROXY_CONFIG: concurrency %d: want 0 (all cores) or more", pc.Concurrency.Value)
	}
	return pc, nil
}

// readPodInfo reads a downward-API file of key="value" lines (the pod's
// labels or annotations). A file that is not there is no error: pods
// injected without the istio-podinfo volume have none.
func readPodInfo(env Environ, rel string) (map[string]string, error) {
	path := env.find(rel)
	if path == "" {
		return nil, nil
	}
	b, err := os.ReadFile(path)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return nil, fmt.Errorf("pod info %s: %w", path, err)
	}
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" {
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("pod info %s line %d: want key=\"value\" (the downward API's format), got %q", path, n, line)
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("pod info %s: %w", path, err)
	}
	return out, nil
}

// nodeMetadata is the node metadata istio-agent sends: ISTIO_META_* passed
// through, ISTIO_METAJSON_* merged, then the fields it derives.
func nodeMetadata(p *Pod) (map[string]any, error) {
	md := map[string]any{}
	var jsonVars []string
	for _, kv := range p.env.Vars {
		k, v, ok := strings.Cut(kv, "=")
		if !ok {
			continue
		}
		if key, ok := strings.CutPrefix(k, "ISTIO_META_"); ok && key != "" {
			md[key] = v
		} else if strings.HasPrefix(k, "ISTIO_METAJSON_") {
			jsonVars = append(jsonVars, kv)
		}
	}
	for _, kv := range jsonVars {
		k, v, _ := strings.Cut(kv, "=")
		var m map[string]any
		if err := json.Unmarshal([]byte(v), &m); err != nil {
			return nil, fmt.Errorf("environment %s: not a JSON object: %v", k, err)
		}
		if k == "ISTIO_METAJSON_LABELS" {
			m = map[string]any{"LABELS": m}
		}
		for mk, mv := range m {
			md[mk] = mv
		}
	}
	labels := map[string]any{} // skiffd wants a map, never null
	if l, ok := md["LABELS"].(map[string]any); ok {
		labels = l
	}
	for k, v := range p.Labels {
		labels[k] = v
	}
	md["LABELS"] = labels
	if len(p.Annotations) > 0 {
		ann := map[string]any{}
		for k, v := range p.Annotations {
			ann[k] = v
		}
		md["ANNOTATIONS"] = ann
	}
	md["NAME"] = p.Name
	md["NAMESPACE"] = p.Namespace
	md["INSTANCE_IPS"] = p.IP
	if p.ServiceAccount != "" {
		md["SERVICE_ACCOUNT"] = p.ServiceAccount
	}
	if _, ok := md["ISTIO_VERSION"]; !ok {
		md["ISTIO_VERSION"] = IstioVersion
	}
	if _, ok := md["CLUSTER_ID"]; !ok {
		md["CLUSTER_ID"] = "Kubernetes"
	}
	host, _, _ := net.SplitHostPort(p.ProxyConfig.DiscoveryAddress)
	md["PILOT_SAN"] = []any{serverName(host)}
	pcJSON, err := protojson.Marshal(p.ProxyConfig)
	if err != nil {
		return nil, fmt.Errorf("PROXY_CONFIG: %v", err)
	}
	var pcMap map[string]any
	if err := json.Unmarshal(pcJSON, &pcMap); err != nil {
		return nil, fmt.Errorf("PROXY_CONFIG: %v", err)
	}
	md["PROXY_CONFIG"] = pcMap
	return md, nil
}

// serverName is the TLS name of the discovery server or CA at host: the
// host itself, or istiod's service name when it is an IP (pilot-agent's
// rule).
func serverName(host string) string {
	if host == "" || net.ParseIP(host) != nil {
		return "istiod.istio-system.svc"
	}
	return host
}

// ServiceCluster is node.cluster as istio-agent sets it for Kubernetes
// pods: the canonical service name (or app label, or workload name) dot
// namespace.
func (p *Pod) ServiceCluster() string {
	for _, k := range []string{"service.istio.io/canonical-name", "app.kubernetes.io/name", "app"} {
		if v := p.Labels[k]; v != "" {
			return v + "." + p.Namespace
		}
	}
	if w, _ := p.Meta["WORKLOAD_NAME"].(string); w != "" {
		return w + "." + p.Namespace
	}
	return "istio-proxy"
}

// NodeID is Istio's node id: TYPE~IP~POD.NAMESPACE~DOMAIN.
func (p *Pod) NodeID() string {
	return p.Type + "~" + p.IP + "~" + p.Name + "." + p.Namespace + "~" + p.Domain
}

// concurrency is PROXY_CONFIG's concurrency, 0 when unset.
func concurrencyOf(pc *meshv1alpha1.ProxyConfig) int {
	if c := pc.GetConcurrency(); c != nil {
		return int(c.GetValue())
	}
	return 0
}
