// Command bookinfo runs one service of Istio's Bookinfo sample:
//
//	bookinfo productpage|details|reviews|ratings [flags]
//
// Each listens on --listen (default :$PORT, else :9080) and finds the
// services it calls as Istio's samples do (DETAILS_HOSTNAME,
// REVIEWS_HOSTNAME, RATINGS_HOSTNAME, <NAME>_SERVICE_PORT, SERVICES_DOMAIN),
// or at the URLs given by --details-url, --reviews-url and --ratings-url.
// HTTP_PROXY is honoured for those calls.
package main

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
	"syscall"
	"time"

	"github.com/skiff-mesh/skiff/samples/bookinfo"
)

const usage = `usage: bookinfo productpage|details|reviews|ratings [flags]

Runs one service of Istio's Bookinfo sample. "bookinfo SERVICE -h" lists its flags.
`

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Getenv, os.Stderr); err != nil {
		if !errors.Is(err, flag.ErrHelp) {
			fmt.Fprintln(os.Stderr, "bookinfo:", err)
		}
		os.Exit(2)
	}
}

// run parses the service and its flags, builds the handler and serves it
// until ctx ends.
func run(ctx context.Context, args []string, getenv func(string) string, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errors.New("no service named")
	}
	service := args[0]
	fs := flag.NewFlagSet("bookinfo "+service, flag.ContinueOnError)
	fs.SetOutput(stderr)
	listen := fs.String("listen", defaultListen(getenv), "address to listen on, host:port (env PORT sets the port)")
	var h http.Handler
	switch service {
	case "productpage":
		cfg := bookinfo.ProductPageConfig{}
		fs.StringVar(&cfg.Details.URL, "details-url", bookinfo.ServiceURL("details", getenv), "base URL of the details service")
		fs.StringVar(&cfg.Reviews.URL, "reviews-url", bookinfo.ServiceURL("reviews", getenv), "base URL of the reviews service")
		fs.StringVar(&cfg.Ratings.URL, "ratings-url", bookinfo.ServiceURL("ratings", getenv), "base URL of the ratings service")
		fs.DurationVar(&cfg.Details.Timeout, "details-timeout", 3*time.Second, "time one call to details may take")
		fs.DurationVar(&cfg.Reviews.Timeout, "reviews-timeout", 3*time.Second, "time one attempt toward reviews may take")
		fs.DurationVar(&cfg.Ratings.Timeout, "ratings-timeout", 3*time.Second, "time one call to ratings may take")
		fs.IntVar(&cfg.ReviewsAttempts, "reviews-attempts", 2, "attempts toward reviews before showing the error")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		h = bookinfo.NewProductPage(cfg)
	case "details", "ratings":
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		h = bookinfo.NewDetails()
		if service == "ratings" {
			h = bookinfo.NewRatings()
		}
	case "reviews":
		cfg := bookinfo.ReviewsConfig{Podname: podName(getenv), Clustername: getenv("CLUSTER_NAME")}
		fs.StringVar(&cfg.Version, "version", envOr(getenv, "SERVICE_VERSION", "v1"), "v1 (no stars), v2 (black stars) or v3 (red stars); env SERVICE_VERSION")
		fs.StringVar(&cfg.Ratings.URL, "ratings-url", bookinfo.ServiceURL("ratings", getenv), "base URL of the ratings service")
		fs.DurationVar(&cfg.Ratings.Timeout, "ratings-timeout", 0, "time a call to ratings may take (default 10s for v2, 2.5s for v3)")
		if err := fs.Parse(args[1:]); err != nil {
			return err
		}
		var err error
		if h, err = bookinfo.NewReviews(cfg); err != nil {
			return err
		}
	default:
		fmt.Fprint(stderr, usage)
		return fmt.Errorf("unknown service %q: want productpage, details, reviews or ratings", service)
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q after the flags of %s", fs.Args(), service)
	}
	ln, err := net.Listen("tcp", *listen)
	if err != nil {
		return fmt.Errorf("--listen=%s: %w", *listen, err)
	}
	fmt.Fprintf(stderr, "bookinfo %s listening on %s\n", service, ln.Addr())
	return bookinfo.Serve(ctx, ln, service, h, stderr)
}

func defaultListen(getenv func(string) string) string {
	return ":" + envOr(getenv, "PORT", "9080")
}

// podName is what reviews reports as "podname": the local mesh sets
// POD_NAME, Kubernetes sets HOSTNAME to the pod's name.
func podName(getenv func(string) string) string {
	if n := getenv("POD_NAME"); n != "" {
		return n
	}
	if n := getenv("HOSTNAME"); n != "" {
		return n
	}
	n, _ := os.Hostname()
	return n
}

func envOr(getenv func(string) string, key, def string) string {
	if v := getenv(key); v != "" {
		return v
	}
	return def
}
