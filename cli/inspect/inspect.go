// Package inspect implements `skiff proxy-status` and `skiff proxy-config`,
// istioctl's two views of the mesh's configuration: what skiffd has sent each
// proxy and whether it was acknowledged (from skiffd's /debug/syncz), and
// what one proxy holds (from its admin API's /config_dump and /clusters),
// printed as istioctl's tables or as JSON or YAML.
//
// It owns no state: skiffd's monitoring address and a Resolver that finds a
// pod's proxy admin address come in through Env.
package inspect

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"

	"github.com/skiff-mesh/skiff/cli/cliflags"
)

// PodRef names a pod that runs a proxy.
type PodRef struct {
	Name, Namespace string
}

func (p PodRef) String() string { return p.Name + "." + p.Namespace }

// Resolver finds the proxies of a running mesh.
type Resolver interface {
	// AdminAddr is the host:port of the pod's proxy admin API (Envoy's
	// :15000), or an error saying the pod is unknown.
	AdminAddr(pod, namespace string) (string, error)
	// Pods lists the pods that have a proxy, to suggest names when one is
	// not found.
	Pods() ([]PodRef, error)
}

// Env is what the commands read besides their arguments.
type Env struct {
	// MonitoringAddr is skiffd's monitoring address; empty means
	// DefaultMonitoringAddr.
	MonitoringAddr string
	// Resolver finds pods' proxies; proxy-config and proxy-status POD
	// need it.
	Resolver Resolver
	// Client makes the HTTP requests; nil means one with a 10 s timeout.
	Client *http.Client
	// Now is the clock certificates are checked against; nil means time.Now.
	Now func() time.Time
}

// DefaultMonitoringAddr is skiffd's monitoring port on this host, Istio's
// 15014.
const DefaultMonitoringAddr = "127.0.0.1:15014"

// Exit codes: usage errors are the caller's to fix by retyping the command.
const (
	exitOK    = 0
	exitError = 1
	exitUsage = 2
)

// usageError is a command line that cannot run; its text says what to type.
type usageError struct{ msg string }

func (e *usageError) Error() string { return e.msg }

func usagef(format string, a ...any) error { return &usageError{msg: fmt.Sprintf(format, a...)} }

const topUsage = `usage:
  skiff proxy-status [POD[.NAMESPACE]] [-n NAMESPACE] [-o json|yaml]
  skiff proxy-config TYPE POD[.NAMESPACE] [-n NAMESPACE] [flags] [-o short|json|yaml]
      TYPE is one of: all, listeners, routes, clusters, endpoints, secret (also listener,
      route, cluster, endpoint, secrets, and istioctl's short forms l, r, c, ep, s)
Run "skiff proxy-config TYPE --help" for the flags of one TYPE.
`

// Run executes "proxy-status ..." or "proxy-config ..." (also istioctl's
// "ps" and "pc"); args[0] is the verb. It returns the exit code: 0 on
// success, 1 when skiffd or a proxy cannot answer, 2 for a bad command line.
func Run(ctx context.Context, args []string, env Env, stdout, stderr io.Writer) int {
	if env.MonitoringAddr == "" {
		env.MonitoringAddr = DefaultMonitoringAddr
	}
	if env.Client == nil {
		env.Client = &http.Client{Timeout: 10 * time.Second}
	}
	if env.Now == nil {
		env.Now = time.Now
	}
	var err error
	switch {
	case len(args) == 0:
		err = usagef("missing command: proxy-status or proxy-config\n%s", topUsage)
	case args[0] == "proxy-status" || args[0] == "ps":
		err = runStatus(ctx, args[1:], env, stdout)
	case args[0] == "proxy-config" || args[0] == "pc":
		err = runConfig(ctx, args[1:], env, stdout)
	default:
		err = usagef("unknown command %q: want proxy-status or proxy-config\n%s", args[0], topUsage)
	}
	var ue *usageError
	switch {
	case err == nil:
		return exitOK
	case errors.Is(err, flag.ErrHelp):
		return exitOK
	case errors.As(err, &ue):
		fmt.Fprintln(stderr, "skiff:", strings.TrimRight(err.Error(), "\n"))
		return exitUsage
	default:
		fmt.Fprintln(stderr, "skiff:", err)
		return exitError
	}
}

