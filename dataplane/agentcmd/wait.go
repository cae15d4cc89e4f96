package agentcmd

import (
	"context"
	"flag"
	"fmt"
	"io"
	"net/http"
	"time"
)

// DefaultReadyURL is what `skiff-proxy wait` polls unless told otherwise.
const DefaultReadyURL = "http://localhost:15021/healthz/ready"

// WaitOptions are `skiff-proxy wait`'s flags, pilot-agent's names and
// defaults.
type WaitOptions struct {
	Timeout        time.Duration // --timeoutSeconds, 60
	RequestTimeout time.Duration // --requestTimeoutMillis, 500
	Period         time.Duration // --periodMillis, 500
	URL            string        // --url
}

// Wait polls o.URL until it answers 200, or returns an error naming the
// last failure once o.Timeout has passed (or ctx ends).
func Wait(ctx context.Context, o WaitOptions) error {
	client := &http.Client{Timeout: o.RequestTimeout}
	deadline := time.NewTimer(o.Timeout)
	defer deadline.Stop()
	tick := time.NewTicker(o.Period)
	defer tick.Stop()
	var last error
	for {
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-deadline.C:
			if last == nil {
				last = fmt.Errorf("no attempt finished")
			}
			return fmt.Errorf("the proxy was not ready within %s at %s: last attempt: %v", o.Timeout, o.URL, last)
		case <-tick.C:
			if last = checkReady(ctx, client, o.URL); last == nil {
				return nil
			}
		}
	}
}

func checkReady(ctx context.Context, client *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(io.LimitReader(resp.Body, 512))
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP status %d: %s", resp.StatusCode, body)
	}
	return nil
}

// RunWait is `skiff-proxy wait [--timeoutSeconds N] [--periodMillis N]
// [--requestTimeoutMillis N] [--url URL]`: exit 0 once ready, 1 at the
// timeout, 2 on bad flags.
func RunWait(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("skiff-proxy wait", flag.ContinueOnError)
	fs.SetOutput(stderr)
	timeout := fs.Int("timeoutSeconds", 60, "maximum number of seconds to wait for the proxy to be ready")
	reqTimeout := fs.Int("requestTimeoutMillis", 500, "milliseconds to wait for each response")
	period := fs.Int("periodMillis", 500, "milliseconds between attempts")
	url := fs.String("url", DefaultReadyURL, "URL to poll")
	pos, err := parseArgs(fs, args, stderr)
	if err != nil {
		return 2
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "skiff-proxy wait: unexpected arguments %q: wait takes flags only\n", pos)
		return 2
	}
	for _, v := range []struct {
		name string
		n    int
	}{{"--timeoutSeconds", *timeout}, {"--requestTimeoutMillis", *reqTimeout}, {"--periodMillis", *period}} {
		if v.n <= 0 {
			fmt.Fprintf(stderr, "skiff-proxy wait: %s %d: must be positive\n", v.name, v.n)
			return 2
		}
	}
	fmt.Fprintf(stdout, "Waiting for the proxy to be ready (timeout: %d seconds)...\n", *timeout)
	err = Wait(ctx, WaitOptions{Timeout: time.Duration(*timeout) * time.Second,
		RequestTimeout: time.Duration(*reqTimeout) * time.Millisecond,
		Period:         time.Duration(*period) * time.Millisecond, URL: *url})
	if err != nil {
		fmt.Fprintln(stderr, "skiff-proxy wait:", err)
		return 1
	}
	fmt.Fprintln(stdout, "The proxy is ready.")
	return 0
}
