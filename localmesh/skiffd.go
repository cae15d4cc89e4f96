package localmesh

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/skiff-mesh/skiff/controlplane/config"
	"github.com/skiff-mesh/skiff/controlplane/config/file"
	"github.com/skiff-mesh/skiff/controlplane/config/validation"
)

// The supervisor's config store is the local mesh's API server: the file
// source on DIR, what `skiff apply` sends, the running pods and the
// built-in gateway feed it; apply, delete, status and the reconciler read
// it. skiffd runs as a child process serving a mirror of it (mirror.go),
// so that it can be killed and restarted while the pods keep running.

// newStore is the store skiffd itself would build: Istio's validation
// and the cross-object reference checks.
func newStore(o Options) *config.Store {
	s := config.NewStore(validation.Validate, o.Logger)
	s.SetReferenceChecker(func(objs []*config.Object) []config.ObjectError {
		var out []config.ObjectError
		for _, e := range validation.CheckReferences(objs) {
			out = append(out, config.ErrorAt(e.Object, e.Err))
		}
		return out
	})
	return s
}

// readDir starts the file source on DIR and waits until every file has
// been read once; the source follows DIR's changes until ctx ends.
func (m *mesh) readDir(ctx context.Context) error {
	src := file.New(m.o.Dir, file.Options{Log: m.o.Logger, Transform: m.vips.transform})
	errc := make(chan error, 1)
	go func() { errc <- src.Run(ctx, m.store) }()
	select {
	case <-src.Synced():
		return nil
	case err := <-errc:
		return fmt.Errorf("manifest directory %s: %w", m.o.Dir, err)
	case <-ctx.Done():
		return ctx.Err()
	}
}

// startProblems is everything in DIR that would keep the mesh from
// running as written: config errors (not warnings) and workloads that
// cannot start (no command, a program not found, an env entry that cannot
// be resolved), each with its file:line.
func (m *mesh) startProblems() []string {
	var out []string
	for _, e := range m.store.Errors() {
		if !e.Warning {
			out = append(out, e.Error())
		}
	}
	for _, d := range m.desiredPods(m.store.Snapshot()) {
		if msg := m.runnable(d); msg != "" {
			out = append(out, msg)
		}
	}
	return out
}

// runnable checks what prepare will need of a workload's containers; ""
// when they can start.
func (m *mesh) runnable(d desired) string {
	if msg := checkWorkload(d.obj); msg != "" {
		return msg
	}
	if isGatewayPod(d.tmpl) {
		return "" // runs the proxy alone
	}
	for i := range d.tmpl.Spec.Containers {
		c := &d.tmpl.Spec.Containers[i]
		cpath := fmt.Sprintf("%s.containers[%d]", d.path, i)
		env, err := ContainerEnv(c, PodFacts{}, nil, cpath)
		if err != nil {
			return describeAt(d.obj, err)
		}
		argv := ExpandCommand(append(append([]string(nil), c.Command...), c.Args...), env)
		if _, err := m.rt.resolve(argv[0]); err != nil {
			return describeAt(d.obj, fmt.Errorf("%s.command[0]: %w", cpath, err))
		}
	}
	return ""
}

// startError is DIR's problems at start, which stop skiff up before
// anything runs.
func startError(dir string, problems []string) error {
	n, them := "1 error", "it"
	if len(problems) > 1 {
		n, them = fmt.Sprintf("%d errors", len(problems)), "them"
	}
	return fmt.Errorf("%s has %s, so nothing was started; fix %s and run skiff up again:\n  %s",
		dir, n, them, strings.Join(problems, "\n  "))
}

// bindAddr binds skiffd's address flag for the mesh's lifetime (port 0
// picks one) and returns the bound address and the socket, which every
// skiffd start inherits (--listen-fds): no other process can take the port
// between the pick and skiffd's start, or while skiffd restarts. The flag
// names what to change.
func bindAddr(flag, addr string) (string, *os.File, error) {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return "", nil, fmt.Errorf("%s %s: %w; another skiffd or local mesh holds it: stop it, or pass %s a free address (127.0.0.1:0 picks one)", flag, addr, err, flag)
	}
	defer ln.Close() // File holds a duplicate
	f, err := ln.(*net.TCPListener).File()
	if err != nil {
		return "", nil, fmt.Errorf("%s %s: %w", flag, addr, err)
	}
	return ln.Addr().String(), f, nil
}

