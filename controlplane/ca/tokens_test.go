package ca_test

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/metadata"

	"github.com/skiff-mesh/skiff/controlplane/ca"
)

func bearer(tok string) context.Context {
	return metadata.NewIncomingContext(context.Background(), metadata.Pairs("authorization", "Bearer "+tok))
}

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuf) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

func TestParseTokenRecords(t *testing.T) {
	h := ca.HashToken("x")
	for _, tc := range []struct {
		name, in string
		n        int
		err      []string
	}{
		{"lines", "# local mesh\n{\"sha256\":\"" + h + "\",\"namespace\":\"a\",\"serviceAccount\":\"b\"}\n\n{\"sha256\":\"" + h + "\",\"namespace\":\"c\",\"serviceAccount\":\"d\",\"expires\":\"2030-01-01T00:00:00Z\"}\n", 2, nil},
		{"array", "[\n {\"sha256\":\"" + h + "\",\"namespace\":\"a\",\"serviceAccount\":\"b\"}\n]", 1, nil},
		{"empty", "", 0, nil},
		{"bad json line", "{\"sha256\":\"" + h + "\",\"namespace\":\"a\",\"serviceAccount\":\"b\"}\n{oops\n", 0, []string{"tokens.json line 2:", "one JSON object"}},
		{"not a hash", "{\"sha256\":\"hunter2\",\"namespace\":\"a\",\"serviceAccount\":\"b\"}\n", 0, []string{"line 1: .sha256", "64 hex digits", "never the token"}},
		{"no namespace", "{\"sha256\":\"" + h + "\",\"serviceAccount\":\"b\"}\n", 0, []string{"line 1: .namespace: missing"}},
		{"unknown field", "{\"sha256\":\"" + h + "\",\"namespace\":\"a\",\"serviceAccount\":\"b\",\"token\":\"x\"}\n", 0, []string{"line 1:", "unknown field \"token\""}},
		{"array error line", "[\n {\"sha256\":\"" + h + "\",\"namespace\":\"a\",\"serviceAccount\":\"b\"},\n {\"sha256\": 5}\n]", 0, []string{"tokens.json line 3:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			recs, err := ca.ParseTokenRecords([]byte(tc.in), "tokens.json")
			if len(tc.err) == 0 {
				if err != nil || len(recs) != tc.n {
					t.Fatalf("got %d records, %v; want %d", len(recs), err, tc.n)
				}
				return
			}
			if err == nil {
				t.Fatalf("accepted: %+v", recs)
			}
			for _, w := range tc.err {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not say %q", err, w)
				}
			}
		})
	}
}

// The tokens file as skiffd follows it: written by the supervisor, reread
// on change, expiry honoured, a malformed rewrite logged with its line and
// the last good table kept.
func TestTokensFileFollowsTheFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokens.json")
	now := time.Now()
	clock := func() time.Time { return now }
	if err := ca.WriteTokenRecords(path, []ca.TokenRecord{
		{SHA256: ca.HashToken("alpha"), Namespace: "default", ServiceAccount: "reviews"},
		{SHA256: ca.HashToken("old"), Namespace: "default", ServiceAccount: "ratings", Expires: now.Add(-time.Second)},
	}); err != nil {
		t.Fatal(err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o600 {
		t.Errorf("tokens file mode %v, want 0600", fi.Mode().Perm())
	}
	var logs syncBuf
	tf, err := ca.NewTokensFile(path, ca.TokensFileOptions{Logger: slog.New(slog.NewTextHandler(&logs, nil)), Now: clock})
	if err != nil {
		t.Fatal(err)
	}
	id, err := tf.Authenticate(bearer("alpha"))
	if err != nil || id.Namespace != "default" || id.ServiceAccount != "reviews" {
		t.Fatalf("alpha: %+v, %v; want default/reviews", id, err)
	}
	if _, err := tf.Authenticate(bearer("old")); !errors.Is(err, ca.ErrUnauthenticated) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("expired token: %v; want unauthenticated, expired", err)
	}
	if _, err := tf.Authenticate(bearer("nope")); !errors.Is(err, ca.ErrUnauthenticated) || !strings.Contains(err.Error(), path) {
		t.Errorf("unknown token: %v; want unauthenticated naming %s", err, path)
	}

	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go tf.Run(ctx)
	time.Sleep(50 * time.Millisecond) // the watch is in place

	ca.WriteTokenRecords(path, []ca.TokenRecord{{SHA256: ca.HashToken("beta"), Namespace: "shop", ServiceAccount: "cart"}})
	waitFor(t, "beta accepted and alpha revoked", func() bool {
		_, errA := tf.Authenticate(bearer("alpha"))
		id, errB := tf.Authenticate(bearer("beta"))
		return errA != nil && errB == nil && id.ServiceAccount == "cart"
	})

	os.WriteFile(path, []byte("{\"sha256\":\""+ca.HashToken("gamma")+"\",\"namespace\":\"a\",\"serviceAccount\":\"b\"}\n{\"sha256\": \"zz\"\n"), 0o600)
	waitFor(t, "the malformed file logged with its line", func() bool {
		return strings.Contains(logs.String(), "line 2")
	})
	if _, err := tf.Authenticate(bearer("beta")); err != nil {
		t.Errorf("after a malformed rewrite, beta: %v; want the last good table kept", err)
	}
	if _, err := tf.Authenticate(bearer("gamma")); err == nil {
		t.Errorf("gamma from the malformed file was accepted")
	}
	os.Remove(path)
	waitFor(t, "a removed file revokes every token", func() bool { return tf.Len() == 0 })
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
		if cond() {
			return
		}
	}
	t.Fatalf("not within 5 s: %s", what)
}
