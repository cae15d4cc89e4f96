package why

import (
	"fmt"
	"io"
	"slices"
	"strconv"
	"strings"
)

func (c ConfigRef) String() string {
	s := c.Kind + "/"
	if c.Namespace != "" {
		s += c.Namespace + "/"
	}
	s += c.Name
	if c.Source != "" {
		s += " (" + c.Source + ")"
	}
	return s
}

// render prints the report as numbered steps and a verdict.
func render(w io.Writer, rep *Report) {
	rq := rep.Request
	fmt.Fprintf(w, "%s %s%s from %s.%s", rq.Method, rq.Authority, rq.Path, rep.Source.Pod, rep.Source.Namespace)
	if rep.Source.Identity != "" {
		fmt.Fprintf(w, " (%s)", rep.Source.Identity)
	}
	fmt.Fprintln(w)
	for _, k := range sortedKeys(rq.Headers) {
		for _, v := range rq.Headers[k] {
			fmt.Fprintf(w, "  header %s: %s\n", k, v)
		}
	}
	fmt.Fprintln(w)
	line := func(n int, step, format string, a ...any) {
		fmt.Fprintf(w, "%d. %-14s %s\n", n, step, fmt.Sprintf(format, a...))
	}
	more := func(format string, a ...any) { fmt.Fprintf(w, "   %-14s %s\n", "", fmt.Sprintf(format, a...)) }

	if ls := rep.Listener; ls != nil {
		switch {
		case ls.Listener == "":
			line(1, "listener", "none")
		case ls.Via != "" && ls.Via != ls.Listener:
			line(1, "listener", "%s (capture %s) hands %s to listener %s", ls.Via, rep.Source.Capture, rq.Address, ls.Listener)
		case ls.Via != "":
			line(1, "listener", "%s (capture %s) keeps %s: no listener for that address", ls.Via, rep.Source.Capture, rq.Address)
		default:
			line(1, "listener", "%s (explicit proxy: the application's HTTP_PROXY, capture %s)", ls.Listener, rep.Source.Capture)
		}
		if ls.ChainIndex >= 0 {
			dest := ls.Terminal
			if ls.RouteConfig != "" {
				dest += ", RouteConfiguration " + ls.RouteConfig
			}
			if ls.Cluster != "" {
				dest += ", cluster " + ls.Cluster
			}
			more("filter chain %s [match: %s] → %s", ls.FilterChain, ls.Match, dest)
		}
	}
	if rs := rep.Route; rs != nil {
		if !rs.Matched {
			line(2, "route", "RouteConfiguration %s: no route matched → 404 NR", rs.RouteConfig)
		} else {
			line(2, "route", "RouteConfiguration %s, virtual host %s, route %s", rs.RouteConfig, rs.VirtualHost, rs.Route)
			if rs.VirtualService != nil {
				h := "http[?]"
				if rs.HTTPRoute >= 0 {
					h = "http[" + strconv.Itoa(rs.HTTPRoute) + "]"
					if rs.HTTPRouteName != "" {
						h += " " + strconv.Quote(rs.HTTPRouteName)
					}
				}
				more("from VirtualService %s/%s %s%s", rs.VirtualService.Namespace, rs.VirtualService.Name, h, sourceSuffix(rs.VirtualService.Source))
			} else {
				more("generated default route (no VirtualService for this host)")
			}
			for _, d := range rs.Destinations {
				more("→ %s  weight %d%%", d.Cluster, d.Weight)
			}
			if rs.Redirect != "" {
				more("redirect → %s", rs.Redirect)
			}
			if rs.DirectStatus != 0 {
				more("direct response %d", rs.DirectStatus)
			}
			if rs.Timeout != "" {
				extra := "retries none"
				if r := rs.Retries; r != nil {
					extra = fmt.Sprintf("retries %d on %s", r.Attempts, r.On)
					if r.PerTryTimeout != "" {
						extra += ", per try " + r.PerTryTimeout
					}
				}
				more("timeout %s; %s", rs.Timeout, extra)
			}
			if f := rs.Fault; f != nil {
				var parts []string
				if f.AbortStatus != 0 {
					parts = append(parts, fmt.Sprintf("abort %d for %g%% of requests", f.AbortStatus, f.AbortPercent))
				}
				if f.Delay != "" {
					parts = append(parts, fmt.Sprintf("delay %s for %g%% of requests", f.Delay, f.DelayPercent))
				}
				more("fault injection: %s", strings.Join(parts, ", "))
			} else if rs.Timeout != "" {
				more("fault injection: none")
			}
		}
	}
	if cs := rep.Cluster; cs != nil {
		if !cs.Found {
			line(3, "cluster", "%s: not on the source proxy", cs.Name)
		} else {
			line(3, "cluster", "%s (lb %s, connect timeout %s)", cs.Name, cs.LB, cs.ConnectTimeout)
			if cs.DestinationRule != nil {
				sub := ""
				if cs.Subset != "" {
					sub = ", subset " + cs.Subset
				}
				more("shaped by DestinationRule %s/%s%s%s", cs.DestinationRule.Namespace, cs.DestinationRule.Name, sub, sourceSuffix(cs.DestinationRule.Source))
			} else {
				more("no DestinationRule")
			}
			if len(cs.CircuitBreakers) > 0 {
				more("circuit breakers: %s", describeMap(cs.CircuitBreakers))
			}
			if len(cs.OutlierDetection) > 0 {
				more("outlier detection: %s", describeMap(cs.OutlierDetection))
			} else {
				more("outlier detection: none")
			}
		}
	}
	if es := rep.Endpoints; es != nil {
		line(4, "endpoints", "%d healthy, %d unhealthy (the source proxy's /clusters)", es.Healthy, es.Unhealthy)
		for _, h := range es.Hosts {
			st := h.Health
			if h.Outlier {
				st += ", ejected by outlier detection"
			}
			more("%s %s %s", h.Address, st, h.Pod)
		}
	}
	if ms := rep.MTLS; ms != nil {
		sni := ""
		if ms.SNI != "" {
			sni = ", SNI " + ms.SNI
		}
		line(5, "mTLS", "source sends %s to %s (%s%s)", ms.SourceMode, ms.Endpoint, ms.SourceReason, sni)
		dest := ms.DestPod
		if dest == "" {
			dest = ms.Endpoint
		}
		pa := ""
		if ms.PeerAuthentication != nil {
			pa = ", set by " + ms.PeerAuthentication.String()
		}
		chain := ""
		if ms.InboundChain != "" {
			chain = ", inbound chain " + ms.InboundChain
		}
		accepts := ms.DestMode
		if accepts == "NONE" {
			accepts = "plaintext only (nothing terminates mTLS in front of the application)"
		}
		more("destination %s accepts %s%s%s", dest, accepts, pa, chain)
		if ms.OK {
			more("→ OK")
		} else {
			more("→ %s", ms.Problem)
		}
	}
	if as := rep.Authz; as != nil {
		who := ""
		if as.Principal != "" {
			who = " for principal " + as.Principal
		}
		line(6, "authorization", "at %s%s", as.DestPod, who)
		for _, f := range as.Filters {
			d := "allowed"
			if !f.Allowed {
				d = "denied"
			}
			s := f.Filter
			if f.Action != "" {
				s += " (" + f.Action + ")"
			}
			if f.Policy != "" {
				s += ", matched " + f.Policy
			}
			if f.Note != "" {
				s += ": " + f.Note
			}
			more("%s → %s", s, d)
		}
		more("→ %s", as.Reason)
	}
	for _, n := range rep.Notes {
		fmt.Fprintf(w, "\nnote: %s\n", n)
	}
	v := rep.Verdict
	fmt.Fprintln(w)
	if v.Status != 0 {
		flags := ""
		if v.Flags != "" {
			flags = " " + v.Flags
		}
		if strings.HasPrefix(v.Reason, strconv.Itoa(v.Status)) {
			fmt.Fprintf(w, "verdict: %s (step %s)\n", v.Reason, v.Step)
			return
		}
		fmt.Fprintf(w, "verdict: %d%s (step %s): %s\n", v.Status, flags, v.Step, v.Reason)
		return
	}
	fmt.Fprintf(w, "verdict: %s: %s\n", v.Step, v.Reason)
}

func sourceSuffix(s string) string {
	if s == "" {
		return ""
	}
	return " (" + s + ")"
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

func describeMap[V any](m map[string]V) string {
	var parts []string
	for _, k := range sortedKeys(m) {
		parts = append(parts, fmt.Sprintf("%s %v", k, m[k]))
	}
	return strings.Join(parts, ", ")
}
