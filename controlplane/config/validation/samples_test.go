package validation

import (
	"io/fs"
	"path/filepath"
	"strings"
	"testing"

	"github.com/skiff-mesh/skiff/controlplane/config"
)

// samplesDir holds Istio's upstream samples, which must load unchanged.
const samplesDir = "../../../../shared/istio-samples"

func sampleFiles(t *testing.T) []string {
	t.Helper()
	var files []string
	err := filepath.WalkDir(samplesDir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() && (strings.HasSuffix(path, ".yaml") || strings.HasSuffix(path, ".yml")) {
			files = append(files, path)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) < 40 {
		t.Fatalf("found %d sample files under %s; expected Istio's samples", len(files), samplesDir)
	}
	return files
}

// TestSamplesValidateClean: every object in Istio's samples is valid. The
// warnings are the local-mesh one about containers without a command (the
// samples run images, which skiff up cannot start as processes) and the one
// Istio gives too: fault-injection-details-v1.yaml's second rule follows a
// rule without match, so it is never used.
func TestSamplesValidateClean(t *testing.T) {
	total, commandless := 0, 0
	var other []string
	for _, f := range sampleFiles(t) {
		for _, o := range decodeFile(t, f) {
			total++
			errs, warns := Split(Validate(o))
			for _, e := range errs {
				t.Errorf("%s: %v", o.Describe(), e)
			}
			for _, w := range warns {
				if strings.HasSuffix(w.Path, "].command") {
					commandless++
					continue
				}
				other = append(other, o.Describe()+": "+w.Error())
			}
		}
	}
	want := []string{filepath.Join(samplesDir, "bookinfo/networking/fault-injection-details-v1.yaml") + ":1: VirtualService/details: " +
		"warning: spec.http[1]: is never used: spec.http[0] matches every request before it; move the catch-all rule last"}
	if strings.Join(other, "\n") != strings.Join(want, "\n") {
		t.Errorf("warnings:\n%s\nwant:\n%s", strings.Join(other, "\n"), strings.Join(want, "\n"))
	}
	if commandless == 0 {
		t.Error("no container-without-command warning; the samples' Deployments run images only")
	}
	t.Logf("validated %d objects; %d containers without a command", total, commandless)
}

// loadLikeStore decodes files in order and keeps the last object of each
// key, as a store does when a later file redefines an object.
func loadLikeStore(t *testing.T, files []string) []*config.Object {
	t.Helper()
	byKey := map[config.Key]int{}
	var objs []*config.Object
	for _, f := range files {
		for _, o := range decodeFile(t, f) {
			if i, ok := byKey[o.Key()]; ok {
				objs[i] = o
				continue
			}
			byKey[o.Key()] = len(objs)
			objs = append(objs, o)
		}
	}
	return objs
}
