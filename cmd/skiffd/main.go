// Command skiffd is Skiff's control plane (Istio's Pilot, Citadel, Galley
// and sidecar injector). Its xDS generation arrives with the control-plane
// issue; today it answers --version and says what it does not do yet.
package main

import (
	"flag"
	"fmt"
	"os"
)

// Version is skiffd's version.
var Version = "0.1.0-dev"

func main() {
	fs := flag.NewFlagSet("skiffd", flag.ContinueOnError)
	version := fs.Bool("version", false, "print the version and exit")
	if err := fs.Parse(os.Args[1:]); err != nil {
		os.Exit(2)
	}
	if *version {
		fmt.Println("skiffd version", Version)
		return
	}
	fmt.Fprintln(os.Stderr, "skiffd: the control plane is not built yet; run skiff-proxy -c BOOTSTRAP against any xDS server meanwhile")
	os.Exit(1)
}
