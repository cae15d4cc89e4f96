// Package why implements `skiff why SOURCE DESTINATION[:PORT][/PATH]`: it
// replays one request against the live configuration of the running local
// mesh and says, step by step, which listener, route, cluster, endpoints,
// mTLS mode and authorization decision apply, each step naming the config
// object that decided it, so that a 403 or a 503 explains itself.
//
// It decides with the proxy's own code, run over the proxies' config
// dumps: dataplane/listener's filter-chain match, dataplane/route's route
// table, dataplane/filters/rbac's engine. The dumps and skiffd's config
// index come through cli/inspect; the pods through the local mesh's
// control API (cli/mesh's state directory).
package why

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/textproto"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/skiff-mesh/skiff/cli/cliflags"
	"github.com/skiff-mesh/skiff/cli/inspect"
	"github.com/skiff-mesh/skiff/localmesh"
)

const usage = `usage: skiff why [-n NAMESPACE] SOURCE DESTINATION[:PORT][/PATH] [flags]

Replays one request from SOURCE's sidecar to DESTINATION against the live
configuration of the local mesh, and prints which listener, route, cluster,
endpoints, mTLS mode and authorization decision apply.

  SOURCE        a pod (POD, deploy/NAME, or the start of a pod name such as
                "productpage") whose sidecar sends the request
  DESTINATION   the host as the application calls it (reviews,
                reviews.default.svc.cluster.local, an IP), optionally with
                :PORT (default: the service's only port, else 80) and /PATH

flags:
  -n, --namespace NS     the source pod's namespace (default "default")
  -H 'NAME: VALUE'       a request header (repeatable)
  --method METHOD        the request method (default GET)
  -o, --output FORMAT    text (default) or json
  --state-dir DIR        the local mesh's state directory (default $SKIFF_HOME, else ~/.skiff)
`

// Options are skiff why's command line.
type Options struct {
	Namespace   string
	Source      string
	Destination string
	Method      string
	Headers     http.Header
	Output      string
	StateDir    string
}

// headerFlag collects repeated -H 'name: value'.
type headerFlag struct{ h http.Header }

func (f *headerFlag) String() string { return "" }

func (f *headerFlag) Set(v string) error {
	name, value, ok := strings.Cut(v, ":")
	name = strings.TrimSpace(name)
	if !ok || name == "" {
		return fmt.Errorf("header %q: want 'NAME: VALUE'", v)
	}
	f.h.Add(name, strings.TrimSpace(value))
	return nil
}

// usageError is a command line that cannot run.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func parseArgs(args []string) (Options, error) {
	o := Options{Headers: http.Header{}}
	fs := flag.NewFlagSet("skiff why", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, n := range []string{"n", "namespace"} {
		fs.StringVar(&o.Namespace, n, "default", "")
	}
	for _, n := range []string{"o", "output"} {
		fs.StringVar(&o.Output, n, "text", "")
	}
	fs.StringVar(&o.Method, "method", http.MethodGet, "")
	fs.StringVar(&o.StateDir, "state-dir", localmesh.DefaultStateDir(), "")
	fs.Var(&headerFlag{o.Headers}, "H", "")
	pos, err := cliflags.Parse(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return o, err
		}
		return o, &usageError{fmt.Sprintf("%v\n%s", err, usage)}
	}
	if len(pos) != 2 {
		return o, &usageError{fmt.Sprintf("want SOURCE and DESTINATION, got %d argument(s) %q\n%s", len(pos), pos, usage)}
	}
	o.Source, o.Destination = pos[0], pos[1]
	o.Method = strings.ToUpper(o.Method)
	if o.Output == "yaml" || (o.Output != "text" && o.Output != "json" && o.Output != "short") {
		return o, &usageError{fmt.Sprintf("-o %s: want text or json", o.Output)}
	}
	return o, nil
}

// Run is `skiff why`; args follow the verb. It returns 0 when the replay
// ran (whatever the request's fate), 1 when the mesh or a proxy cannot
// be read, 2 for a bad command line.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o, err := parseArgs(args)
	var ue *usageError
	switch {
	case errors.Is(err, flag.ErrHelp):
		fmt.Fprint(stdout, usage)
		return 0
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "skiff why:", strings.TrimRight(err.Error(), "\n"))
		return 2
	}
	m, err := openMesh(ctx, o.StateDir)
	if err != nil {
		fmt.Fprintln(stderr, "skiff why:", err)
		return 1
	}
	rep, err := replay(ctx, m, o)
	if err != nil {
		var ue *usageError
		fmt.Fprintln(stderr, "skiff why:", err)
		if errors.As(err, &ue) {
			return 2
		}
		return 1
	}
	if o.Output == "json" {
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if err := enc.Encode(rep); err != nil {
			fmt.Fprintln(stderr, "skiff why:", err)
			return 1
		}
		return 0
	}
	render(stdout, rep)
	return 0
}

// mesh is the running local mesh as skiff why reads it.
type mesh struct {
	env     inspect.Env
	capture string
	pods    []localmesh.PodStatus
	labels  map[string]map[string]string // "ns/name" → pod labels (mesh.json)
	objects map[string]configObject      // "Kind/ns/name" → its source
}

// configObject is one entry of skiffd's /debug/configz.
type configObject struct {
	Kind, Namespace, Name, Source string
}

