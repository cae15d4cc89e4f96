// Package dashboard is `skiff dashboard`: the mesh dashboard
// (controlplane/dashboard) served locally against the running local mesh
// or a skiffd's monitoring address, with its metrics from Prometheus when
// there is one and from the proxies themselves otherwise.
package dashboard

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"syscall"
	"time"

	"github.com/skiff-mesh/skiff/cli/cliflags"
	dash "github.com/skiff-mesh/skiff/controlplane/dashboard"
	"github.com/skiff-mesh/skiff/localmesh"
)

// Options is the command line of `skiff dashboard`.
type Options struct {
	Address    string // listen host (default 127.0.0.1)
	Port       int    // default 20001, Kiali's; 0 picks a free one
	Prometheus string // Prometheus base URL; "" uses the local mesh's, if it runs one
	Skiffd     string // a skiffd's monitoring address; "" uses the local mesh's
	StateDir   string // the local mesh's state directory
	Interval   time.Duration
}

// Run is `skiff dashboard`: it serves until ctx ends or Ctrl-C.
func Run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	o := Options{StateDir: localmesh.DefaultStateDir()}
	fs := flag.NewFlagSet("dashboard", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: skiff dashboard [--port N] [--prometheus URL] [--skiffd HOST:PORT] [--state-dir DIR]")
		fmt.Fprintln(stderr, "\nServes the mesh dashboard (service graph, services, config, proxies) and prints its URL.")
		fs.PrintDefaults()
	}
	fs.StringVar(&o.Address, "address", "127.0.0.1", "address to serve the dashboard on")
	fs.IntVar(&o.Port, "port", 20001, "port to serve the dashboard on (0 picks a free one)")
	fs.StringVar(&o.Prometheus, "prometheus", "", "Prometheus base URL to read Istio's metrics from (default: the local mesh's, started by skiff up --prometheus; else the dashboard scrapes the proxies itself)")
	fs.StringVar(&o.Skiffd, "skiffd", "", "a skiffd's monitoring address HOST:PORT (default: the running local mesh's)")
	fs.StringVar(&o.StateDir, "state-dir", o.StateDir, "the local mesh's state directory")
	fs.DurationVar(&o.Interval, "scrape-interval", 5*time.Second, "how often the dashboard scrapes the proxies when it has no Prometheus")
	pos, err := cliflags.Parse(fs, args)
	if err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return 0
		}
		return 2
	}
	if len(pos) != 0 {
		fmt.Fprintf(stderr, "skiff dashboard: unexpected argument %q; it takes flags only (skiff dashboard -h)\n", pos[0])
		return 2
	}
	ctx, stop := signal.NotifyContext(ctx, os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := o.Serve(ctx, stdout); err != nil {
		fmt.Fprintln(stderr, "skiff dashboard:", err)
		return 1
	}
	return 0
}

// Serve resolves the sources, listens, prints the URL and serves until
// ctx ends.
func (o Options) Serve(ctx context.Context, stdout io.Writer) error {
	d, err := o.resolve(ctx)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(o.Address, strconv.Itoa(o.Port)))
	if err != nil {
		return fmt.Errorf("--port %d: %w; pass another port (--port 0 picks a free one)", o.Port, err)
	}
	if s, ok := d.Source.(*dash.Scraper); ok {
		go s.Run(ctx)
	}
	mux := http.NewServeMux()
	mux.Handle("/dashboard/", dash.Handler(d))
	mux.Handle("/{$}", http.RedirectHandler("/dashboard/", http.StatusFound))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
	fmt.Fprintf(stdout, "dashboard: http://%s/dashboard/ (metrics from %s)\n", ln.Addr(), d.Source.Describe())
	go func() {
		<-ctx.Done()
		shut, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		srv.Shutdown(shut)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

// resolve picks the config, sync-state and metrics sources.
func (o Options) resolve(ctx context.Context) (dash.Options, error) {
	var d dash.Options
	mon := o.Skiffd
	var targets func(context.Context) ([]dash.Target, error)
	if mon == "" {
		st, err := localmesh.ReadState(o.StateDir)
		if err != nil {
			return d, fmt.Errorf("%w; or give a skiffd with --skiffd HOST:15014", err)
		}
		mon = st.MonitoringAddr
		if o.Prometheus == "" {
			if ps, err := localmesh.ReadPrometheus(o.StateDir); err == nil {
				o.Prometheus = ps.URL
			}
		}
		targets = meshTargets(o.StateDir)
	}
	d.Config, d.Syncz = dash.Remote(mon)
	if targets == nil {
		targets = dash.SynczTargets(d.Syncz)
	}
	if o.Prometheus != "" {
		d.Source = &dash.Prometheus{URL: o.Prometheus}
	} else {
		d.Source = &dash.Scraper{Targets: targets, Interval: o.Interval}
	}
	return d, nil
}

// meshTargets lists the local mesh's proxies from its control API (pods
// come and go), each on its Istio stats port.
func meshTargets(stateDir string) func(context.Context) ([]dash.Target, error) {
	return func(ctx context.Context) ([]dash.Target, error) {
		st, err := localmesh.ReadState(stateDir)
		if err != nil {
			return nil, err
		}
		rep, err := (&localmesh.Client{Addr: st.APIAddr}).Status(ctx)
		if err != nil {
			return nil, fmt.Errorf("asking the local mesh for its pods: %w", err)
		}
		var out []dash.Target
		for _, p := range rep.Pods {
			if p.Admin == "" || p.IP == "" {
				continue // no proxy
			}
			out = append(out, dash.Target{Name: p.Namespace + "/" + p.Name, URL: dash.ProxyStatsURL(p.IP)})
		}
		return out, nil
	}
}
