package inspect

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"text/tabwriter"

	adminv3 "github.com/envoyproxy/go-control-plane/envoy/admin/v3"
	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	"google.golang.org/protobuf/proto"
)

// endpointRow is one host of one cluster, as the proxy's /clusters shows it.
type endpointRow struct {
	addr    *corev3.Address
	cluster string
	status  string
	outlier string
	host    *adminv3.HostStatus
}

// hostHealth is Envoy's reading of a host's EDS health: a host EDS said
// nothing about is HEALTHY.
func hostHealth(h *adminv3.HostStatus) string {
	s := h.GetHealthStatus().GetEdsHealthStatus()
	if s == corev3.HealthStatus_UNKNOWN {
		return corev3.HealthStatus_HEALTHY.String()
	}
	return s.String()
}

// compareAddr orders IPs numerically, then ports, then anything else by text.
func compareAddr(a, b *corev3.Address) int {
	ai, aerr := netip.ParseAddr(a.GetSocketAddress().GetAddress())
	bi, berr := netip.ParseAddr(b.GetSocketAddress().GetAddress())
	if aerr == nil && berr == nil {
		return cmp.Or(ai.Compare(bi), cmp.Compare(a.GetSocketAddress().GetPortValue(), b.GetSocketAddress().GetPortValue()))
	}
	return strings.Compare(addressString(a, true), addressString(b, true))
}

func printEndpoints(b []byte, source string, o configOpts, w io.Writer) error {
	var cs adminv3.Clusters
	if err := jsonIn.Unmarshal(b, &cs); err != nil {
		return fmt.Errorf("/clusters?format=json from %s: %w", source, err)
	}
	var rows []endpointRow
	for _, c := range cs.GetClusterStatuses() {
		if o.cluster != "" && !strings.Contains(c.GetName(), o.cluster) {
			continue
		}
		for _, h := range c.GetHostStatuses() {
			r := endpointRow{addr: h.GetAddress(), cluster: c.GetName(), status: hostHealth(h), outlier: "OK", host: h}
			if h.GetHealthStatus().GetFailedOutlierCheck() {
				r.outlier = "FAILED"
			}
			sa := h.GetAddress().GetSocketAddress()
			if (o.address != "" && sa.GetAddress() != o.address) ||
				(o.port != 0 && uint(sa.GetPortValue()) != o.port) ||
				(o.status != "" && !strings.EqualFold(r.status, o.status)) {
				continue
			}
			rows = append(rows, r)
		}
	}
	slices.SortStableFunc(rows, func(a, b endpointRow) int {
		return cmp.Or(compareAddr(a.addr, b.addr), strings.Compare(a.cluster, b.cluster))
	})
	if o.output != "short" {
		// The clusters as /clusters lists them, keeping only the hosts shown.
		var out []proto.Message
		byCluster := map[string]*adminv3.ClusterStatus{}
		for _, r := range rows {
			cs, ok := byCluster[r.cluster]
			if !ok {
				cs = &adminv3.ClusterStatus{Name: r.cluster}
				byCluster[r.cluster] = cs
				out = append(out, cs)
			}
			cs.HostStatuses = append(cs.HostStatuses, r.host)
		}
		return writeMessages(w, out, o.output)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 5, ' ', 0)
	fmt.Fprintln(tw, "ENDPOINT\tSTATUS\tOUTLIER CHECK\tCLUSTER")
	for _, r := range rows {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", addressString(r.addr, true), r.status, r.outlier, r.cluster)
	}
	return tw.Flush()
}
