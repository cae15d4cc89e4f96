package kubetest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

// Bins are the Kubernetes binaries of one version, built from tools/kube.
type Bins struct {
	Version           string // k8s.io/kubernetes version, e.g. v1.35.4
	Dir               string // cache directory holding both binaries
	APIServer         string // path of kube-apiserver
	ControllerManager string // path of kube-controller-manager
}

var commands = []string{"kube-apiserver", "kube-controller-manager"}

// Bounds a cold build (a few minutes each on 2 cores) so a wedged toolchain
// fails the test instead of hanging the whole run.
const buildTimeout = 25 * time.Minute

var (
	binsMu   sync.Mutex
	binsDone *Bins
)

// Binaries returns kube-apiserver and kube-controller-manager for the version
// tools/kube/go.mod requires, building them on first use into
// $SKIFF_KUBE_CACHE/<version> (default ${XDG_CACHE_HOME:-~/.cache}/skiff/kube).
// An flock(2) lock on <dir>/.lock keeps parallel test binaries (and
// scripts/kube-binaries.sh) from building twice. A failed build fails tb with
// the tail of the build log; it never skips.
func Binaries(tb testing.TB) Bins {
	tb.Helper()
	binsMu.Lock()
	defer binsMu.Unlock()
	if binsDone != nil {
		return *binsDone
	}
	b, err := binaries(tb)
	if err != nil {
		tb.Fatalf("kubetest: Kubernetes binaries: %v", err)
	}
	binsDone = &b
	return b
}

func binaries(tb testing.TB) (Bins, error) {
	root, err := repoRoot()
	if err != nil {
		return Bins{}, err
	}
	toolsDir := filepath.Join(root, "tools", "kube")
	version, err := kubeVersion(filepath.Join(toolsDir, "go.mod"))
	if err != nil {
		return Bins{}, err
	}
	base, err := cacheBase()
	if err != nil {
		return Bins{}, err
	}
	dir := filepath.Join(base, version)
	b := Bins{
		Version:           version,
		Dir:               dir,
		APIServer:         filepath.Join(dir, "kube-apiserver"),
		ControllerManager: filepath.Join(dir, "kube-controller-manager"),
	}
	if allBuilt(dir) {
		return b, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return Bins{}, fmt.Errorf("cache directory %s: %v (set SKIFF_KUBE_CACHE to a writable directory)", dir, err)
	}
	unlock, err := lockDir(tb, dir)
	if err != nil {
		return Bins{}, err
	}
	defer unlock()
	for _, cmd := range commands {
		out := filepath.Join(dir, cmd)
		if isExecutable(out) {
			continue // built by whoever held the lock before us
		}
		if err := build(tb, toolsDir, version, cmd, out); err != nil {
			return Bins{}, err
		}
	}
	return b, nil
}

// repoRoot finds the main module's root by walking up from the working
// directory (a test runs in its package directory).
func repoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for d := dir; ; {
		data, err := os.ReadFile(filepath.Join(d, "go.mod"))
		if err == nil && string(bytes.TrimSpace(modulePath(data))) == "github.com/skiff-mesh/skiff" {
			return d, nil
		}
		parent := filepath.Dir(d)
		if parent == d {
			return "", fmt.Errorf("no go.mod of module github.com/skiff-mesh/skiff above %s: run the test inside the Skiff repository", dir)
		}
		d = parent
	}
}

func modulePath(gomod []byte) []byte {
	for _, line := range bytes.Split(gomod, []byte("\n")) {
		if rest, ok := bytes.CutPrefix(bytes.TrimSpace(line), []byte("module ")); ok {
			return rest
		}
	}
	return nil
}

// kubeVersion reads the k8s.io/kubernetes requirement of tools/kube/go.mod.
func kubeVersion(gomod string) (string, error) {
	data, err := os.ReadFile(gomod)
	if err != nil {
		return "", fmt.Errorf("reading %s: %v", gomod, err)
	}
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if strings.Contains(line, "=>") || strings.HasPrefix(strings.TrimSpace(line), "//") {
			continue
		}
		f := strings.Fields(line)
		for i := 0; i+1 < len(f); i++ {
			if f[i] == "k8s.io/kubernetes" && strings.HasPrefix(f[i+1], "v") {
				return f[i+1], nil
			}
		}
	}
	return "", fmt.Errorf("%s: no requirement of k8s.io/kubernetes (expected a line 'require k8s.io/kubernetes vX.Y.Z')", gomod)
}

