package inspect

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"google.golang.org/protobuf/proto"

	"github.com/skiff-mesh/skiff/dataplane/xdstypes"
)

const statusUsage = `usage: skiff proxy-status [POD[.NAMESPACE]] [-n NAMESPACE] [-o json|yaml]
Without POD: every proxy connected to skiffd and, per xDS type, whether it has
acknowledged what skiffd last sent (SYNCED), not yet (STALE), or was sent nothing
(NOT SENT; IGNORED when the proxy does not ask for that type).
With POD: whether the proxy's clusters, listeners and routes are those skiffd
generates for it.
flags:
  -n, --namespace NAMESPACE   namespace of POD when it has no ".NAMESPACE" (default "default")
  -o, --output FORMAT         json or yaml instead of the table
`

// ecdsType is Envoy's extension config discovery type, a column of
// istioctl's table; skiff-proxy does not ask for it.
const ecdsType = "type.googleapis.com/envoy.config.core.v3.TypedExtensionConfig"

// statusColumns are istioctl's per-type columns, in its order.
var statusColumns = []struct{ name, typeURL string }{
	{"CDS", xdstypes.Cluster}, {"LDS", xdstypes.Listener}, {"EDS", xdstypes.ClusterLoadAssignment},
	{"RDS", xdstypes.RouteConfiguration}, {"ECDS", ecdsType},
}

// syncEntry is the part of one /debug/syncz entry (controlplane/xds
// ProxyStatus) the table reads.
type syncEntry struct {
	ConnID       string    `json:"conn_id"`
	ProxyID      string    `json:"proxy_id"`
	ClusterID    string    `json:"cluster_id"`
	IstioVersion string    `json:"istio_version"`
	ConnectedAt  time.Time `json:"connected_at"`
	Types        []struct {
		TypeURL    string `json:"type_url"`
		NonceSent  string `json:"nonce_sent"`
		NonceAcked string `json:"nonce_acked"`
	} `json:"types"`
}

// defaultClusterID is what Istio calls a cluster whose proxies send no
// CLUSTER_ID.
const defaultClusterID = "Kubernetes"

// statusRow is one line of the table, and one element of -o json.
type statusRow struct {
	Name    string            `json:"name"`
	Cluster string            `json:"cluster"`
	Status  map[string]string `json:"status"`
	Istiod  string            `json:"istiod"`
	Version string            `json:"version"`
	// Syncz is skiffd's whole entry for the connection.
	Syncz       json.RawMessage `json:"syncz"`
	connectedAt time.Time
}

func runStatus(ctx context.Context, args []string, env Env, stdout io.Writer) error {
	fs := flag.NewFlagSet("proxy-status", flag.ContinueOnError)
	var ns, output string
	fs.StringVar(&ns, "n", "default", "")
	fs.StringVar(&ns, "namespace", "default", "")
	fs.StringVar(&output, "o", "", "")
	fs.StringVar(&output, "output", "", "")
	pos, err := parseFlags(fs, args, statusUsage, stdout)
	if err != nil {
		return err
	}
	if output != "" && output != "json" && output != "yaml" {
		return usagef("-o %s: proxy-status prints a table, json or yaml\n%s", output, statusUsage)
	}
	switch len(pos) {
	case 0:
		return printStatus(ctx, env, output, stdout)
	case 1:
		if output != "" {
			return usagef("-o %s: proxy-status POD compares configurations and prints text only\n%s", output, statusUsage)
		}
		return compareProxy(ctx, env, podArg(pos[0], ns), stdout)
	default:
		return usagef("proxy-status takes at most one POD, got %q\n%s", pos, statusUsage)
	}
}

func printStatus(ctx context.Context, env Env, output string, stdout io.Writer) error {
	body, err := skiffd(env).get(ctx, "/debug/syncz")
	if err != nil {
		return err
	}
	var raws []json.RawMessage
	if err := json.Unmarshal(body, &raws); err != nil {
		return fmt.Errorf("skiffd at %s: /debug/syncz is not a JSON list of proxies: %v", env.MonitoringAddr, err)
	}
	rows := make([]statusRow, 0, len(raws))
	for _, raw := range raws {
		var e syncEntry
		if err := json.Unmarshal(raw, &e); err != nil {
			return fmt.Errorf("skiffd at %s: /debug/syncz entry %s: %v", env.MonitoringAddr, raw, err)
		}
		rows = append(rows, e.row(raw))
	}
	// By name, then oldest connection first: a proxy that reconnected shows
	// both streams until skiffd notices the old one is gone.
	slices.SortStableFunc(rows, func(a, b statusRow) int {
		return cmp.Or(strings.Compare(a.Name, b.Name), a.connectedAt.Compare(b.connectedAt))
	})
	if output != "" {
		return writeValue(stdout, rows, output)
	}
	w := tabwriter.NewWriter(stdout, 0, 8, 5, ' ', 0)
	fmt.Fprint(w, "NAME\tCLUSTER")
	for _, c := range statusColumns {
		fmt.Fprint(w, "\t", c.name)
	}
	fmt.Fprintln(w, "\tISTIOD\tVERSION")
	for _, r := range rows {
		fmt.Fprintf(w, "%s\t%s", r.Name, r.Cluster)
		for _, c := range statusColumns {
			fmt.Fprint(w, "\t", r.Status[c.name])
		}
		fmt.Fprintf(w, "\t%s\t%s\n", r.Istiod, r.Version)
	}
	return w.Flush()
}

