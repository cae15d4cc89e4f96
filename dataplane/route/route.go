// Package route owns HTTP route tables: it validates an xDS
// RouteConfiguration once, compiles it into an immutable Table, and answers
// per request which virtual host and route apply and what the route does
// (forward, redirect, respond directly), with Envoy's semantics for matching,
// weighted clusters, rewrites, retries, hashing, mirroring, CORS and header
// mutation. Tables are never modified after Compile, so the request path
// reads them without locks; a new RouteConfiguration yields a new Table.
package route

import (
	"fmt"
	"math/rand/v2"
	"net/http"
	"regexp"
	"sort"
	"strings"
	"time"

	routev3 "github.com/envoyproxy/go-control-plane/envoy/config/route/v3"
	"google.golang.org/protobuf/types/known/anypb"
)

// Table is one compiled RouteConfiguration. It is immutable after Compile.
type Table struct {
	Name string

	vhostHeader string // canonical header key; "" means :authority
	ignorePort  bool
	// ignorePathParams drops ";params" from path segments before matching
	// (ignore_path_parameters_in_path_matching).
	ignorePathParams bool

	exact    map[string]*vhost
	suffixes []wildcardSet // longest first
	prefixes []wildcardSet // longest first
	any      *vhost
}

// wildcardSet holds the wildcard domains of one length, so a lookup slices
// the host once per length instead of scanning every domain.
type wildcardSet struct {
	n int
	m map[string]*vhost
}

type vhost struct {
	name       string
	routes     []*compiledRoute
	requireTLS routev3.VirtualHost_TlsRequirementType
	tlsRedir   *Entry
}

type compiledRoute struct {
	match matcher
	entry *Entry
}

// Entry is the outcome of routing one request: a route of a virtual host
// with everything inherited from the virtual host and route configuration
// already merged in.
type Entry struct {
	Name        string
	VirtualHost string
	// Exactly one of Action, Redirect and Direct is set.
	Action   *Action
	Redirect *Redirect
	Direct   *DirectResponse
	// PerFilterConfig is typed_per_filter_config merged route > virtual
	// host > route configuration, by filter name. FilterConfig adds the
	// chosen weighted cluster on top.
	PerFilterConfig map[string]*anypb.Any
	Decorator       string

	// Header mutations, most specific first: route, virtual host, route
	// configuration. A weighted cluster's come before all of them.
	reqMut, respMut  []*headerMutation
	mostSpecificWins bool
	internalOnly     []string

	// prefix and wholePath say what prefix_rewrite replaces: the route's
	// prefix, or the whole path for path and regex routes.
	prefix    string
	wholePath bool
}

// FilterConfig returns the typed_per_filter_config for filter name, with
// the chosen weighted cluster's on top of the route's.
func (e *Entry) FilterConfig(name string, cluster *WeightedCluster) *anypb.Any {
	if cluster != nil && cluster.PerFilterConfig != nil {
		return cluster.PerFilterConfig[name]
	}
	return e.PerFilterConfig[name]
}

// Action forwards the request to a cluster.
type Action struct {
	Cluster       string
	ClusterHeader string            // canonical header key naming the cluster
	Weighted      []WeightedCluster // Choose picks one by weight
	totalWeight   uint64
	// ClusterNotFoundStatus is the status to answer when the cluster is
	// unknown (503 by default, 404 or 500 when configured).
	ClusterNotFoundStatus int

	PrefixRewrite     string
	RegexRewrite      *regexp.Regexp
	RegexSubstitution string // in Go's Expand syntax (${1}), converted from RE2's \1

	HostRewriteLiteral string
	AutoHostRewrite    bool
	HostRewriteHeader  string // canonical header key
	// HostRewritePathRegex rewrites the Host from the path (query removed),
	// substituting HostRewritePathSubstitution.
	HostRewritePathRegex        *regexp.Regexp
	HostRewritePathSubstitution string
	AppendXForwardedHost        bool

	Timeout     time.Duration // default 15s; 0 = none
	IdleTimeout time.Duration
	Retry       *RetryPolicy // nil = no retries (route level overrides virtual host level)
	Mirrors     []Mirror

	HashPolicies []HashPolicy
	Upgrades     map[string]bool // lower-case upgrade type → enabled (route level only; HCM's apply otherwise)

	MaxStreamDuration time.Duration
	// MaxGRPCTimeout caps grpc-timeout (max_stream_duration.grpc_timeout_header_max,
	// or the older max_grpc_timeout); nil means grpc-timeout is not honoured.
	MaxGRPCTimeout    *time.Duration
	GRPCTimeoutOffset time.Duration
	Cors              *CorsPolicy // from route / virtual host cors or typed_per_filter_config envoy.filters.http.cors
	// IncludeAttemptCount / IncludeAttemptCountInResponse add
	// x-envoy-attempt-count to the upstream request / downstream response
	// (virtual host include_request_attempt_count /
	// include_attempt_count_in_response).
	IncludeAttemptCount, IncludeAttemptCountInResponse bool
	// BufferLimit caps how much request body is buffered for retries and
	// mirrors (route, else virtual host request_body_buffer_limit or
	// per_request_buffer_limit_bytes); 0 means the listener's default.
	BufferLimit uint64
}

