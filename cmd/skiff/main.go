// Command skiff is Skiff's command line (istioctl's job): it runs the
// local mesh (up, apply, delete, status, down) and inspects proxies
// (proxy-status, proxy-config).
package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"strings"

	cliinstall "github.com/skiff-mesh/skiff/cli/install"

	"github.com/skiff-mesh/skiff/cli/analyze"
	clidashboard "github.com/skiff-mesh/skiff/cli/dashboard"
	"github.com/skiff-mesh/skiff/cli/inspect"
	"github.com/skiff-mesh/skiff/cli/kubeinject"
	"github.com/skiff-mesh/skiff/cli/mesh"
	"github.com/skiff-mesh/skiff/cli/why"
	"github.com/skiff-mesh/skiff/localmesh"
)

// Version is the CLI's version.
var Version = "0.1.0-dev"

const usage = `usage: skiff COMMAND [ARGS]

The local mesh (no Kubernetes needed):
  up DIR               run the mesh described by DIR's manifests, in the foreground
  apply -f FILE|DIR    apply Istio, Gateway API or Kubernetes objects to the running mesh
  delete -f FILE|DIR   delete them
  status               workloads, their proxies and sync state
  exec [-n NS] POD|deploy/NAME -- CMD ARGS
                       run a command as the pod's containers run (through its sidecar)
  down                 stop the running mesh

Working with manifests:
  analyze FILE|DIR...                      istioctl analyze's checks, offline (codes IST0xxx, exit 79 on errors)
  kube-inject -f FILE|-                    inject the skiff-proxy sidecar into Kubernetes workloads, as Istio's injector does

Kubernetes:
  install --profile minimal|default|demo   install skiffd (and gateways) into the cluster of --kubeconfig
  manifest generate --profile P            print what install applies
  verify-install                           check every installed object is there and running
  uninstall [--purge]                      remove what install created

Inspecting proxies:
  proxy-status [POD]                       sync state of every proxy (ps)
  proxy-config TYPE POD[.NAMESPACE]        listeners|routes|clusters|endpoints|secret|all (pc)
  dashboard [--port N] [--prometheus URL]  the mesh dashboard: service graph, golden signals, config, sync state
  why SOURCE DEST[:PORT][/PATH]            replay one request: listener, route, cluster, endpoints, mTLS, authorization

  version              print the version

Run 'skiff COMMAND -h' for a command's flags.
`

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdout, os.Stderr))
}

func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprint(stdout, usage)
		return 0
	}
	rest := args[1:]
	switch args[0] {
	case "version":
		fmt.Fprintln(stdout, "skiff version", Version)
		return 0
	case "up":
		return mesh.Up(ctx, rest, stdout, stderr)
	case "apply":
		return mesh.Apply(ctx, rest, stdout, stderr)
	case "delete":
		return mesh.Delete(ctx, rest, stdout, stderr)
	case "status":
		return mesh.Status(ctx, rest, stdout, stderr)
	case "down":
		return mesh.Down(ctx, rest, stdout, stderr)
	case "exec":
		return mesh.Exec(ctx, rest, os.Stdin, stdout, stderr)
	case "install", "manifest", "uninstall", "verify-install":
		return cliinstall.Run(ctx, args[0], rest, stdout, stderr)
	case "analyze":
		return analyze.Run(ctx, rest, stdout, stderr)
	case "dashboard":
		return clidashboard.Run(ctx, rest, stdout, stderr)
	case "kube-inject":
		return kubeinject.Run(ctx, rest, os.Stdin, stdout, stderr)
	case mesh.SkiffdVerb: // hidden: the skiffd skiff up runs when no skiffd binary is at hand
		return mesh.Skiffd(ctx, rest, stdout, stderr)
	case "why":
		return why.Run(ctx, rest, stdout, stderr)
	case "proxy-status", "ps", "proxy-config", "pc":
		stateDir, rest := stateDirArg(args)
		return inspect.Run(ctx, rest, inspectEnv(stateDir), stdout, stderr)
	}
	fmt.Fprintf(stderr, "skiff: unknown command %q; run 'skiff help'\n", args[0])
	return 2
}

// stateDirArg takes --state-dir out of an inspect command's arguments (the
// inspect commands themselves know nothing of the local mesh).
func stateDirArg(args []string) (string, []string) {
	dir := localmesh.DefaultStateDir()
	out := make([]string, 0, len(args))
	for i := 0; i < len(args); i++ {
		a := args[i]
		switch {
		case a == "--state-dir" || a == "-state-dir":
			if i+1 < len(args) {
				dir = args[i+1]
				i++
			}
		case strings.HasPrefix(a, "--state-dir=") || strings.HasPrefix(a, "-state-dir="):
			dir = a[strings.IndexByte(a, '=')+1:]
		default:
			out = append(out, a)
		}
	}
	return dir, out
}

// inspectEnv points the inspect commands at the running local mesh: its
// skiffd and its pods' proxies, as mesh.json records them.
func inspectEnv(stateDir string) inspect.Env {
	env := inspect.Env{Resolver: meshResolver{stateDir: stateDir}}
	if st, err := localmesh.ReadState(stateDir); err == nil {
		env.MonitoringAddr = st.MonitoringAddr
	}
	return env
}

// meshResolver finds a pod's proxy admin address in the running mesh,
// asking its control API (pods come and go) and else reading mesh.json.
type meshResolver struct{ stateDir string }

func (r meshResolver) pods() ([]localmesh.PodStatus, error) {
	st, err := localmesh.ReadState(r.stateDir)
	if err != nil {
		return nil, fmt.Errorf("%w (state directory %s): start one with skiff up DIR", err, r.stateDir)
	}
	rep, err := (&localmesh.Client{Addr: st.APIAddr}).Status(context.Background())
	if err == nil {
		return rep.Pods, nil
	}
	var out []localmesh.PodStatus
	for _, p := range st.Pods {
		out = append(out, localmesh.PodStatus{Namespace: p.Namespace, Name: p.Name, IP: p.IP, Admin: p.AdminAddr})
	}
	return out, nil
}

func (r meshResolver) AdminAddr(pod, namespace string) (string, error) {
	pods, err := r.pods()
	if err != nil {
		return "", err
	}
	for _, p := range pods {
		if p.Name == pod && (namespace == "" || p.Namespace == namespace) {
			if p.Admin == "" {
				return "", fmt.Errorf("it runs without a sidecar")
			}
			return p.Admin, nil
		}
	}
	return "", fmt.Errorf("no such pod in the local mesh")
}

func (r meshResolver) Pods() ([]inspect.PodRef, error) {
	pods, err := r.pods()
	if err != nil {
		return nil, err
	}
	out := make([]inspect.PodRef, 0, len(pods))
	for _, p := range pods {
		out = append(out, inspect.PodRef{Name: p.Name, Namespace: p.Namespace})
	}
	return out, nil
}
