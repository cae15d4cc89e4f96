package why

// Report is what skiff why found, step by step; -o json prints it as is.
type Report struct {
	Source    Source         `json:"source"`
	Request   Request        `json:"request"`
	Listener  *ListenerStep  `json:"listener,omitempty"`
	Route     *RouteStep     `json:"route,omitempty"`
	Cluster   *ClusterStep   `json:"cluster,omitempty"`
	Endpoints *EndpointsStep `json:"endpoints,omitempty"`
	MTLS      *MTLSStep      `json:"mtls,omitempty"`
	Authz     *AuthzStep     `json:"authorization,omitempty"`
	Verdict   Verdict        `json:"verdict"`
	Notes     []string       `json:"notes,omitempty"`
}

// Source is the pod whose sidecar sends the request.
type Source struct {
	Pod       string `json:"pod"`
	Namespace string `json:"namespace"`
	IP        string `json:"ip"`
	Identity  string `json:"identity,omitempty"`
	// Capture is how the application's traffic reaches the sidecar:
	// netns (iptables to 15001) or loopback (HTTP_PROXY).
	Capture string `json:"capture"`
}

// Request is the request replayed.
type Request struct {
	Method    string              `json:"method"`
	Authority string              `json:"authority"` // the Host header the application sends
	Path      string              `json:"path"`
	Headers   map[string][]string `json:"headers,omitempty"`
	// Address is where the application connects: the service's cluster
	// IP and port, or the sidecar's HTTP_PROXY listener.
	Address string `json:"address"`
	Service string `json:"service,omitempty"` // FQDN, when the host is a mesh service
}

// ConfigRef names a config object: a mesh object (Kind is an Istio or
// Kubernetes kind, Source its file:line when skiffd knows it) or a proxy
// resource (Kind Listener, RouteConfiguration, Cluster, ...).
type ConfigRef struct {
	Kind      string `json:"kind"`
	Namespace string `json:"namespace,omitempty"`
	Name      string `json:"name"`
	Source    string `json:"source,omitempty"`
}

// ListenerStep is step 1: the listener and filter chain on the source
// proxy.
type ListenerStep struct {
	// Via is the capture listener that handed the connection over
	// (virtualOutbound), "" when the application connected directly.
	Via         string `json:"via,omitempty"`
	Listener    string `json:"listener"`
	FilterChain string `json:"filter_chain"` // name, else "filter_chains[i]"
	ChainIndex  int    `json:"filter_chain_index"`
	Match       string `json:"match,omitempty"`
	// Terminal is http_connection_manager or tcp_proxy.
	Terminal    string `json:"terminal"`
	RouteConfig string `json:"route_config,omitempty"`
	Cluster     string `json:"cluster,omitempty"` // tcp_proxy's
}

// RouteStep is step 2: the route.
type RouteStep struct {
	RouteConfig    string     `json:"route_config"`
	VirtualHost    string     `json:"virtual_host,omitempty"`
	Route          string     `json:"route,omitempty"` // the route's name, else routes[i]
	RouteIndex     int        `json:"route_index"`
	Matched        bool       `json:"matched"`
	VirtualService *ConfigRef `json:"virtual_service,omitempty"`
	// HTTPRoute is the VirtualService's http[] index the route came from
	// (-1 when unknown); HTTPRouteName its name.
	HTTPRoute     int               `json:"http_route"`
	HTTPRouteName string            `json:"http_route_name,omitempty"`
	Destinations  []WeightedCluster `json:"destinations,omitempty"`
	Timeout       string            `json:"timeout"`
	Retries       *Retries          `json:"retries,omitempty"`
	Fault         *Fault            `json:"fault,omitempty"`
	Redirect      string            `json:"redirect,omitempty"`
	DirectStatus  int               `json:"direct_response_status,omitempty"`
}

// WeightedCluster is one destination of the route.
type WeightedCluster struct {
	Cluster string `json:"cluster"`
	Weight  uint32 `json:"weight"` // percent of the route's traffic
}

// Retries is the route's retry policy.
type Retries struct {
	Attempts      uint32 `json:"attempts"`
	On            string `json:"retry_on"`
	PerTryTimeout string `json:"per_try_timeout,omitempty"`
}

