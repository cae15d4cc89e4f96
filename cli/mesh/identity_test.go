package mesh

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	securityapi "istio.io/api/security/v1alpha1"

	"github.com/skiff-mesh/skiff/localmesh"
)

// askCA calls skiffd's CreateCertificate over TLS as a pod's sidecar does:
// the roots and the token from the pod's directory, a CSR for spiffe.
func askCA(t *testing.T, st *localmesh.State, tok []byte, rootPath, spiffe string) ([]string, error) {
	t.Helper()
	roots, err := os.ReadFile(rootPath)
	if err != nil {
		t.Fatalf("pod root certificate: %v", err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(roots) {
		t.Fatalf("%s holds no PEM certificate", rootPath)
	}
	cc, err := grpc.NewClient(st.SecureAddr, grpc.WithTransportCredentials(credentials.NewTLS(
		&tls.Config{RootCAs: pool, ServerName: "istiod.istio-system.svc"})))
	if err != nil {
		t.Fatal(err)
	}
	defer cc.Close()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	u, _ := url.Parse(spiffe)
	der, err := x509.CreateCertificateRequest(rand.Reader, &x509.CertificateRequest{URIs: []*url.URL{u}}, key)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ctx = metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+string(tok))
	resp, err := securityapi.NewIstioCertificateServiceClient(cc).CreateCertificate(ctx, &securityapi.IstioCertificateRequest{
		Csr: string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE REQUEST", Bytes: der})),
	})
	return resp.GetCertChain(), err
}

func leafURI(t *testing.T, chain []string) string {
	t.Helper()
	if len(chain) == 0 {
		t.Fatal("empty certificate chain")
	}
	blk, _ := pem.Decode([]byte(chain[0]))
	if blk == nil {
		t.Fatalf("leaf is not PEM: %q", chain[0])
	}
	c, err := x509.ParseCertificate(blk.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	if len(c.URIs) != 1 {
		return fmt.Sprint(c.URIs)
	}
	return c.URIs[0].String()
}

// Every pod of `skiff up` gets its own identity: a token only it can read
// (0600) in its directory, which skiffd's CA on 15012 accepts for exactly
// that pod's spiffe://cluster.local/ns/NS/sa/SA; skiff status shows it; a
// pod scaled away takes its token with it.
func TestUpGivesEachPodAnIdentity(t *testing.T) {
	dir, state := t.TempDir(), t.TempDir()
	write(t, filepath.Join(dir, "service.yaml"), helloService)
	write(t, filepath.Join(dir, "deployment.yaml"), strings.Replace(helloDeployment(2),
		"    spec:\n      containers:", "    spec:\n      serviceAccountName: hello-sa\n      containers:", 1))
	write(t, filepath.Join(dir, "solo.yaml"), soloPod)
	up := startUp(t, dir, state)
	defer up.down(t, state)

	st, err := localmesh.ReadState(state)
	if err != nil {
		t.Fatal(err)
	}
	if st.SecureAddr == "" || !strings.HasPrefix(st.SecureAddr, "127.0.0.1:") {
		t.Fatalf("mesh.json secure_addr %q, want skiffd's CA on 127.0.0.1", st.SecureAddr)
	}
	want := map[string]string{} // pod → identity
	var hello []localmesh.PodState
	for _, p := range st.Pods {
		switch {
		case p.Gateway:
			want[p.Name] = "spiffe://cluster.local/ns/istio-system/sa/istio-ingressgateway-service-account"
		case p.Name == "solo":
			want[p.Name] = "spiffe://cluster.local/ns/default/sa/default"
		default:
			want[p.Name] = "spiffe://cluster.local/ns/default/sa/hello-sa"
			hello = append(hello, p)
		}
	}
	if len(hello) != 2 || len(want) != 4 {
		t.Fatalf("mesh.json lists %d pods (%d hello), want 2 hello, solo and the gateway", len(st.Pods), len(hello))
	}
	tokens, err := os.ReadFile(filepath.Join(state, "ca", "tokens.json"))
	if err != nil {
		t.Fatalf("skiffd's tokens file: %v", err)
	}
	podTokens := map[string][]byte{}
	for _, p := range st.Pods {
		if p.Identity != want[p.Name] {
			t.Errorf("mesh.json: pod %s identity %q, want %q", p.Name, p.Identity, want[p.Name])
		}
		tokenPath, rootPath := filepath.Join(p.PodDir, "istio-token"), filepath.Join(p.PodDir, "root-cert.pem")
		fi, err := os.Stat(tokenPath)
		if err != nil {
			t.Errorf("pod %s has no CA token: %v", p.Name, err)
			continue
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("pod %s token %s has mode %v, want 0600", p.Name, tokenPath, fi.Mode().Perm())
		}
		tok, _ := os.ReadFile(tokenPath)
		if len(tok) < 32 || strings.Contains(string(tokens), string(tok)) {
			t.Errorf("pod %s token is %d bytes or appears in skiffd's tokens file (it must hold only hashes)", p.Name, len(tok))
		}
		podTokens[p.Name] = tok
		chain, err := askCA(t, st, tok, rootPath, want[p.Name])
		if err != nil {
			t.Errorf("pod %s: CreateCertificate for its own identity %s: %v", p.Name, want[p.Name], err)
			continue
		}
		if got := leafURI(t, chain); got != want[p.Name] {
			t.Errorf("pod %s: certificate for %s, want %s", p.Name, got, want[p.Name])
		}
		// The same token asks for the other service account's identity.
		other := "spiffe://cluster.local/ns/default/sa/hello-sa"
		if want[p.Name] == other {
			other = "spiffe://cluster.local/ns/default/sa/default"
		}
		if _, err := askCA(t, st, tok, rootPath, other); status.Code(err) != codes.PermissionDenied {
			t.Errorf("pod %s asking for %s: %v; want PermissionDenied", p.Name, other, err)
		}
	}

	out := mustStatus(t, state)
	for _, p := range st.Pods {
		if !regexp.MustCompile(`(?m)^\S+\s+` + regexp.QuoteMeta(p.Name) + `\s.*\s` + regexp.QuoteMeta(want[p.Name]) + `\s`).MatchString(out) {
			t.Errorf("skiff status shows no identity %s for %s:\n%s", want[p.Name], p.Name, out)
		}
	}

	// Scale to one replica: the pod that goes loses its token.
	write(t, filepath.Join(dir, "deployment.yaml"), strings.Replace(helloDeployment(1),
		"    spec:\n      containers:", "    spec:\n      serviceAccountName: hello-sa\n      containers:", 1))
	var gone *localmesh.PodState
	eventually(t, 30*time.Second, "one hello pod stopping", func() (bool, string) {
		now, err := localmesh.ReadState(state)
		if err != nil {
			return false, err.Error()
		}
		for i := range hello {
			found := false
			for _, p := range now.Pods {
				found = found || p.Name == hello[i].Name
			}
			if !found {
				gone = &hello[i]
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d pods", len(now.Pods))
	})
	eventually(t, 30*time.Second, "the stopped pod's token refused", func() (bool, string) {
		_, err := askCA(t, st, podTokens[gone.Name], filepath.Join(gone.PodDir, "root-cert.pem"), want[gone.Name])
		return status.Code(err) == codes.Unauthenticated, fmt.Sprint(err)
	})
	if _, err := os.Stat(filepath.Join(gone.PodDir, "istio-token")); err == nil {
		t.Errorf("the stopped pod's token file is still in %s", gone.PodDir)
	}
}
