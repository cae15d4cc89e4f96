package inspect

import (
	"context"
	"encoding/hex"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/skiff-mesh/skiff/dataplane/agent/agenttest"
	"github.com/skiff-mesh/skiff/dataplane/proxy"
)

// `skiff proxy-config secret POD` against a real skiff-proxy whose identity
// agent got its certificate from the real CA over gRPC.
func TestProxyConfigSecretFromAgent(t *testing.T) {
	c := agenttest.StartCA(t, "default", "sleep")
	path := filepath.Join(t.TempDir(), "bootstrap.yaml")
	boot := `node:
  id: sidecar~127.0.0.1~sleep-1.default~default.svc.cluster.local
  metadata: {NAMESPACE: default, SERVICE_ACCOUNT: sleep}
admin:
  address: {socket_address: {address: 127.0.0.1, port_value: 0}}
`
	if err := os.WriteFile(path, []byte(boot), 0o644); err != nil {
		t.Fatal(err)
	}
	p, err := proxy.New(proxy.Options{ConfigPath: path, DrainTime: 50 * time.Millisecond,
		Logger:   slog.New(slog.NewTextHandler(io.Discard, nil)),
		Identity: proxy.IdentityOptions{CAAddr: c.Addr, CARootCert: c.RootFile, TokenFile: c.TokenFile}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- p.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case <-p.Ready():
	case <-time.After(10 * time.Second):
		t.Fatalf("proxy not ready: agent %+v", p.Agent().State())
	}
	env := Env{Resolver: mapResolver{{"sleep-1", "default"}: p.AdminAddr().String()}}

	st := p.Agent().State()
	root := c.TrustBundle()[0]
	code, out, errs := run(env, "proxy-config", "secret", "sleep-1")
	want := [][]string{
		{"RESOURCE NAME", "TYPE", "STATUS", "VALID CERT", "SERIAL NUMBER", "NOT AFTER", "NOT BEFORE"},
		{"ROOTCA", "CA", "ACTIVE", "true", hex.EncodeToString(root.SerialNumber.Bytes()),
			root.NotAfter.UTC().Format(time.RFC3339), root.NotBefore.UTC().Format(time.RFC3339)},
		{"default", "Cert Chain", "ACTIVE", "true", st.Serial,
			st.NotAfter.UTC().Format(time.RFC3339), st.NotBefore.UTC().Format(time.RFC3339)},
	}
	if got := table(out, want[0]...); code != 0 || !reflect.DeepEqual(got, want) {
		t.Errorf("exit %d %s\ngot  %q\nwant %q\n%s", code, errs, got, want, out)
	}

	code, out, errs = run(env, "proxy-config", "secret", "sleep-1.default", "-o", "json")
	if code != 0 || !strings.Contains(out, `"name": "default"`) || !strings.Contains(out, `"name": "ROOTCA"`) || !strings.Contains(out, `"inlineBytes": "W3JlZGFjdGVkXQ=="`) {
		t.Fatalf("-o json: exit %d %s\n%s", code, errs, out)
	}
	// The key is redacted by the admin API, as Envoy does.
	if strings.Contains(out, "LS0tLS1CRUdJTiBQUklWQVRF") || strings.Contains(out, "PRIVATE KEY") {
		t.Errorf("-o json shows the private key:\n%s", out)
	}
}
