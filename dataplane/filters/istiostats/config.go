package istiostats

import (
	"errors"
	"fmt"
	"sort"
	"strings"

	"google.golang.org/protobuf/types/known/anypb"
	statspb "istio.io/api/envoy/extensions/stats"
)

// PluginConfigTypeURL is istio.stats' typed_config (HTTP and network).
const PluginConfigTypeURL = "type.googleapis.com/stats.PluginConfig"

// Standard labels, in Istio's order.
const (
	lReporter = iota
	lSrcWorkload
	lSrcNamespace
	lSrcPrincipal
	lSrcApp
	lSrcVersion
	lSrcCanonicalService
	lSrcCanonicalRevision
	lSrcCluster
	lDstWorkload
	lDstNamespace
	lDstPrincipal
	lDstApp
	lDstVersion
	lDstService
	lDstServiceName
	lDstServiceNamespace
	lDstCanonicalService
	lDstCanonicalRevision
	lDstCluster
	lRequestProtocol
	lResponseCode
	lGRPCStatus
	lResponseFlags
	lSecurityPolicy
	nLabels
)

var labelNames = [nLabels]string{
	"reporter", "source_workload", "source_workload_namespace", "source_principal", "source_app", "source_version",
	"source_canonical_service", "source_canonical_revision", "source_cluster",
	"destination_workload", "destination_workload_namespace", "destination_principal", "destination_app", "destination_version",
	"destination_service", "destination_service_name", "destination_service_namespace",
	"destination_canonical_service", "destination_canonical_revision", "destination_cluster",
	"request_protocol", "response_code", "grpc_response_status", "response_flags", "connection_security_policy",
}

// metric ids.
const (
	mRequests = iota
	mDuration
	mRequestBytes
	mResponseBytes
	mTCPSent
	mTCPReceived
	mTCPOpened
	mTCPClosed
	nMetrics
)

var metricNames = [nMetrics]string{
	"requests_total", "request_duration_milliseconds", "request_bytes", "response_bytes",
	"tcp_sent_bytes_total", "tcp_received_bytes_total", "tcp_connections_opened_total", "tcp_connections_closed_total",
}

func isTCP(m int) bool { return m >= mTCPSent }

// maxExprs bounds the distinct dimension expressions of one filter: their
// values are part of the fixed-size label-set key.
const maxExprs = 8

// tagSpec is one label of a metric: a standard label or an expression.
type tagSpec struct {
	name string
	std  int // label index, or -1
	expr int // index into plugin.exprs when std < 0
}

type metricSpec struct {
	drop bool
	tags []tagSpec
}

// plugin is a compiled PluginConfig.
type plugin struct {
	metrics [nMetrics]metricSpec
	exprs   []expr
}

func compilePlugin(a *anypb.Any) (*plugin, error) {
	var pc statspb.PluginConfig
	if err := a.UnmarshalTo(&pc); err != nil {
		return nil, fmt.Errorf("typed_config: %w", err)
	}
	if len(pc.GetDefinitions()) > 0 {
		return nil, errors.New("definitions: custom metric definitions are not supported; override the standard metrics with metrics[].dimensions")
	}
	p := &plugin{}
	for m := range p.metrics {
		for l := range nLabels {
			if isTCP(m) && (l == lResponseCode || l == lGRPCStatus) {
				continue
			}
			p.metrics[m].tags = append(p.metrics[m].tags, tagSpec{name: labelNames[l], std: l})
		}
	}
	exprIdx := map[string]int{}
	for i, mc := range pc.GetMetrics() {
		where := fmt.Sprintf("metrics[%d]", i)
		var targets []int
		if mc.GetName() == "" {
			for m := range nMetrics {
				targets = append(targets, m)
			}
		} else {
			name := strings.TrimPrefix(mc.GetName(), "istio_")
			found := false
			for m, n := range metricNames {
				if n == name {
					targets, found = append(targets, m), true
				}
			}
			if !found {
				return nil, fmt.Errorf("%s.name: unknown metric %q; use one of %s (or empty for all)", where, mc.GetName(), strings.Join(metricNames[:], ", "))
			}
		}
		dims := make([]string, 0, len(mc.GetDimensions()))
		for k := range mc.GetDimensions() {
			dims = append(dims, k)
		}
		sort.Strings(dims)
		for _, m := range targets {
			spec := &p.metrics[m]
			if mc.GetDrop() {
				spec.drop = true
			}
			for _, rm := range mc.GetTagsToRemove() {
				spec.tags = removeTag(spec.tags, rm)
			}
			for _, k := range dims {
				src := mc.GetDimensions()[k]
				idx, ok := exprIdx[src]
				if !ok {
					e, err := parseExpr(src)
					if err != nil {
						return nil, fmt.Errorf("%s.dimensions[%q]: %w", where, k, err)
					}
					if len(p.exprs) == maxExprs {
						return nil, fmt.Errorf("%s.dimensions[%q]: more than %d distinct dimension expressions in one filter", where, k, maxExprs)
					}
					idx = len(p.exprs)
					p.exprs = append(p.exprs, e)
					exprIdx[src] = idx
				}
				ts := tagSpec{name: k, std: -1, expr: idx}
				replaced := false
				for j := range spec.tags {
					if spec.tags[j].name == k {
						spec.tags[j], replaced = ts, true
					}
				}
				if !replaced {
					spec.tags = append(spec.tags, ts)
				}
			}
		}
	}
	return p, nil
}

func removeTag(tags []tagSpec, name string) []tagSpec {
	out := tags[:0:0]
	for _, t := range tags {
		if t.name != name {
			out = append(out, t)
		}
	}
	return out
}
