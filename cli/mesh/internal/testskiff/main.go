// Command testskiff runs the local-mesh verbs as the skiff binary does, so
// the package's tests drive real processes (cmd/skiff dispatches to the
// same entry points).
package main

import (
	"context"
	"fmt"
	"io"
	"os"

	"github.com/skiff-mesh/skiff/cli/mesh"
)

func main() {
	verbs := map[string]func(context.Context, []string, io.Writer, io.Writer) int{
		"up": mesh.Up, "apply": mesh.Apply, "delete": mesh.Delete, "status": mesh.Status, "down": mesh.Down,
		mesh.SkiffdVerb: mesh.Skiffd,
	}
	if len(os.Args) < 2 || verbs[os.Args[1]] == nil {
		fmt.Fprintln(os.Stderr, "usage: testskiff up|apply|delete|status|down ...")
		os.Exit(2)
	}
	os.Exit(verbs[os.Args[1]](context.Background(), os.Args[2:], os.Stdout, os.Stderr))
}
