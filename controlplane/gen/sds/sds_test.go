package sds_test

import (
	"bytes"
	"crypto/tls"
	"encoding/base64"
	"fmt"
	"log/slog"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"

	"github.com/skiff-mesh/skiff/controlplane/gen/index"
	"github.com/skiff-mesh/skiff/controlplane/gen/index/indextest"
	"github.com/skiff-mesh/skiff/controlplane/gen/sds"
	"github.com/skiff-mesh/skiff/controlplane/xds"
	"github.com/skiff-mesh/skiff/dataplane/tlsctx"
	"github.com/skiff-mesh/skiff/internal/testing/golden"
)

func pem(t *testing.T, name string) string {
	t.Helper()
	b, err := os.ReadFile(indextest.SamplesDir + "/certs/" + name)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

// secretsIndex holds, in istio-system: a kubernetes.io/tls Secret with a
// CA, a generic Secret with its CA in a separate NAME-cacert Secret, a
// Secret whose key is not its certificate's, and, in default, a Secret a
// gateway of istio-system must not read.
func secretsIndex(t *testing.T) *index.Index {
	t.Helper()
	cert, key, root := pem(t, "ca-cert.pem"), pem(t, "ca-key.pem"), pem(t, "root-cert.pem")
	yaml := fmt.Sprintf(`
apiVersion: v1
kind: Secret
metadata: {name: api-cred, namespace: istio-system}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s, ca.crt: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: generic-cred, namespace: istio-system}
type: Opaque
data: {cert: %s, key: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: generic-cred-cacert, namespace: istio-system}
type: Opaque
data: {cacert: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: mismatched, namespace: istio-system}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
---
apiVersion: v1
kind: Secret
metadata: {name: app-cred, namespace: default}
type: kubernetes.io/tls
data: {tls.crt: %s, tls.key: %s}
`, b64(cert), b64(key), b64(root), b64(cert), b64(key), b64(root), b64(root), b64(key), b64(cert), b64(key))
	return indextest.Build(indextest.Decode(t, "secrets.yaml", []byte(yaml)))
}

var gateway = indextest.Router("istio-system", map[string]string{"istio": "ingressgateway"})

func generate(t *testing.T, p *xds.Proxy, ix *index.Index, names ...string) ([]*tlsv3.Secret, string) {
	t.Helper()
	var logs bytes.Buffer
	g := sds.New(slog.New(slog.NewTextHandler(&logs, nil)))
	var out []*tlsv3.Secret
	for _, r := range g.Generate(p, ix, names) {
		var s tlsv3.Secret
		b, err := proto.Marshal(r.Message)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.Message.(interface{ UnmarshalTo(proto.Message) error }).UnmarshalTo(&s); err != nil {
			t.Fatalf("resource %q (%d bytes): %v", r.Name, len(b), err)
		}
		if s.GetName() != r.Name {
			t.Errorf("resource %q holds secret %q", r.Name, s.GetName())
		}
		out = append(out, &s)
	}
	return out, logs.String()
}

// TestGatewaySecrets pins the secrets a gateway gets for its credentials.
func TestGatewaySecrets(t *testing.T) {
	ix := secretsIndex(t)
	got, logs := generate(t, gateway, ix,
		"kubernetes://api-cred", "kubernetes://api-cred-cacert",
		"kubernetes://generic-cred", "kubernetes://generic-cred-cacert")
	golden.Compare(t, "testdata/gateway.json", golden.MarshalProtos(t, got))
	if len(got) != 4 || logs != "" {
		t.Errorf("%d secrets, logs %q", len(got), logs)
	}
	if ca := got[1].GetValidationContext().GetTrustedCa().GetInlineBytes(); string(ca) != pem(t, "root-cert.pem") {
		t.Errorf("api-cred-cacert is not the Secret's ca.crt")
	}
}

// TestSecretsRefused: what the proxy may not have, or what is not a valid
// credential, is not sent, and the log says why.
func TestSecretsRefused(t *testing.T) {
	ix := secretsIndex(t)
	sidecar := &xds.Proxy{ID: "productpage-v1-0.default", Type: xds.SidecarProxy, Namespace: "default"}
	defaultGW := indextest.Router("default", map[string]string{"istio": "ingressgateway"})
	for _, tc := range []struct {
		name string
		p    *xds.Proxy
		res  string
		log  string
	}{
		{"cross-namespace", gateway, "kubernetes://default/app-cred", "another namespace"},
		{"sidecar", sidecar, "kubernetes://app-cred", "only gateways"},
		{"missing", gateway, "kubernetes://nope", "no Secret istio-system/nope"},
		{"no CA in Secret", defaultGW, "kubernetes://app-cred-cacert", "no CA certificate"},
		{"missing CA", gateway, "kubernetes://nope-cacert", "holds the CA"},
		{"mismatched key", gateway, "kubernetes://mismatched", "do not form a valid pair"},
		{"not a certificate", gateway, "kubernetes://mismatched-cacert", "no CA certificate"},
		{"other scheme", gateway, "file-cert:/a~/b", "only kubernetes://"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, logs := generate(t, tc.p, ix, tc.res)
			if len(got) != 0 || !strings.Contains(logs, tc.log) {
				t.Errorf("got %d secrets, log %q, want none and a log with %q", len(got), logs, tc.log)
			}
		})
	}
	// The gateway of namespace default reads its own namespace's Secret.
	if got, logs := generate(t, defaultGW, ix, "kubernetes://app-cred"); len(got) != 1 {
		t.Errorf("same-namespace secret refused: %s", logs)
	}
}