func cacheBase() (string, error) {
	if d := os.Getenv("SKIFF_KUBE_CACHE"); d != "" {
		return d, nil
	}
	if d := os.Getenv("XDG_CACHE_HOME"); d != "" {
		return filepath.Join(d, "skiff", "kube"), nil
	}
	home, err := os.UserHomeDir()
	if err != nil {
		return "", fmt.Errorf("no cache directory: %v (set SKIFF_KUBE_CACHE)", err)
	}
	return filepath.Join(home, ".cache", "skiff", "kube"), nil
}

func allBuilt(dir string) bool {
	for _, cmd := range commands {
		if !isExecutable(filepath.Join(dir, cmd)) {
			return false
		}
	}
	return true
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// lockDir takes an exclusive flock on dir/.lock, the same lock
// scripts/kube-binaries.sh takes with flock(1).
func lockDir(tb testing.TB, dir string) (func(), error) {
	path := filepath.Join(dir, ".lock")
	f, err := os.OpenFile(path, os.O_CREATE|os.O_RDWR, 0o644)
	if err != nil {
		return nil, fmt.Errorf("build lock %s: %v", path, err)
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		if !errors.Is(err, syscall.EWOULDBLOCK) {
			f.Close()
			return nil, fmt.Errorf("build lock %s: %v", path, err)
		}
		tb.Logf("kubetest: another process is building the Kubernetes binaries (lock %s); waiting", path)
		start := time.Now()
		for {
			err = syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB)
			if err == nil {
				break
			}
			if !errors.Is(err, syscall.EWOULDBLOCK) || time.Since(start) > buildTimeout {
				f.Close()
				return nil, fmt.Errorf("build lock %s: still held after %v: %v (remove a stale build or run scripts/kube-binaries.sh)", path, time.Since(start).Round(time.Second), err)
			}
			time.Sleep(time.Second)
		}
		tb.Logf("kubetest: lock acquired after %v", time.Since(start).Round(time.Second))
	}
	return func() {
		syscall.Flock(int(f.Fd()), syscall.LOCK_UN)
		f.Close()
	}, nil
}

// build runs `go build` of one command in tools/kube, logging progress, and
// moves the binary into place only once it is complete.
func build(tb testing.TB, toolsDir, version, cmd, out string) error {
	minor := ""
	if parts := strings.Split(version, "."); len(parts) > 1 {
		minor = parts[1]
	}
	ldflags := strings.Join([]string{
		"-s", "-w",
		"-X k8s.io/component-base/version.gitVersion=" + version,
		"-X k8s.io/component-base/version.gitMajor=1",
		"-X k8s.io/component-base/version.gitMinor=" + minor,
		"-X k8s.io/component-base/version.gitTreeState=clean",
	}, " ")
	tmp := filepath.Join(filepath.Dir(out), "."+cmd+".tmp")
	logPath := filepath.Join(filepath.Dir(out), cmd+".build.log")
	logFile, err := os.Create(logPath)
	if err != nil {
		return err
	}
	defer logFile.Close()

	c := exec.Command("go", "build", "-trimpath", "-ldflags", ldflags, "-o", tmp, "k8s.io/kubernetes/cmd/"+cmd)
	c.Dir = toolsDir
	c.Env = append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")
	c.Stdout, c.Stderr = logFile, logFile
	tb.Logf("kubetest: building %s %s in %s (a cold build takes minutes on 2 cores; scripts/kube-binaries.sh does this up front)", cmd, version, toolsDir)
	start := time.Now()
	if err := c.Start(); err != nil {
		return fmt.Errorf("starting go build of %s: %v (is the go command on PATH?)", cmd, err)
	}
	done := make(chan error, 1)
	go func() { done <- c.Wait() }()
	tick := time.NewTicker(30 * time.Second)
	defer tick.Stop()
	timeout := time.NewTimer(buildTimeout)
	defer timeout.Stop()
	for {
		select {
		case err := <-done:
			if err != nil {
				os.Remove(tmp)
				return fmt.Errorf("go build k8s.io/kubernetes/cmd/%s (in %s) failed after %v: %v\nlast lines of %s:\n%s",
					cmd, toolsDir, time.Since(start).Round(time.Second), err, logPath, tailFile(logPath, 30))
			}
			if err := os.Rename(tmp, out); err != nil {
				return err
			}
			tb.Logf("kubetest: built %s in %v", cmd, time.Since(start).Round(time.Second))
			return nil
		case <-tick.C:
			tb.Logf("kubetest: still building %s (%v)", cmd, time.Since(start).Round(time.Second))
		case <-timeout.C:
			c.Process.Kill()
			<-done
			os.Remove(tmp)
			return fmt.Errorf("go build of %s did not finish within %v; last lines of %s:\n%s", cmd, buildTimeout, logPath, tailFile(logPath, 30))
		}
	}
}

// tailFile returns the last n lines of a file, for failure messages.
func tailFile(path string, n int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read %s: %v)", path, err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}
