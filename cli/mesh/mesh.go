// Package mesh holds the local-mesh verbs of the skiff CLI: up, apply,
// delete, status and down. Each entry point parses its own flags and
// writes to the writers it is given; usage errors return 2.
package mesh

import (
	"flag"
	"fmt"
	"io"

	"github.com/skiff-mesh/skiff/cli/cliflags"
	"github.com/skiff-mesh/skiff/localmesh"
)

// parse parses args allowing flags after positional arguments ("skiff up
// DIR --gateway-port 0"), as kubectl and istioctl do.
func parse(fs *flag.FlagSet, args []string) ([]string, error) { return cliflags.Parse(fs, args) }

func newFlags(name, usage string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet("skiff "+name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "usage: %s\n\nflags:\n", usage)
		fs.PrintDefaults()
	}
	return fs
}

func stateDirFlag(fs *flag.FlagSet) *string {
	return fs.String("state-dir", localmesh.DefaultStateDir(), "the local mesh's state directory (mesh.json, logs); default $SKIFF_HOME, else ~/.skiff")
}

// client reads mesh.json for the control API's address.
func client(stateDir string) (*localmesh.Client, *localmesh.State, error) {
	st, err := localmesh.ReadState(stateDir)
	if err != nil {
		return nil, nil, err
	}
	return &localmesh.Client{Addr: st.APIAddr}, st, nil
}