type secrets map[string]*tlsv3.Secret

func (s secrets) Secret(name string) *tlsv3.Secret { return s[name] }

// TestServedSecretHandshake: the secrets served for a MUTUAL credential,
// put into skiff-proxy's TLS server, accept a client presenting a
// certificate the Secret's CA signed, and refuse one without.
func TestServedSecretHandshake(t *testing.T) {
	ix := secretsIndex(t)
	got, logs := generate(t, gateway, ix, "kubernetes://api-cred", "kubernetes://api-cred-cacert")
	if len(got) != 2 {
		t.Fatalf("secrets: %d, log %s", len(got), logs)
	}
	store := secrets{}
	for _, s := range got {
		store[s.GetName()] = s
	}
	ctx := &tlsv3.DownstreamTlsContext{
		RequireClientCertificate: wrapperspb.Bool(true),
		CommonTlsContext: &tlsv3.CommonTlsContext{
			TlsCertificateSdsSecretConfigs: []*tlsv3.SdsSecretConfig{sds.Credential("api-cred")},
			ValidationContextType: &tlsv3.CommonTlsContext_CombinedValidationContext{
				CombinedValidationContext: &tlsv3.CommonTlsContext_CombinedCertificateValidationContext{
					DefaultValidationContext:         &tlsv3.CertificateValidationContext{},
					ValidationContextSdsSecretConfig: sds.Credential("api-cred" + sds.CASuffix),
				},
			},
		},
	}
	srvCfg, err := tlsctx.ServerConfig(ctx, store)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", srvCfg)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for range 2 {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.SetDeadline(time.Now().Add(5 * time.Second))
			c.(*tls.Conn).Handshake()
			c.Write([]byte("ok"))
			c.Close()
		}
	}()
	pair, err := tls.X509KeyPair([]byte(pem(t, "ca-cert.pem")), []byte(pem(t, "ca-key.pem")))
	if err != nil {
		t.Fatal(err)
	}
	dial := func(certs []tls.Certificate) error {
		c, err := tls.DialWithDialer(&net.Dialer{Timeout: 5 * time.Second}, "tcp", ln.Addr().String(),
			&tls.Config{InsecureSkipVerify: true, Certificates: certs})
		if err != nil {
			return err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		buf := make([]byte, 2)
		_, err = c.Read(buf)
		return err
	}
	if err := dial([]tls.Certificate{pair}); err != nil {
		t.Errorf("client with a certificate the CA signed: %v", err)
	}
	if err := dial(nil); err == nil {
		t.Errorf("client without a certificate was accepted")
	}
}
