package mesh

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"strings"

	"github.com/skiff-mesh/skiff/localmesh"
)

// Exec is `skiff exec`, the local mesh's `kubectl exec`: it runs a command
// as one of a pod's containers would, so its traffic goes through the pod's
// sidecar with the pod's identity. With netns capture the command runs in
// the pod's network namespace (its connections are redirected to the
// sidecar, names resolve through the pod's hosts file); in loopback mode it
// gets the pod's HTTP_PROXY.
func Exec(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	const use = "skiff exec [-n NAMESPACE] POD|deploy/NAME -- COMMAND [ARGS...]"
	fs := newFlags("exec", use, stderr)
	stateDir := stateDirFlag(fs)
	ns := fs.String("n", "default", "the pod's namespace")
	dash := -1
	for i, a := range args {
		if a == "--" {
			dash = i
			break
		}
	}
	if dash < 0 || dash == len(args)-1 {
		fmt.Fprintf(stderr, "skiff exec: give the command after --: %s\n", use)
		return 2
	}
	pos, err := parse(fs, args[:dash])
	if err != nil {
		return 2
	}
	if len(pos) != 1 {
		fmt.Fprintf(stderr, "skiff exec: name one pod: %s\n", use)
		return 2
	}
	command := args[dash+1:]
	c, _, err := client(*stateDir)
	if err != nil {
		fmt.Fprintln(stderr, "skiff exec:", err)
		return 1
	}
	rep, err := c.Status(ctx)
	if err != nil {
		fmt.Fprintln(stderr, "skiff exec:", err)
		return 1
	}
	p, err := findPod(rep.Pods, *ns, pos[0])
	if err != nil {
		fmt.Fprintln(stderr, "skiff exec:", err)
		return 1
	}
	cmd, err := podCommand(ctx, p, command)
	if err != nil {
		fmt.Fprintln(stderr, "skiff exec:", err)
		return 1
	}
	cmd.Stdin, cmd.Stdout, cmd.Stderr = stdin, stdout, stderr
	if err := cmd.Run(); err != nil {
		var ee *exec.ExitError
		if errors.As(err, &ee) && ee.ExitCode() > 0 {
			return ee.ExitCode()
		}
		fmt.Fprintf(stderr, "skiff exec: %s: %v\n", command[0], err)
		return 1
	}
	return 0
}

// findPod picks the pod named name, or for "deploy/NAME" the first running
// pod of that Deployment (its pods are named NAME-<hash>-<suffix>).
func findPod(pods []localmesh.PodStatus, ns, name string) (localmesh.PodStatus, error) {
	deploy, isDeploy := strings.CutPrefix(name, "deploy/")
	if !isDeploy {
		deploy, isDeploy = strings.CutPrefix(name, "deployment/")
	}
	var names []string
	for _, p := range pods {
		if p.Namespace != ns {
			continue
		}
		names = append(names, p.Name)
		if !isDeploy && p.Name == name {
			return p, nil
		}
		if isDeploy && strings.HasPrefix(p.Name, deploy+"-") && strings.Count(p.Name[len(deploy)+1:], "-") == 1 && p.Status == "Running" {
			return p, nil
		}
	}
	if len(names) == 0 {
		return localmesh.PodStatus{}, fmt.Errorf("no pods in namespace %q; pass -n NAMESPACE (skiff status lists the pods)", ns)
	}
	return localmesh.PodStatus{}, fmt.Errorf("no running pod %q in namespace %q; its pods: %s", name, ns, strings.Join(names, ", "))
}

// podCommand builds the command as the pod's containers run.
func podCommand(ctx context.Context, p localmesh.PodStatus, command []string) (*exec.Cmd, error) {
	if p.NetNS != "" {
		if _, err := exec.LookPath("ip"); err != nil {
			return nil, errors.New("ip not found on PATH: install iproute2 (Debian: apt-get install iproute2)")
		}
		return exec.CommandContext(ctx, "ip", append([]string{"netns", "exec", p.NetNS}, command...)...), nil
	}
	cmd := exec.CommandContext(ctx, command[0], command[1:]...)
	cmd.Env = os.Environ()
	if p.HTTPProxy != "" {
		cmd.Env = append(cmd.Env, "HTTP_PROXY="+p.HTTPProxy, "http_proxy="+p.HTTPProxy,
			"NO_PROXY=localhost,127.0.0.1", "no_proxy=localhost,127.0.0.1")
	}
	return cmd, nil
}