// findSkiffd locates skiffd as findProxy does skiff-proxy, else falls
// back to builtin; it returns the command line to run.
func findSkiffd(given, exeDir string, builtin []string) (argv []string, isBuiltin bool, err error) {
	if given != "" {
		if !isExecutable(given) {
			return nil, false, fmt.Errorf("skiffd %s is not an executable file", given)
		}
		return []string{given}, false, nil
	}
	if exeDir != "" {
		if cand := filepath.Join(exeDir, "skiffd"); isExecutable(cand) {
			return []string{cand}, false, nil
		}
	}
	if p, err := exec.LookPath("skiffd"); err == nil {
		return []string{p}, false, nil
	}
	if len(builtin) > 0 {
		return builtin, true, nil
	}
	return nil, false, fmt.Errorf("skiffd not found next to skiff (%s) or in PATH: build it with go build -o %s ./cmd/skiffd", exeDir, filepath.Join(exeDir, "skiffd"))
}

// skiffdProc is skiffd as a child process restarted with the workloads'
// back-off. Before it has been ready once, its exit is sent on early (skiff
// up fails); afterwards the supervisor says it is restarting it, while the
// proxies keep serving their last config.
type skiffdProc struct {
	*proc
	readyOnce atomic.Bool
	early     chan string
}

func (m *mesh) newSkiffd(argv []string) *skiffdProc {
	path := argv[0]
	caDir := filepath.Join(m.o.StateDir, caStateDir)
	args := append(append([]string(nil), argv[1:]...), "--config-dir", m.mirror.dir, "--xds-addr", m.xdsAddr,
		"--monitoring-addr", m.monAddr, "--local-mesh", "--log-level", m.o.LogLevel,
		"--secure-addr", m.secAddr, "--ca-dir", filepath.Join(caDir, caSelfSigned),
		"--bootstrap-tokens", filepath.Join(caDir, caTokensFile), "--root-cert-out", filepath.Join(caDir, caRootCertFile),
		"--listen-fds", "xds-addr=3,monitoring-addr=4,secure-addr=5")
	files := m.skiffdSockets // ExtraFiles[i] is the child's fd 3+i
	if m.o.MeshConfig != "" {
		args = append(args, "--meshconfig", m.o.MeshConfig)
	}
	s := &skiffdProc{early: make(chan string, 1)}
	s.proc = &proc{
		name: "skiffd", logPath: filepath.Join(m.o.StateDir, "logs", "skiffd.log"), policy: "Always",
		backoff: m.o.Backoff, grace: m.o.Grace,
		newCmd: func(ctx context.Context) *exec.Cmd {
			cmd := exec.CommandContext(ctx, path, args...)
			cmd.ExtraFiles = files[:]
			return cmd
		},
		onExit: func(status, logPath string, restartIn time.Duration) {
			if !s.readyOnce.Load() {
				select {
				case s.early <- status:
				default:
				}
				return
			}
			m.progress("skiffd exited (%s); restarting it in %s; the proxies keep serving their last config meanwhile; log: %s", status, restartIn, logPath)
		},
		onStart: func(pid, restarts int) {
			if restarts > 0 {
				m.progress("skiffd restarted (pid %d, restart %d); the proxies reconnect and resync", pid, restarts)
			}
		},
	}
	return s
}

// waitSkiffd waits for skiffd's first config version; an exit before
// that fails skiff up with the end of skiffd's log.
func (m *mesh) waitSkiffd(ctx context.Context) error {
	monURL := "http://" + m.monAddr
	deadline := time.Now().Add(30 * time.Second)
	for !httpOK(ctx, monURL+"/ready") {
		select {
		case status := <-m.skiffd.early:
			return fmt.Errorf("skiffd exited before it was ready (%s): %s", status, logTail(m.skiffd.logPath))
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("skiffd not ready after 30 s (%s/ready); its log: %s", monURL, m.skiffd.logPath)
		}
	}
	m.skiffd.readyOnce.Store(true)
	return nil
}

// logTail is the last lines of a log, for a message about why a process
// ended.
func logTail(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "no log at " + path
	}
	lines := bytes.Split(bytes.TrimSpace(b), []byte("\n"))
	if len(lines) > 5 {
		lines = lines[len(lines)-5:]
	}
	return fmt.Sprintf("last lines of %s:\n  %s", path, bytes.Join(lines, []byte("\n  ")))
}