func (e syncEntry) row(raw json.RawMessage) statusRow {
	r := statusRow{Name: e.ProxyID, Cluster: e.ClusterID, Status: map[string]string{},
		Istiod: "skiffd", Version: e.IstioVersion, Syncz: raw, connectedAt: e.ConnectedAt}
	if r.Name == "" {
		r.Name = e.ConnID
	}
	if r.Cluster == "" {
		r.Cluster = defaultClusterID
	}
	if r.Version == "" {
		r.Version = "-"
	}
	for _, c := range statusColumns {
		r.Status[c.name] = "IGNORED"
		for _, t := range e.Types {
			if t.TypeURL == c.typeURL {
				r.Status[c.name] = syncState(t.NonceSent, t.NonceAcked)
			}
		}
	}
	return r
}

// syncState is istioctl's reading of one type: nonces, not versions, say
// whether the last response was acknowledged (a NACK keeps the old nonce
// acknowledged).
func syncState(sent, acked string) string {
	switch {
	case sent == "":
		return "NOT SENT"
	case sent == acked:
		return "SYNCED"
	case acked == "":
		return "STALE (Never Acknowledged)"
	}
	return "STALE"
}

// compareProxy is `proxy-status POD`: the proxy's clusters, listeners and
// routes against what skiffd generates for it now.
func compareProxy(ctx context.Context, env Env, pod PodRef, stdout io.Writer) error {
	addr, err := adminAddr(env, pod)
	if err != nil {
		return err
	}
	want, err := skiffd(env).get(ctx, "/debug/config_dump?proxyID="+url.QueryEscape(pod.String()))
	var se *statusError
	if errors.As(err, &se) && se.code == http.StatusNotFound {
		return fmt.Errorf("the proxy of pod %s is not connected to skiffd at %s (`skiff proxy-status` lists those that are; `skiff status` shows the pod): %v",
			pod, env.MonitoringAddr, err)
	}
	if err != nil {
		return err
	}
	wantDump, err := parseConfigDump(want, "skiffd at "+env.MonitoringAddr)
	if err != nil {
		return err
	}
	got, err := proxyAdmin(env, pod, addr).get(ctx, "/config_dump")
	if err != nil {
		return err
	}
	gotDump, err := parseConfigDump(got, "the proxy of pod "+pod.String())
	if err != nil {
		return err
	}
	var out bytes.Buffer
	same := compareKind(&out, "Clusters", "", wantDump.clusters, gotDump.clusters)
	same = compareKind(&out, "Listeners", "", wantDump.listeners, gotDump.listeners) && same
	var loaded time.Time
	for _, r := range gotDump.routes {
		if !r.static && r.lastUpdated.After(loaded) {
			loaded = r.lastUpdated
		}
	}
	suffix := ""
	if !loaded.IsZero() {
		suffix = " (RDS last loaded at " + loaded.Local().Format(time.RFC1123) + ")"
	}
	same = compareKind(&out, "Routes", suffix, wantDump.routes, gotDump.routes) && same
	if !same {
		fmt.Fprintf(&out, "The proxy holds what `skiff proxy-config all %s -o json` prints; skiffd generates what http://%s/debug/config_dump?proxyID=%s shows.\n",
			pod, env.MonitoringAddr, url.QueryEscape(pod.String()))
	}
	_, err = stdout.Write(out.Bytes())
	return err
}

// compareKind prints "<Kind> Match" or "<Kind> Don't Match" followed by the
// resources that differ. Only dynamic, active resources are compared: the
// bootstrap's static ones never came from skiffd. It reports whether they
// match.
func compareKind(w io.Writer, kind, suffix string, want, got []resource) bool {
	index := func(rs []resource) map[string]proto.Message {
		m := map[string]proto.Message{}
		for _, r := range rs {
			if !r.static && r.state == "ACTIVE" && r.msg != nil {
				m[r.name] = r.msg
			}
		}
		return m
	}
	w1, g1 := index(want), index(got)
	var diffs []string
	for name, m := range w1 {
		switch g, ok := g1[name]; {
		case !ok:
			diffs = append(diffs, fmt.Sprintf("  %s: sent by skiffd, missing from the proxy", name))
		case !proto.Equal(m, g):
			diffs = append(diffs, fmt.Sprintf("  %s: differs between skiffd and the proxy", name))
		}
	}
	for name := range g1 {
		if _, ok := w1[name]; !ok {
			diffs = append(diffs, fmt.Sprintf("  %s: held by the proxy, not generated by skiffd", name))
		}
	}
	if len(diffs) == 0 {
		fmt.Fprintf(w, "%s Match%s\n", kind, suffix)
		return true
	}
	slices.Sort(diffs)
	fmt.Fprintf(w, "%s Don't Match%s\n%s\n", kind, suffix, strings.Join(diffs, "\n"))
	return false
}