func openMesh(ctx context.Context, stateDir string) (*mesh, error) {
	st, err := localmesh.ReadState(stateDir)
	if err != nil {
		return nil, err // it names the state directory and what to do
	}
	rep, err := (&localmesh.Client{Addr: st.APIAddr}).Status(ctx)
	if err != nil {
		return nil, fmt.Errorf("the local mesh's control API at %s: %w; is skiff up still running? (skiff status)", st.APIAddr, err)
	}
	m := &mesh{capture: rep.Capture, pods: rep.Pods, labels: map[string]map[string]string{}, objects: map[string]configObject{}}
	m.env = inspect.Env{MonitoringAddr: rep.MonitoringAddr, Resolver: resolver{m}, Client: &http.Client{Timeout: 10 * time.Second}}
	if m.env.MonitoringAddr == "" {
		m.env.MonitoringAddr = st.MonitoringAddr
	}
	for _, p := range st.Pods {
		m.labels[p.Namespace+"/"+p.Name] = p.Labels
	}
	// Where objects came from is a help, not a need: without skiffd's
	// index the steps still name the objects, without file and line.
	if b, err := inspect.ReadConfigz(ctx, m.env); err == nil {
		var cz struct{ Objects []configObject }
		if json.Unmarshal(b, &cz) == nil {
			for _, o := range cz.Objects {
				kind, _, _ := strings.Cut(o.Kind, ".")
				o.Kind = kind
				m.objects[kind+"/"+o.Namespace+"/"+o.Name] = o
			}
		}
	}
	return m, nil
}

// resolver finds pods' proxies among the mesh's pods.
type resolver struct{ m *mesh }

func (r resolver) AdminAddr(pod, namespace string) (string, error) {
	for _, p := range r.m.pods {
		if p.Name == pod && p.Namespace == namespace {
			if p.Admin == "" {
				return "", errors.New("it runs without a sidecar")
			}
			return p.Admin, nil
		}
	}
	return "", errors.New("no such pod in the local mesh")
}

func (r resolver) Pods() ([]inspect.PodRef, error) {
	var out []inspect.PodRef
	for _, p := range r.m.pods {
		if p.Admin != "" {
			out = append(out, inspect.PodRef{Name: p.Name, Namespace: p.Namespace})
		}
	}
	return out, nil
}

// findPod resolves SOURCE: a pod name, deploy/NAME (its first running
// pod), or the start of pod names ("productpage" for
// productpage-v1-…), the first running one in name order.
func (m *mesh) findPod(ns, name string) (localmesh.PodStatus, error) {
	deploy, isDeploy := strings.CutPrefix(name, "deploy/")
	if !isDeploy {
		deploy, isDeploy = strings.CutPrefix(name, "deployment/")
	}
	var names []string
	var prefixed []localmesh.PodStatus
	for _, p := range m.pods {
		if p.Namespace != ns {
			continue
		}
		names = append(names, p.Name)
		switch {
		case !isDeploy && p.Name == name:
			return p, nil
		case isDeploy && strings.HasPrefix(p.Name, deploy+"-") && strings.Count(p.Name[len(deploy)+1:], "-") == 1 && p.Status == "Running":
			return p, nil
		case !isDeploy && strings.HasPrefix(p.Name, name+"-") && p.Status == "Running":
			prefixed = append(prefixed, p)
		}
	}
	if len(prefixed) > 0 {
		slices.SortFunc(prefixed, func(a, b localmesh.PodStatus) int { return strings.Compare(a.Name, b.Name) })
		return prefixed[0], nil
	}
	if len(names) == 0 {
		return localmesh.PodStatus{}, &usageError{fmt.Sprintf("SOURCE %q: no pods in namespace %q; pass -n NAMESPACE (skiff status lists the pods)", name, ns)}
	}
	slices.Sort(names)
	return localmesh.PodStatus{}, &usageError{fmt.Sprintf("SOURCE %q: no running pod of that name in namespace %q; its pods: %s", name, ns, strings.Join(names, ", "))}
}

// podByIP is the pod that has ip, if any.
func (m *mesh) podByIP(ip string) (localmesh.PodStatus, bool) {
	for _, p := range m.pods {
		if p.IP == ip {
			return p, true
		}
	}
	return localmesh.PodStatus{}, false
}

// objectRef names a config object as the steps print it:
// Kind/namespace/name, with " (file:line)" when skiffd knows it.
func (m *mesh) objectRef(kind, ns, name string) ConfigRef {
	r := ConfigRef{Kind: kind, Namespace: ns, Name: name}
	if o, ok := m.objects[kind+"/"+ns+"/"+name]; ok {
		r.Source = o.Source
	}
	return r
}

// destination is DESTINATION taken apart.
type destination struct {
	host string // as given, lower case
	port int    // 0: not given
	path string // "/" when not given
}

func parseDestination(s string) (destination, error) {
	d := destination{path: "/"}
	hostport := s
	if i := strings.IndexByte(s, '/'); i >= 0 {
		hostport, d.path = s[:i], s[i:]
	}
	d.host = strings.ToLower(hostport)
	if h, p, err := net.SplitHostPort(hostport); err == nil {
		n, err := strconv.Atoi(p)
		if err != nil || n <= 0 || n > 65535 {
			return d, &usageError{fmt.Sprintf("DESTINATION %q: port %q is not a number from 1 to 65535", s, p)}
		}
		d.host, d.port = strings.ToLower(h), n
	}
	if d.host == "" {
		return d, &usageError{fmt.Sprintf("DESTINATION %q: no host; give it as the application calls it, e.g. reviews:9080/reviews/0", s)}
	}
	return d, nil
}

// canonicalHeaders turns -H names into Go's canonical keys, as a server
// would receive them.
func canonicalHeaders(h http.Header) http.Header {
	out := http.Header{}
	for k, vs := range h {
		out[textproto.CanonicalMIMEHeaderKey(k)] = vs
	}
	return out
}
