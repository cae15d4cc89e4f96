// Command xds-load measures skiffd under a large mesh: it writes N services
// × M endpoints as Kubernetes-style YAML into skiffd's config directory,
// connects P simulated sidecars over real ADS streams, then times
// VirtualService and endpoint changes until every proxy has ACKed them,
// sampling skiffd's memory and CPU. It prints a table, then the same
// figures as JSON, and exits 1 if a change never reached every proxy or a
// proxy could not decode what it received.
package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"os"
	"runtime/pprof"
	"time"

	"github.com/skiff-mesh/skiff/internal/xdsload"
)

// options are the command's flags.
type options struct {
	run         xdsload.Options
	total       time.Duration
	jsonPath    string
	keep        bool
	cpuProf     string
	profChanges bool
	memProf     string
}

func main() {
	o, err := parse(os.Args[1:], os.Stderr)
	if err != nil {
		os.Exit(2)
	}
	os.Exit(run(o, os.Stdout, os.Stderr))
}

func parse(args []string, stderr io.Writer) (*options, error) {
	fs := flag.NewFlagSet("xds-load", flag.ContinueOnError)
	fs.SetOutput(stderr)
	o := &options{}
	r := &o.run
	fs.IntVar(&r.Spec.Services, "services", 1000, "services in the generated mesh")
	fs.IntVar(&r.Spec.Endpoints, "endpoints", 2, "pods per service")
	fs.IntVar(&r.Spec.Namespaces, "namespaces", 10, "namespaces the services are spread over")
	fs.IntVar(&r.Spec.SplitEvery, "split-every", 2, "every Nth service gets a v1/v2 weighted split and DestinationRule subsets")
	fs.BoolVar(&r.Spec.Private, "private", false, "export every VirtualService and DestinationRule to its own namespace alone (exportTo: [\".\"]); a VirtualService change is then timed over that namespace's proxies")
	fs.IntVar(&r.Spec.Port, "port", 8080, "service port")
	fs.IntVar(&r.Proxies, "proxies", 2000, "simulated sidecars, one per generated pod (at most services × endpoints)")
	fs.BoolVar(&r.Fleet.Delta, "delta", false, "use delta xDS instead of state of the world")
	fs.IntVar(&r.Fleet.ProxiesPerConn, "per-conn", 50, "proxies sharing one gRPC connection (1: a connection per proxy)")
	fs.IntVar(&r.Reps, "reps", 20, "VirtualService changes and endpoint changes to time, each")
	fs.Func("only", "`KIND` of change to make alone, virtualservice or endpoint (to profile one kind); default both, in turn", func(v string) error {
		if v != "virtualservice" && v != "endpoint" {
			return fmt.Errorf("want virtualservice or endpoint")
		}
		r.Only = v
		return nil
	})
	fs.StringVar(&r.Dir, "dir", "", "config directory to write the mesh into (default: a new temporary directory); must be the one skiffd reads when -skiffd is not given")
	fs.StringVar(&r.Skiffd, "skiffd", "", "skiffd binary to start on -dir with loopback ports (otherwise give -xds-addr, and -pid to sample it)")
	fs.StringVar(&r.SkiffdLog, "skiffd-log", "", "file for the started skiffd's output")
	fs.Func("skiffd-arg", "a further flag for the started skiffd, e.g. -skiffd-arg=--log-level=debug (repeatable)", func(v string) error {
		r.SkiffdArgs = append(r.SkiffdArgs, v)
		return nil
	})
	fs.StringVar(&r.Fleet.Addr, "xds-addr", "127.0.0.1:15010", "xDS address of an already running skiffd")
	fs.IntVar(&r.PID, "pid", 0, "pid of an already running skiffd, to sample its memory and CPU")
	fs.DurationVar(&r.SyncTimeout, "sync-timeout", 2*time.Minute, "limit for the initial sync of every proxy")
	fs.DurationVar(&r.ChangeTimeout, "change-timeout", 30*time.Second, "limit for one change to reach every proxy")
	fs.DurationVar(&r.Gap, "gap", 500*time.Millisecond, "pause between changes (longer than skiffd's debounce)")
	fs.DurationVar(&o.total, "t", 15*time.Minute, "limit for the whole run")
	fs.StringVar(&o.jsonPath, "json", "", "also write the JSON report to this file")
	fs.BoolVar(&o.keep, "keep", false, "keep the temporary config directory")
	fs.StringVar(&o.cpuProf, "cpuprofile", "", "write the load tool's own CPU profile here, to check it is not what limits the figures")
	fs.BoolVar(&o.profChanges, "profile-changes", false, "start the -cpuprofile once every proxy is synced, so it covers the changes alone")
	fs.StringVar(&o.memProf, "memprofile", "", "write the load tool's own heap profile here once every proxy is synced")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "xds-load: unexpected argument %q; all settings are flags (see -h)\n", fs.Arg(0))
		return nil, fmt.Errorf("unexpected arguments")
	}
	return o, nil
}

func run(o *options, stdout, stderr io.Writer) int {
	if o.run.Dir == "" {
		dir, err := os.MkdirTemp("", "xds-load-")
		if err != nil {
			fmt.Fprintln(stderr, "xds-load:", err)
			return 1
		}
		if !o.keep {
			defer os.RemoveAll(dir)
		}
		o.run.Dir = dir
	}
	o.run.Progress = stderr
	if o.cpuProf != "" {
		f, err := os.Create(o.cpuProf)
		if err != nil {
			fmt.Fprintln(stderr, "xds-load: -cpuprofile:", err)
			return 1
		}
		defer f.Close()
		defer pprof.StopCPUProfile()
		start := func() {
			if err := pprof.StartCPUProfile(f); err != nil {
				fmt.Fprintln(stderr, "xds-load: -cpuprofile:", err)
			}
		}
		if o.profChanges {
			o.run.Synced = start
		} else {
			start()
		}
	}
	if o.memProf != "" {
		f, err := os.Create(o.memProf)
		if err != nil {
			fmt.Fprintln(stderr, "xds-load: -memprofile:", err)
			return 1
		}
		defer f.Close()
		o.run.HeapProfile = f
	}
	ctx, cancel := context.WithTimeout(context.Background(), o.total)
	defer cancel()
	rep, err := xdsload.Run(ctx, o.run)
	if rep == nil {
		fmt.Fprintln(stderr, "xds-load:", err)
		return 1
	}
	fmt.Fprintln(stdout)
	rep.WriteTable(stdout)
	fmt.Fprintln(stdout)
	if err := rep.WriteJSON(stdout); err != nil {
		fmt.Fprintln(stderr, "xds-load:", err)
		return 1
	}
	if o.jsonPath != "" {
		f, err := os.Create(o.jsonPath)
		if err == nil {
			err = rep.WriteJSON(f)
			if cerr := f.Close(); err == nil {
				err = cerr
			}
		}
		if err != nil {
			fmt.Fprintln(stderr, "xds-load: writing the JSON report:", err)
			return 1
		}
	}
	code := 0
	if err != nil {
		fmt.Fprintf(stderr, "xds-load: the run stopped early after %v (raise -t): %v\n", o.total, err)
		code = 1
	}
	if rep.VirtualService.Complete < rep.VirtualService.Reps || rep.Endpoint.Complete < rep.Endpoint.Reps {
		fmt.Fprintln(stderr, "xds-load: some changes did not reach every proxy within -change-timeout (see \"incomplete\" above)")
		code = 1
	}
	if rep.DecodeErrors > 0 {
		fmt.Fprintln(stderr, "xds-load: proxies received resources they could not decode")
		code = 1
	}
	return code
}
