// Package golden compares generated output with files under testdata and
// rewrites them when tests run with -update, as Istio's pilot/test/util
// does. Protos are compared in their protojson form, indented and with
// stable field order, so a diff reads like proxy-config output.
package golden

import (
	"bytes"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	"google.golang.org/protobuf/encoding/protojson"
	"google.golang.org/protobuf/proto"
)

var update = flag.Bool("update", false, "rewrite golden files with the current output")

// MarshalProtos renders protos (of any one message type, or mixed as
// []proto.Message) as one indented JSON array. Any-typed fields are
// expanded, so the messages' types must be linked into the test.
func MarshalProtos[M proto.Message](t testing.TB, msgs []M) []byte {
	t.Helper()
	parts := make([]json.RawMessage, 0, len(msgs))
	for _, m := range msgs {
		b, err := protojson.Marshal(m)
		if err != nil {
			t.Fatalf("golden: marshal %T: %v", m, err)
		}
		parts = append(parts, b)
	}
	raw, err := json.Marshal(parts)
	if err != nil {
		t.Fatalf("golden: %v", err)
	}
	// protojson's spacing is deliberately unstable; re-indent with encoding/json.
	var out bytes.Buffer
	if err := json.Indent(&out, raw, "", "  "); err != nil {
		t.Fatalf("golden: %v", err)
	}
	out.WriteByte('\n')
	return out.Bytes()
}

// Compare checks got against the file at path, or rewrites the file when
// the test runs with -update. A mismatch fails the test with the first
// differing lines.
func Compare(t testing.TB, path string, got []byte) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("golden: %v (run the test with -update to create it)", err)
		return
	}
	if !bytes.Equal(want, got) {
		t.Errorf("golden: %s differs (run with -update to accept):\n%s", path, diff(string(want), string(got)))
	}
}

// diff shows the first differing line with a little context.
func diff(want, got string) string {
	w, g := strings.Split(want, "\n"), strings.Split(got, "\n")
	for i := 0; i < len(w) || i < len(g); i++ {
		var wl, gl string
		if i < len(w) {
			wl = w[i]
		}
		if i < len(g) {
			gl = g[i]
		}
		if wl != gl {
			from := max(0, i-3)
			ctx := strings.Join(g[from:i], "\n")
			return ctx + "\n- " + wl + "\n+ " + gl + "\n(line " + strconv.Itoa(i+1) + ")"
		}
	}
	return ""
}