// WeightedCluster is one target of weighted_clusters.
type WeightedCluster struct {
	Name   string
	Weight uint32
	// ClusterHeader names the cluster by a request header (canonical key)
	// when Name is empty.
	ClusterHeader string
	// PerFilterConfig is the entry's merged map with this cluster's
	// typed_per_filter_config on top.
	PerFilterConfig    map[string]*anypb.Any
	HostRewriteLiteral string
	reqMut, respMut    *headerMutation
}

// DirectResponse answers the request from the proxy itself.
type DirectResponse struct {
	Status int
	Body   []byte
}

// Compile validates and compiles one RouteConfiguration (RDS or inline).
// Errors name the route configuration, virtual host, route and field.
func Compile(rc *routev3.RouteConfiguration) (*Table, error) {
	t := &Table{
		Name: rc.GetName(), exact: map[string]*vhost{},
		ignorePort: rc.GetIgnorePortInHostMatching(), ignorePathParams: rc.GetIgnorePathParametersInPathMatching(),
	}
	where := fmt.Sprintf("route_configuration %q", rc.GetName())
	if rc.GetVhds() != nil {
		return nil, fmt.Errorf("%s: vhds: on-demand virtual hosts are not supported; list virtual_hosts inline", where)
	}
	if h := rc.GetVhostHeader(); h != "" {
		t.vhostHeader = http.CanonicalHeaderKey(h)
	}
	maxBody := 4096
	if v := rc.GetMaxDirectResponseBodySizeBytes(); v != nil {
		maxBody = int(v.GetValue())
	}
	rcMut, err := compileMutation(rc.GetRequestHeadersToAdd(), rc.GetRequestHeadersToRemove())
	if err != nil {
		return nil, fmt.Errorf("%s: request_headers_to_add%w", where, err)
	}
	rcRespMut, err := compileMutation(rc.GetResponseHeadersToAdd(), rc.GetResponseHeadersToRemove())
	if err != nil {
		return nil, fmt.Errorf("%s: response_headers_to_add%w", where, err)
	}
	internalOnly := make([]string, 0, len(rc.GetInternalOnlyHeaders()))
	for _, h := range rc.GetInternalOnlyHeaders() {
		internalOnly = append(internalOnly, http.CanonicalHeaderKey(h))
	}
	rcMirrors, err := compileMirrors(rc.GetRequestMirrorPolicies())
	if err != nil {
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	seen := map[string]string{}
	suffix := map[int]map[string]*vhost{}
	prefix := map[int]map[string]*vhost{}
	for i, vh := range rc.GetVirtualHosts() {
		vwhere := fmt.Sprintf("%s: virtual_hosts[%d] %q", where, i, vh.GetName())
		g := globals{
			rcPFC: rc.GetTypedPerFilterConfig(), reqMut: rcMut, respMut: rcRespMut, mirrors: rcMirrors,
			mostSpecificWins: rc.GetMostSpecificHeaderMutationsWins(),
			internalOnly:     internalOnly, maxBody: maxBody,
		}
		v, err := compileVhost(vh, g)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", vwhere, err)
		}
		if len(vh.GetDomains()) == 0 {
			return nil, fmt.Errorf("%s: domains: at least one domain is required", vwhere)
		}
		for j, d := range vh.GetDomains() {
			d = strings.ToLower(d)
			if other, dup := seen[d]; dup {
				return nil, fmt.Errorf("%s: domains[%d]: domain %q is already used by virtual host %q; domains must be unique across virtual hosts", vwhere, j, d, other)
			}
			seen[d] = vh.GetName()
			switch {
			case d == "*":
				t.any = v
			case d == "", len(d) > 1 && (strings.Count(d, "*") > 1 || strings.Contains(d[1:len(d)-1], "*")):
				return nil, fmt.Errorf("%s: domains[%d]: %q: a wildcard may only be the first or last character", vwhere, j, d)
			case d[0] == '*':
				s := d[1:]
				if suffix[len(s)] == nil {
					suffix[len(s)] = map[string]*vhost{}
				}
				suffix[len(s)][s] = v
			case d[len(d)-1] == '*':
				p := d[:len(d)-1]
				if prefix[len(p)] == nil {
					prefix[len(p)] = map[string]*vhost{}
				}
				prefix[len(p)][p] = v
			default:
				t.exact[d] = v
			}
		}
	}
	t.suffixes = sortedSets(suffix)
	t.prefixes = sortedSets(prefix)
	return t, nil
}

