package localmesh

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"time"

	"github.com/skiff-mesh/skiff/controlplane/ca"
)

// Identity in the local mesh, as Kubernetes gives it: each pod's sidecar
// proves who it is with a credential only it can read (there a projected
// service-account token, here a random token the supervisor mints), and
// skiffd's CA signs exactly that pod's spiffe://cluster.local/ns/NS/sa/SA.
// skiffd learns the tokens through a file of their hashes, which outlives
// its restarts; the tokens themselves exist only in the pods' directories.

// localTrustDomain is the local mesh's: skiffd's default, Istio's.
const localTrustDomain = "cluster.local"

// Files under STATE/ca.
const (
	caStateDir     = "ca"
	caSelfSigned   = "self-signed"   // skiffd --ca-dir: the root and its key
	caTokensFile   = "tokens.json"   // skiffd --bootstrap-tokens
	caRootCertFile = "root-cert.pem" // skiffd --root-cert-out: the trust bundle
)

// Files in a pod's directory, next to its bootstrap (Istio mounts them at
// ./var/run/secrets/tokens/istio-token and ./var/run/secrets/istio/root-cert.pem).
const (
	podTokenFile    = "istio-token"
	podRootCertFile = "root-cert.pem"
)

func spiffeID(ns, sa string) string {
	return "spiffe://" + localTrustDomain + "/ns/" + ns + "/sa/" + sa
}

// podTokens is the supervisor's side of the tokens file: one token per
// running pod, keyed by the pod's UID (a bare Pod replaced under the same
// name gets a new one while the old one is still stopping).
type podTokens struct {
	path string

	mu   sync.Mutex
	recs map[string]ca.TokenRecord
}

// newPodTokens starts an empty tokens file: pods of an earlier run are gone.
func newPodTokens(path string) (*podTokens, error) {
	t := &podTokens{path: path, recs: map[string]ca.TokenRecord{}}
	if err := t.writeLocked(); err != nil {
		return nil, err
	}
	return t, nil
}

// mint makes p's token, records its hash for skiffd and returns it.
func (t *podTokens) mint(p *pod) (string, error) {
	raw := make([]byte, 32)
	if _, err := rand.Read(raw); err != nil {
		return "", fmt.Errorf("minting the pod's CA token: %w", err)
	}
	tok := base64.RawURLEncoding.EncodeToString(raw)
	t.mu.Lock()
	defer t.mu.Unlock()
	t.recs[p.uid] = ca.TokenRecord{SHA256: ca.HashToken(tok), Namespace: p.namespace, ServiceAccount: p.serviceAccount}
	if err := t.writeLocked(); err != nil {
		delete(t.recs, p.uid)
		return "", err
	}
	return tok, nil
}

// forget revokes p's token once the pod is gone, and removes its copy.
func (t *podTokens) forget(p *pod) error {
	if p.tokenPath != "" {
		os.Remove(p.tokenPath)
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.recs[p.uid]; !ok {
		return nil
	}
	delete(t.recs, p.uid)
	return t.writeLocked()
}

func (t *podTokens) writeLocked() error {
	recs := make([]ca.TokenRecord, 0, len(t.recs))
	for _, r := range t.recs {
		recs = append(recs, r)
	}
	if err := ca.WriteTokenRecords(t.path, recs); err != nil {
		return fmt.Errorf("skiffd's bootstrap tokens file: %w", err)
	}
	return nil
}

// writePodCredentials gives the pod's proxy its token (0600, owned by the
// proxy's UID when it runs as 1337) and a copy of the trust bundle that
// verifies skiffd's 15012. It returns their paths.
func (rt *podRuntime) writePodCredentials(p *pod, podDir string) (tokenPath, rootPath string, err error) {
	tok, err := rt.tokens.mint(p)
	if err != nil {
		return "", "", err
	}
	tokenPath, rootPath = filepath.Join(podDir, podTokenFile), filepath.Join(podDir, podRootCertFile)
	p.tokenPath = tokenPath
	if err := os.WriteFile(tokenPath, []byte(tok), 0o600); err != nil {
		return "", "", fmt.Errorf("pod CA token: %w", err)
	}
	if err := os.Chmod(tokenPath, 0o600); err != nil { // an earlier pod's file of the same name kept its mode
		return "", "", fmt.Errorf("pod CA token: %w", err)
	}
	if !rt.loopback {
		if err := os.Chown(tokenPath, proxyUID, proxyUID); err != nil {
			return "", "", fmt.Errorf("pod CA token for the proxy's UID %d: %w", proxyUID, err)
		}
	}
	roots, err := os.ReadFile(rt.rootCert)
	if err != nil {
		return "", "", fmt.Errorf("skiffd's trust bundle (--root-cert-out): %w", err)
	}
	if err := os.WriteFile(rootPath, roots, 0o644); err != nil {
		return "", "", fmt.Errorf("pod root certificate: %w", err)
	}
	return tokenPath, rootPath, nil
}

// proxyUID is the sidecar's UID in a captured pod (Istio's 1337).
const proxyUID = 1337

// identityArgs are the flags and environment that turn on a sidecar's
// identity agent (the shared contract with skiff-proxy): its CA, token,
// roots and trust domain. Nil when the skiff-proxy in use does not take
// them yet (see proxyHasAgent).
func (rt *podRuntime) identityArgs(tokenPath, rootPath string) (args, env []string) {
	if !rt.agent {
		return nil, nil
	}
	return []string{"--ca-addr", rt.secureAddr, "--ca-token-file", tokenPath, "--ca-root-cert", rootPath},
		[]string{"TRUST_DOMAIN=" + localTrustDomain}
}

// proxyHasAgent is whether skiff-proxy has the identity agent (its --help
// lists --ca-addr), so a mesh built with an older one still runs, in
// plaintext.
func proxyHasAgent(ctx context.Context, proxyPath string) bool {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	out, _ := exec.CommandContext(ctx, proxyPath, "-h").CombinedOutput() // -h exits 0 or 2; the text is what counts
	return bytes.Contains(out, []byte("-ca-addr"))
}
