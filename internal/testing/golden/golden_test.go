package golden

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/wrapperspb"
)

// recorder is a testing.TB that records failures instead of failing.
type recorder struct {
	testing.TB
	errs []string
}

func (r *recorder) Helper() {}
func (r *recorder) Errorf(format string, a ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, a...))
}
func (r *recorder) Fatalf(format string, a ...any) {
	r.errs = append(r.errs, fmt.Sprintf(format, a...))
}
func (r *recorder) Fatal(a ...any) { r.errs = append(r.errs, fmt.Sprint(a...)) }

// TestCompare checks a match passes, a mismatch fails naming the first
// differing line, and a missing file says how to create it.
func TestCompare(t *testing.T) {
	path := filepath.Join(t.TempDir(), "out.json")
	got := MarshalProtos(t, []proto.Message{wrapperspb.String("a"), wrapperspb.UInt32(7)})
	if want := "[\n  \"a\",\n  7\n]\n"; string(got) != want {
		t.Fatalf("MarshalProtos = %q, want %q", got, want)
	}
	r := &recorder{}
	Compare(r, path, got)
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "run the test with -update") {
		t.Errorf("missing file: %q", r.errs)
	}
	if err := os.WriteFile(path, got, 0o644); err != nil {
		t.Fatal(err)
	}
	r = &recorder{}
	Compare(r, path, got)
	if len(r.errs) != 0 {
		t.Errorf("equal output failed: %q", r.errs)
	}
	Compare(r, path, []byte("[\n  \"b\",\n  7\n]\n"))
	if len(r.errs) != 1 || !strings.Contains(r.errs[0], "-   \"a\",\n+   \"b\",\n(line 2)") {
		t.Errorf("mismatch report = %q", r.errs)
	}
}