func sortedSets(m map[int]map[string]*vhost) []wildcardSet {
	out := make([]wildcardSet, 0, len(m))
	for n, s := range m {
		out = append(out, wildcardSet{n: n, m: s})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].n > out[j].n })
	return out
}

// Select finds the virtual host (by :authority, or vhost_header when
// configured) and the first matching route. It returns nil when none
// matches; the caller answers 404 with flag NR.
func (t *Table) Select(r *http.Request) *Entry {
	e, _ := t.SelectIndex(r)
	return e
}

// SelectIndex is Select that also returns the index of the matched route
// in its virtual host's routes (-1 for the require_tls redirect or no
// match), so tools that explain a dumped config (skiff why) can name the
// route it came from.
func (t *Table) SelectIndex(r *http.Request) (*Entry, int) {
	v := t.findVhost(t.host(r))
	if v == nil {
		return nil, -1
	}
	if v.tlsRedir != nil && !isTLS(r) {
		if v.requireTLS == routev3.VirtualHost_ALL || r.Header.Get("X-Envoy-Internal") != "true" {
			return v.tlsRedir, -1
		}
	}
	path := requestPath(r)
	if t.ignorePathParams && strings.IndexByte(path, ';') >= 0 {
		path = stripPathParams(path)
	}
	for i, cr := range v.routes {
		if cr.match.match(r, path) {
			return cr.entry, i
		}
	}
	return nil, -1
}

func (t *Table) host(r *http.Request) string {
	h := r.Host
	if t.vhostHeader != "" {
		if vs := r.Header[t.vhostHeader]; len(vs) > 0 {
			h = vs[0]
		} else {
			h = ""
		}
	}
	if t.ignorePort {
		h = stripPort(h)
	}
	return h
}

// findVhost applies Envoy's domain order: exact, longest suffix wildcard,
// longest prefix wildcard, then "*". Wildcards never match an empty part.
func (t *Table) findVhost(host string) *vhost {
	host = lowerASCII(host)
	if v, ok := t.exact[host]; ok {
		return v
	}
	for _, s := range t.suffixes {
		if s.n < len(host) {
			if v, ok := s.m[host[len(host)-s.n:]]; ok {
				return v
			}
		}
	}
	for _, s := range t.prefixes {
		if s.n < len(host) {
			if v, ok := s.m[host[:s.n]]; ok {
				return v
			}
		}
	}
	return t.any
}

// stripPort removes a trailing ":port" (keeping IPv6 brackets intact).
func stripPort(h string) string {
	i := strings.LastIndexByte(h, ':')
	if i < 0 || strings.IndexByte(h[i:], ']') >= 0 {
		return h
	}
	if strings.IndexByte(h, ':') != i && !strings.HasPrefix(h, "[") {
		return h // bare IPv6 address without port
	}
	return h[:i]
}

// lowerASCII lower-cases s only when it has an upper-case letter, so the
// common already-lower host costs nothing.
func lowerASCII(s string) string {
	for i := 0; i < len(s); i++ {
		if c := s[i]; 'A' <= c && c <= 'Z' {
			return strings.ToLower(s)
		}
	}
	return s
}

// requestPath is the path the route matches against: the :path without
// query string or fragment.
func requestPath(r *http.Request) string {
	if r.URL == nil {
		return ""
	}
	return r.URL.EscapedPath()
}

// stripPathParams removes the ";params" part of every path segment, so
// "/a;v=1/b;x" matches as "/a/b".
func stripPathParams(p string) string {
	var b strings.Builder
	b.Grow(len(p))
	for i := 0; i < len(p); {
		j := strings.IndexByte(p[i:], ';')
		if j < 0 {
			b.WriteString(p[i:])
			break
		}
		b.WriteString(p[i : i+j])
		k := strings.IndexByte(p[i+j:], '/')
		if k < 0 {
			break
		}
		i += j + k
	}
	return b.String()
}

func isTLS(r *http.Request) bool {
	return forwardedProto(r) == "https"
}

// random is the per-request source for runtime_fraction; it is safe for
// concurrent use and does not allocate.
var random = rand.Uint64
