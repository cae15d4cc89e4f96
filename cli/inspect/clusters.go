package inspect

import (
	"cmp"
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
	"text/tabwriter"

	clusterv3 "github.com/envoyproxy/go-control-plane/envoy/config/cluster/v3"
	"google.golang.org/protobuf/proto"
)

// clusterKey is an Istio cluster name "direction|port|subset|fqdn" taken
// apart; other names keep the whole name as fqdn.
type clusterKey struct {
	direction, subset, fqdn string
	port                    int
	istio                   bool
}

func parseClusterName(name string) clusterKey {
	p := strings.Split(name, "|")
	if len(p) != 4 {
		return clusterKey{fqdn: name}
	}
	port, _ := strconv.Atoi(p[1])
	return clusterKey{direction: p[0], port: port, subset: p[2], fqdn: p[3], istio: true}
}

// clusterType is the discovery type (EDS, STATIC, ORIGINAL_DST, ...) or the
// name of a custom cluster type.
func clusterType(c *clusterv3.Cluster) string {
	if ct := c.GetClusterType(); ct != nil {
		return ct.GetName()
	}
	return c.GetType().String()
}

func printClusters(d *configDump, o configOpts, w io.Writer) error {
	var cs []*clusterv3.Cluster
	for _, r := range d.clusters {
		c, ok := r.msg.(*clusterv3.Cluster)
		if !ok || r.state != "ACTIVE" {
			continue
		}
		k := parseClusterName(c.GetName())
		if (o.fqdn != "" && !strings.Contains(k.fqdn, o.fqdn)) ||
			(o.port != 0 && (!k.istio || uint(k.port) != o.port)) ||
			(o.subset != "" && k.subset != o.subset) ||
			(o.direction != "" && k.direction != o.direction) {
			continue
		}
		cs = append(cs, c)
	}
	// istioctl's order: service, subset, port, direction.
	slices.SortStableFunc(cs, func(a, b *clusterv3.Cluster) int {
		ka, kb := parseClusterName(a.GetName()), parseClusterName(b.GetName())
		return cmp.Or(strings.Compare(ka.fqdn, kb.fqdn), strings.Compare(ka.subset, kb.subset),
			cmp.Compare(ka.port, kb.port), strings.Compare(ka.direction, kb.direction))
	})
	if o.output != "short" {
		msgs := make([]proto.Message, len(cs))
		for i, c := range cs {
			msgs[i] = c
		}
		return writeMessages(w, msgs, o.output)
	}
	tw := tabwriter.NewWriter(w, 0, 8, 5, ' ', 0)
	fmt.Fprintln(tw, "SERVICE FQDN\tPORT\tSUBSET\tDIRECTION\tTYPE\tDESTINATION RULE")
	for _, c := range cs {
		k := parseClusterName(c.GetName())
		port, subset, dir := "-", "-", "-"
		if k.istio {
			port, dir = strconv.Itoa(k.port), k.direction
			if k.subset != "" {
				subset = k.subset
			}
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\n", k.fqdn, port, subset, dir, clusterType(c), configRef(c.GetMetadata()))
	}
	return tw.Flush()
}