// parseFlags parses flags wherever they stand among the positional
// arguments, as istioctl (cobra) does, and returns the positionals.
func parseFlags(fs *flag.FlagSet, args []string, usage string, out io.Writer) ([]string, error) {
	fs.SetOutput(io.Discard)
	pos, err := cliflags.Parse(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			fmt.Fprint(out, usage)
			return nil, err
		}
		return nil, usagef("%v\n%s", err, usage)
	}
	return pos, nil
}

// podArg splits "pod[.namespace]"; the namespace defaults to ns. Pod names
// may hold dots, so the namespace is what follows the last one.
func podArg(arg, ns string) PodRef {
	if i := strings.LastIndexByte(arg, '.'); i > 0 && i < len(arg)-1 {
		return PodRef{Name: arg[:i], Namespace: arg[i+1:]}
	}
	return PodRef{Name: arg, Namespace: ns}
}

// adminAddr resolves pod's proxy admin address, listing the known pods
// when it is not found.
func adminAddr(env Env, pod PodRef) (string, error) {
	if env.Resolver == nil {
		return "", fmt.Errorf("cannot find the proxy of pod %s: no local mesh state (is the mesh running? start it with `skiff up DIR`)", pod)
	}
	addr, err := env.Resolver.AdminAddr(pod.Name, pod.Namespace)
	if err == nil {
		return addr, nil
	}
	msg := fmt.Sprintf("pod %s: %v", pod, err)
	if pods, perr := env.Resolver.Pods(); perr == nil {
		if len(pods) == 0 {
			return "", fmt.Errorf("%s; no pod has a proxy (is the mesh running? see `skiff status`)", msg)
		}
		names := make([]string, len(pods))
		for i, p := range pods {
			names[i] = p.String()
		}
		slices.Sort(names)
		return "", fmt.Errorf("%s; pods with a proxy: %s", msg, strings.Join(names, ", "))
	}
	return "", errors.New(msg)
}

// getter fetches from one server and says, on failure, which server it was
// and what to do about it.
type getter struct {
	client *http.Client
	addr   string
	// what names the server in errors ("skiffd", "the proxy of pod x.y");
	// hint says what to check when it cannot be reached.
	what, hint string
}

func skiffd(env Env) getter {
	return getter{client: env.Client, addr: env.MonitoringAddr, what: "skiffd",
		hint: "is the mesh running? start it with `skiff up DIR`"}
}

func proxyAdmin(env Env, pod PodRef, addr string) getter {
	return getter{client: env.Client, addr: addr, what: "the proxy of pod " + pod.String(),
		hint: "is the pod running? see `skiff status`"}
}

func (g getter) get(ctx context.Context, path string) ([]byte, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, "http://"+g.addr+path, nil)
	if err != nil {
		return nil, fmt.Errorf("%s at %s: %w", g.what, g.addr, err)
	}
	resp, err := g.client.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach %s at %s (GET %s): %v; %s", g.what, g.addr, path, unwrapURLError(err), g.hint)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, 256<<20))
	if err != nil {
		return nil, fmt.Errorf("reading the answer of %s at %s to GET %s: %w", g.what, g.addr, path, err)
	}
	if resp.StatusCode != http.StatusOK {
		return nil, &statusError{code: resp.StatusCode,
			msg: fmt.Sprintf("%s at %s answered GET %s with %s: %s", g.what, g.addr, path, resp.Status, strings.TrimSpace(string(body)))}
	}
	return body, nil
}

// statusError is a server's answer other than 200 OK.
type statusError struct {
	code int
	msg  string
}

func (e *statusError) Error() string { return e.msg }

// unwrapURLError drops net/http's "Get \"url\":" prefix, the message
// already names the request.
func unwrapURLError(err error) error {
	var u *url.Error
	if errors.As(err, &u) {
		return u.Err
	}
	return err
}
