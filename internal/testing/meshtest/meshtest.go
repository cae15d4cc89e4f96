// Package meshtest drives a local mesh as a user does, for the black-box
// tests (test/bookinfo, test/security): the binaries built once, `skiff
// up` in the background until it says it is ready, the other verbs against
// it, and `skiff down` when the test ends.
package meshtest

import (
	"bufio"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"
)

// Build builds each command (output name → import path, e.g. "skiff" →
// "github.com/skiff-mesh/skiff/cmd/skiff") into a new directory and
// returns it; the caller removes it.
func Build(cmds map[string]string) (string, error) {
	dir, err := os.MkdirTemp("", "skiff-meshtest-bin")
	if err != nil {
		return "", err
	}
	for out, pkg := range cmds {
		cmd := exec.Command("go", "build", "-o", filepath.Join(dir, out), pkg)
		cmd.Stdout, cmd.Stderr = os.Stderr, os.Stderr
		if err := cmd.Run(); err != nil {
			os.RemoveAll(dir)
			return "", fmt.Errorf("building %s: %w", pkg, err)
		}
	}
	return dir, nil
}

// Mesh is one running `skiff up`.
type Mesh struct {
	Bin   string // the directory Build made
	State string // --state-dir
	up    *exec.Cmd
	done  chan error
	out   *SyncBuilder
}

// NetnsBusy is what skiff up says when another mesh on the host (another
// package's test) holds the network namespaces.
const NetnsBusy = "another local mesh on this host uses network namespaces"

// Start runs `skiff up ARGS --state-dir DIR` and feeds each line it prints
// to until, which returns done once the mesh is as the test needs it, or
// an error to give up. It waits up to 90 s, and retries for up to 4
// minutes while another mesh holds the network namespaces. The mesh goes
// down when t ends; a failed test logs what skiff up printed.
func Start(t *testing.T, bin string, args []string, until func(line string) (bool, error)) *Mesh {
	t.Helper()
	for deadline := time.Now().Add(4 * time.Minute); ; {
		m, err := tryStart(t, bin, args, until)
		if err == nil {
			return m
		}
		if !strings.Contains(err.Error(), NetnsBusy) || time.Now().After(deadline) {
			t.Fatal(err)
		}
		t.Logf("skiff up: %s; trying again in 2 s", NetnsBusy)
		time.Sleep(2 * time.Second)
	}
}

func tryStart(t *testing.T, bin string, args []string, until func(string) (bool, error)) (*Mesh, error) {
	m := &Mesh{Bin: bin, State: t.TempDir(), done: make(chan error, 1), out: &SyncBuilder{}}
	args = append(append([]string{"up"}, args...), "--state-dir", m.State)
	m.up = exec.Command(filepath.Join(bin, "skiff"), args...)
	stdout, err := m.up.StdoutPipe()
	if err != nil {
		return nil, err
	}
	m.up.Stderr = m.out
	if err := m.up.Start(); err != nil {
		return nil, err
	}
	lines := make(chan string, 1000)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			m.out.Write([]byte(sc.Text() + "\n"))
			select {
			case lines <- sc.Text():
			default:
			}
		}
		m.done <- m.up.Wait()
	}()
	for deadline := time.After(90 * time.Second); ; {
		select {
		case l := <-lines:
			done, err := until(strings.TrimSpace(l))
			if err != nil {
				m.Stop()
				return nil, fmt.Errorf("skiff %s: %v\n%s", strings.Join(args, " "), err, m.out.String())
			}
			if done {
				t.Cleanup(func() {
					m.Stop()
					if t.Failed() {
						t.Logf("skiff up printed:\n%s", m.out.String())
					}
				})
				return m, nil
			}
		case err := <-m.done:
			m.done <- err
			return nil, fmt.Errorf("skiff %s exited before the mesh was ready: %v\n%s", strings.Join(args, " "), err, m.out.String())
		case <-deadline:
			m.Stop()
			return nil, fmt.Errorf("skiff up was not ready within 90 s:\n%s", m.out.String())
		}
	}
}

