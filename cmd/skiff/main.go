// Command skiff is Skiff's command line (istioctl's job). Today it has
// `skiff version`; the local mesh, install and inspection verbs arrive with
// their issues.
package main

import (
	"fmt"
	"io"
	"os"
)

// Version is the CLI's version.
var Version = "0.1.0-dev"

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintln(stdout, "usage: skiff version")
		return 0
	}
	switch args[0] {
	case "version":
		fmt.Fprintln(stdout, "skiff version", Version)
		return 0
	}
	fmt.Fprintf(stderr, "skiff: unknown command %q; run 'skiff help'\n", args[0])
	return 2
}
