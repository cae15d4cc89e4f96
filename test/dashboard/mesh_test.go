// Package dashboard tests the mesh dashboard and Prometheus for the local
// mesh black box: it builds skiff, skiffd, skiff-proxy and Bookinfo, runs
// `skiff up samples/bookinfo/platform/local` (with --prometheus where a
// test needs it), sends product page requests through the ingress
// gateway, and looks at what a user sees: PromQL answers from the real
// Prometheus, and the dashboard `skiff dashboard` serves, in headless
// Chromium.
package dashboard

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/internal/testing/meshtest"
)

var (
	bin string
	// repo is the repository root; samples is Istio's Bookinfo samples
	// directory beside it (../shared/istio-samples/bookinfo).
	repo, samples = meshtest.Repo, filepath.Join(meshtest.IstioSamples, "bookinfo")
)

func TestMain(m *testing.M) { meshtest.Main(m, meshtest.Bookinfo, &bin) }

func sample(t *testing.T, rel string) string {
	t.Helper()
	return meshtest.Sample(t, filepath.Join("bookinfo", rel))
}

// mesh is one running `skiff up` of Bookinfo.
type mesh struct {
	*meshtest.Mesh
	ingress    string // http://127.0.0.1:PORT
	prometheus string // its Prometheus, with --prometheus
	monitoring string // skiffd's monitoring address
}

var (
	productPageLine = regexp.MustCompile(`product page:\s+(http://\S+)/productpage`)
	prometheusLine  = regexp.MustCompile(`prometheus serving (http://\S+)`)
	skiffdLine      = regexp.MustCompile(`debug http://(\S+)/debug/syncz`)
)

// startMesh runs skiff up on Bookinfo with free ports and waits for
// "mesh ready".
func startMesh(t *testing.T, capture string, extra ...string) *mesh {
	t.Helper()
	m := &mesh{}
	ready := false
	args := append([]string{filepath.Join(repo, "samples/bookinfo/platform/local"),
		"--capture", capture, "--gateway-port", "0", "--monitoring-addr", "127.0.0.1:0"}, extra...)
	m.Mesh = meshtest.Start(t, bin, args, func(line string) (bool, error) {
		if s := productPageLine.FindStringSubmatch(line); s != nil {
			m.ingress = s[1]
		}
		if s := prometheusLine.FindStringSubmatch(line); s != nil {
			m.prometheus = s[1]
		}
		if s := skiffdLine.FindStringSubmatch(line); s != nil {
			m.monitoring = s[1]
		}
		if strings.HasPrefix(line, "mesh up, but not ready") {
			return false, fmt.Errorf("%s", line)
		}
		if line == "mesh ready" {
			ready = true
		}
		return ready && m.ingress != "", nil
	})
	return m
}

var client = &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{Proxy: nil}}

// productPage fetches the product page once; it returns the status and
// which reviews version served it ("" when it could not tell).
func productPage(m *mesh) (int, string, error) {
	resp, err := client.Get(m.ingress + "/productpage")
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, "", err
	}
	v := reviewsBy.FindStringSubmatch(string(b))
	if v == nil {
		return resp.StatusCode, "", nil
	}
	return resp.StatusCode, v[1], nil
}

var reviewsBy = regexp.MustCompile(`reviews-(v\d)-`)

// traffic sends product page requests, one every interval, until stop is
// called, at most max of them; it returns how many were answered 200.
type traffic struct {
	stop func() int
}

func sendTraffic(t *testing.T, m *mesh, every time.Duration, max int) *traffic {
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	var mu sync.Mutex
	ok := 0
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; i < max && ctx.Err() == nil; i++ {
			if code, _, err := productPage(m); err == nil && code == 200 {
				mu.Lock()
				ok++
				mu.Unlock()
			}
			select {
			case <-ctx.Done():
			case <-time.After(every):
			}
		}
	}()
	tr := &traffic{stop: func() int {
		cancel()
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return ok
	}}
	t.Cleanup(func() { tr.stop() })
	return tr
}

// startDashboard runs `skiff dashboard --port 0` against the mesh and
// returns the URL it prints.
func startDashboard(t *testing.T, m *mesh, extra ...string) string {
	t.Helper()
	args := append([]string{"dashboard", "--port", "0", "--state-dir", m.State}, extra...)
	cmd := exec.Command(filepath.Join(bin, "skiff"), args...)
	out, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var errb meshtest.SyncBuilder
	cmd.Stderr = &errb
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			cmd.Process.Kill()
			<-done
		}
	})
	urls := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			if s := regexp.MustCompile(`dashboard: (http://\S+)`).FindStringSubmatch(sc.Text()); s != nil {
				urls <- s[1]
			}
		}
		io.Copy(io.Discard, out)
	}()
	select {
	case u := <-urls:
		return u
	case <-time.After(30 * time.Second):
		t.Fatalf("skiff %s printed no URL within 30 s; stderr: %s", strings.Join(args, " "), errb.String())
		return ""
	}
}