// Output is what skiff up has printed so far.
func (m *Mesh) Output() string { return m.out.String() }

// Stop is skiff down, bounded.
func (m *Mesh) Stop() {
	cmd := exec.Command(filepath.Join(m.Bin, "skiff"), "down", "--state-dir", m.State)
	cmd.Run()
	select {
	case err := <-m.done:
		m.done <- err
	case <-time.After(30 * time.Second):
		m.up.Process.Kill()
	}
}

// Skiff runs one verb against the mesh and fails the test unless it exits 0.
func (m *Mesh) Skiff(t *testing.T, args ...string) string {
	t.Helper()
	cmd := exec.Command(filepath.Join(m.Bin, "skiff"), append(args, "--state-dir", m.State)...)
	var out, errb strings.Builder
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		t.Fatalf("skiff %s: %v\nstdout: %s\nstderr: %s", strings.Join(args, " "), err, out.String(), errb.String())
	}
	return out.String()
}

// Apply is `skiff apply -f FILE`; it fails the test if an object was
// rejected.
func (m *Mesh) Apply(t *testing.T, file string) {
	t.Helper()
	if out := m.Skiff(t, "apply", "-f", file); strings.Contains(out, "rejected") {
		t.Fatalf("skiff apply -f %s rejected an object:\n%s", file, out)
	}
}

// ApplyInline applies YAML a task page gives inline (kubectl apply -f -
// <<EOF) from a file of its own, and returns the file for Delete.
func (m *Mesh) ApplyInline(t *testing.T, name, yaml string) string {
	t.Helper()
	f := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(f, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	m.Apply(t, f)
	return f
}

// Delete is `skiff delete -f FILE`.
func (m *Mesh) Delete(t *testing.T, file string) {
	t.Helper()
	m.Skiff(t, "delete", "-f", file)
}

// SyncBuilder is a strings.Builder safe to read while a process writes it.
type SyncBuilder struct {
	mu sync.Mutex
	b  strings.Builder
}

func (s *SyncBuilder) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *SyncBuilder) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// Bookinfo is what a `skiff up` of Bookinfo runs: the three binaries and
// the Bookinfo sample, for Build and Main.
var Bookinfo = map[string]string{
	"skiff": "github.com/skiff-mesh/skiff/cmd/skiff", "skiffd": "github.com/skiff-mesh/skiff/cmd/skiffd",
	"skiff-proxy": "github.com/skiff-mesh/skiff/cmd/skiff-proxy", "bookinfo": "github.com/skiff-mesh/skiff/samples/bookinfo/cmd/bookinfo",
}

// Main is a test package's TestMain: it builds cmds into a directory it
// stores in *bin, runs the tests, removes the directory and exits with
// the tests' code. A build failure exits 1, printing why.
func Main(m *testing.M, cmds map[string]string, bin *string) {
	dir, err := Build(cmds)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	*bin = dir
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// Repo is the repository root; IstioSamples is ../shared/istio-samples
// beside it, Istio's upstream samples the tests apply unchanged.
var (
	Repo         = repoRoot()
	IstioSamples = filepath.Join(filepath.Dir(Repo), "shared", "istio-samples")
)

func repoRoot() string {
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		return ""
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", "..", ".."))
}

// Sample is one of Istio's upstream sample files, e.g.
// "bookinfo/networking/virtual-service-all-v1.yaml"; a missing one fails
// the test with what to do.
func Sample(t testing.TB, rel string) string {
	t.Helper()
	p := filepath.Join(IstioSamples, rel)
	if _, err := os.Stat(p); err != nil {
		t.Fatalf("Istio's sample %s is missing (%v): these tests apply Istio's files unchanged from ../shared/istio-samples beside the repository; check it out there", p, err)
	}
	return p
}
