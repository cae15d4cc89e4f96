package mesh

import (
	"context"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"

	"github.com/skiff-mesh/skiff/localmesh"
)

// Apply is `skiff apply -f FILE|DIR`: the objects are added to the running
// mesh (or replace what an earlier apply added); errors name file:line.
func Apply(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return send(ctx, "apply", args, stdout, stderr, (*localmesh.Client).Apply)
}

// Delete is `skiff delete -f FILE|DIR`: the objects an earlier apply
// added are removed.
func Delete(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	return send(ctx, "delete", args, stdout, stderr, (*localmesh.Client).Delete)
}

func send(ctx context.Context, verb string, args []string, stdout, stderr io.Writer,
	call func(*localmesh.Client, context.Context, string, []byte) (*localmesh.ApplyResult, error)) int {
	fset := newFlags(verb, "skiff "+verb+" -f FILE|DIR [flags]", stderr)
	stateDir := stateDirFlag(fset)
	file := fset.String("f", "", "a manifest file, or a directory of them (*.yaml, *.yml, *.json, recursively)")
	pos, err := parse(fset, args)
	if err != nil {
		return 2
	}
	if *file == "" || len(pos) > 0 {
		fmt.Fprintf(stderr, "skiff %s: name the manifests with -f: skiff %s -f FILE|DIR\n", verb, verb)
		return 2
	}
	files, err := manifests(*file)
	if err != nil {
		fmt.Fprintf(stderr, "skiff %s: %v\n", verb, err)
		return 1
	}
	c, _, err := client(*stateDir)
	if err != nil {
		fmt.Fprintf(stderr, "skiff %s: %v\n", verb, err)
		return 1
	}
	code := 0
	for _, f := range files {
		data, err := os.ReadFile(f)
		if err != nil {
			fmt.Fprintf(stderr, "skiff %s: %v\n", verb, err)
			code = 1
			continue
		}
		res, err := call(c, ctx, f, data)
		if err != nil {
			fmt.Fprintf(stderr, "skiff %s: %v\n", verb, err)
			return 1
		}
		for _, o := range res.Objects {
			name := o.Name
			if o.Namespace != "" {
				name = o.Namespace + "/" + o.Name
			}
			fmt.Fprintf(stdout, "%s %s %s\n", o.Kind, name, o.Outcome)
			if o.Outcome == "rejected" || o.Outcome == "not deleted" {
				code = 1
			}
		}
		for _, e := range res.Errors {
			fmt.Fprintln(stderr, e)
			code = 1
		}
	}
	return code
}

// manifests lists the manifest files at path: the file itself, or every
// *.yaml, *.yml and *.json under a directory, in name order.
func manifests(path string) ([]string, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, err
	}
	fi, err := os.Stat(abs)
	if err != nil {
		return nil, err
	}
	if !fi.IsDir() {
		return []string{abs}, nil
	}
	var out []string
	err = filepath.WalkDir(abs, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		switch filepath.Ext(p) {
		case ".yaml", ".yml", ".json":
			if !d.IsDir() {
				out = append(out, p)
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("%s holds no manifests (*.yaml, *.yml, *.json)", path)
	}
	sort.Strings(out)
	return out, nil
}