// Fault is the fault injection in force on the route.
type Fault struct {
	AbortStatus  int     `json:"abort_status,omitempty"`
	AbortPercent float64 `json:"abort_percent,omitempty"`
	Delay        string  `json:"delay,omitempty"`
	DelayPercent float64 `json:"delay_percent,omitempty"`
}

// ClusterStep is step 3: the cluster and what shaped it.
type ClusterStep struct {
	Name            string     `json:"name"`
	Found           bool       `json:"found"`
	DestinationRule *ConfigRef `json:"destination_rule,omitempty"`
	Subset          string     `json:"subset,omitempty"`
	LB              string     `json:"lb_policy,omitempty"`
	ConnectTimeout  string     `json:"connect_timeout,omitempty"`
	// CircuitBreakers are the default-priority thresholds (max_connections,
	// max_pending_requests, max_requests, max_retries).
	CircuitBreakers  map[string]uint32 `json:"circuit_breakers,omitempty"`
	OutlierDetection map[string]string `json:"outlier_detection,omitempty"`
}

// EndpointsStep is step 4: the cluster's hosts as the source proxy sees them.
type EndpointsStep struct {
	Healthy   int        `json:"healthy"`
	Unhealthy int        `json:"unhealthy"`
	Hosts     []Endpoint `json:"hosts"`
}

// Endpoint is one host of the cluster.
type Endpoint struct {
	Address string `json:"address"`
	Health  string `json:"health"`
	Outlier bool   `json:"outlier_ejected,omitempty"`
	Pod     string `json:"pod,omitempty"` // name.namespace
}

// MTLSStep is step 5: what the source sends and what the destination
// accepts.
type MTLSStep struct {
	// SourceMode is ISTIO_MUTUAL, MUTUAL, SIMPLE or DISABLE (plaintext).
	SourceMode string `json:"source_mode"`
	// SourceReason says where it comes from: auto mTLS (transport socket
	// match tlsMode-istio) or the DestinationRule's tls.
	SourceReason string `json:"source_reason"`
	SNI          string `json:"sni,omitempty"`
	Endpoint     string `json:"endpoint,omitempty"`
	DestPod      string `json:"destination_pod,omitempty"`
	// DestMode is the destination's PeerAuthentication mode for the port
	// as its inbound listener shows it: STRICT, PERMISSIVE, DISABLE, or
	// NONE without a sidecar.
	DestMode           string     `json:"destination_mode"`
	PeerAuthentication *ConfigRef `json:"peer_authentication,omitempty"`
	InboundChain       string     `json:"inbound_chain,omitempty"`
	OK                 bool       `json:"ok"`
	Problem            string     `json:"problem,omitempty"`
}

// AuthzStep is step 6: the destination's authorization decision.
type AuthzStep struct {
	DestPod   string        `json:"destination_pod"`
	Principal string        `json:"principal,omitempty"` // the source's, as the destination sees it
	Allowed   bool          `json:"allowed"`
	Filters   []AuthzFilter `json:"filters,omitempty"`
	Policy    *ConfigRef    `json:"policy,omitempty"` // the AuthorizationPolicy that decided a denial
	Rule      int           `json:"rule"`             // its rule index, -1 when none
	Reason    string        `json:"reason"`
}

// AuthzFilter is one policy filter on the inbound chain and its decision.
type AuthzFilter struct {
	Filter  string `json:"filter"`
	Action  string `json:"action,omitempty"` // ALLOW, DENY, LOG
	Allowed bool   `json:"allowed"`
	Policy  string `json:"matched_policy,omitempty"`
	Note    string `json:"note,omitempty"`
}

// Verdict is how the request ends.
type Verdict struct {
	// Status is the HTTP status the source application gets from its
	// sidecar, 0 when the request reaches the destination application
	// (its answer is the application's).
	Status int    `json:"status"`
	Flags  string `json:"response_flags,omitempty"`
	Step   string `json:"step"` // listener, route, cluster, endpoints, mtls, authorization, or delivered
	Reason string `json:"reason"`
}
