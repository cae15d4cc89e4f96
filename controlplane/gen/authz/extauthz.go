package authz

import (
	"errors"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"strings"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	listenerv3 "github.com/envoyproxy/go-control-plane/envoy/config/listener/v3"
	rbacv3 "github.com/envoyproxy/go-control-plane/envoy/config/rbac/v3"
	extauthzv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/ext_authz/v3"
	rbachttpv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/http/rbac/v3"
	extauthznetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/ext_authz/v3"
	hcmv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/http_connection_manager/v3"
	rbacnetv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/filters/network/rbac/v3"
	matcherv3 "github.com/envoyproxy/go-control-plane/envoy/type/matcher/v3"
	typev3 "github.com/envoyproxy/go-control-plane/envoy/type/v3"
	"google.golang.org/protobuf/types/known/durationpb"
	meshv1alpha1 "istio.io/api/mesh/v1alpha1"
)

// extAuthz is one resolved extension provider.
type extAuthz struct {
	http *extauthzv3.ExtAuthz
	tcp  *extauthznetv3.ExtAuthz // nil for an HTTP provider
}

// custom builds the CUSTOM policies as Istio does: an RBAC filter whose
// shadow rules (never enforced) record in dynamic metadata which CUSTOM
// rule a request matches, then ext_authz enabled only when that metadata
// names one, so the provider is asked about matching requests only. A
// workload whose CUSTOM policies cannot be served (unknown or bad
// provider, or several providers) gets a DENY for what they match instead.
func (b *builder) custom(ps []policy) ([]*hcmv3.HttpFilter, []*listenerv3.Filter) {
	var live []policy
	var names []string
	for _, p := range ps {
		if p.dryRun {
			b.warn(p.key, "metadata.annotations["+dryRunAnnotation+"]", "", "dry-run is not applied to CUSTOM policies; the policy is left out")
			continue
		}
		live = append(live, p)
		if n := p.spec.GetProvider().GetName(); !slices.Contains(names, n) {
			names = append(names, n)
		}
	}
	if len(live) == 0 {
		return nil, nil
	}
	prefix := extAuthzPolicyPrefix + "-"
	var ext *extAuthz
	var err error
	if len(names) > 1 {
		err = fmt.Errorf("all CUSTOM policies of a workload must name the same provider, found %v", names)
	} else {
		ext, err = b.extensionProvider(names[0])
	}
	if err != nil {
		for _, p := range live {
			b.warn(p.key, "spec.provider.name", "", "%v; requests the CUSTOM policies match are denied instead", err)
		}
		httpRules := b.rules(live, rbacv3.RBAC_DENY, false, prefix)
		tcpRules := b.rules(live, rbacv3.RBAC_DENY, true, prefix)
		return []*hcmv3.HttpFilter{httpFilter(HTTPRBACFilter, &rbachttpv3.RBAC{Rules: badCustom(httpRules.rules)})},
			[]*listenerv3.Filter{networkFilter(NetworkRBACFilter, &rbacnetv3.RBAC{Rules: badCustom(tcpRules.rules), StatPrefix: tcpStatPrefix})}
	}

	httpOut := []*hcmv3.HttpFilter{
		httpFilter(HTTPRBACFilter, &rbachttpv3.RBAC{ShadowRules: b.rules(live, rbacv3.RBAC_DENY, false, prefix).rules, ShadowRulesStatPrefix: extAuthzShadowPrefix}),
		httpFilter(HTTPExtAuthzFilter, ext.http),
	}
	if ext.tcp == nil {
		for _, p := range live {
			b.warn(p.key, "spec.provider.name", "tcp", "provider %q is an HTTP ext_authz service; the policy is not enforced on TCP ports (use envoyExtAuthzGrpc for TCP)", names[0])
		}
		return httpOut, nil
	}
	return httpOut, []*listenerv3.Filter{
		networkFilter(NetworkRBACFilter, &rbacnetv3.RBAC{ShadowRules: b.rules(live, rbacv3.RBAC_DENY, true, prefix).rules,
			StatPrefix: tcpStatPrefix, ShadowRulesStatPrefix: extAuthzShadowPrefix}),
		networkFilter(NetExtAuthzFilter, ext.tcp),
	}
}

func badCustom(r *rbacv3.RBAC) *rbacv3.RBAC {
	out := &rbacv3.RBAC{Action: rbacv3.RBAC_DENY, Policies: map[string]*rbacv3.Policy{}}
	for k, v := range r.GetPolicies() {
		out.Policies[k+badCustomPolicySuffix] = v
	}
	return out
}

// enabledBy makes ext_authz run only for requests a CUSTOM rule matched:
// the shadow RBAC filter stores the matching policy's name under
// istio_ext_authz_shadow_effective_policy_id.
func enabledBy(filter string) *matcherv3.MetadataMatcher {
	return metadataPath(filter, []string{extAuthzShadowPrefix + shadowEffectivePolicyID},
		valueString(prefixMatch(extAuthzPolicyPrefix, false)))
}

func (b *builder) extensionProvider(name string) (*extAuthz, error) {
	var avail []string
	for _, p := range b.mesh.GetExtensionProviders() {
		if p.GetName() != name {
			avail = append(avail, p.GetName())
			continue
		}
		var ext *extAuthz
		var err error
		switch c := p.GetProvider().(type) {
		case *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExtAuthzHttp:
			ext, err = b.extAuthzHTTP(c.EnvoyExtAuthzHttp)
		case *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExtAuthzGrpc:
			ext, err = b.extAuthzGRPC(c.EnvoyExtAuthzGrpc)
		default:
			err = errors.New("it is not an envoyExtAuthzHttp or envoyExtAuthzGrpc provider")
		}
		if err != nil {
			return nil, fmt.Errorf("MeshConfig extensionProviders %q: %w", name, err)
		}
		return ext, nil
	}
	return nil, fmt.Errorf("extension provider %q not found in MeshConfig extensionProviders (available: %v); add it there or fix the name", name, avail)
}

func (b *builder) extAuthzHTTP(c *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationHttpProvider) (*extAuthz, error) {
	host, cluster, status, err := b.extAuthzTarget(c.GetService(), c.GetPort(), c.GetStatusOnError())
	if p := c.GetPathPrefix(); err == nil && p != "" {
		if _, perr := url.Parse(p); perr != nil || !strings.HasPrefix(p, "/") {
			err = fmt.Errorf("pathPrefix %q must be a URL path beginning with /", p)
		}
	}
	if err != nil {
		return nil, err
	}
	svc := &extauthzv3.HttpService{
		PathPrefix: c.GetPathPrefix(),
		ServerUri: &corev3.HttpUri{
			// The URI is required but unused; the cluster is what is called.
			Uri:              "http://" + host,
			HttpUpstreamType: &corev3.HttpUri_Cluster{Cluster: cluster},
			Timeout:          timeoutOrDefault(c.GetTimeout()),
		},
	}
	allowed := headerList(c.GetIncludeRequestHeadersInCheck())
	if allowed == nil {
		allowed = headerList(c.GetIncludeHeadersInCheck())
	}
	add := c.GetIncludeAdditionalHeadersInCheck()
	if len(add) > 0 {
		req := &extauthzv3.AuthorizationRequest{}
		keys := make([]string, 0, len(add))
		for k := range add {
			keys = append(keys, k)
		}
		slices.Sort(keys)
		for _, k := range keys {
			req.HeadersToAdd = append(req.HeadersToAdd, &corev3.HeaderValue{Key: k, Value: add[k]})
		}
		svc.AuthorizationRequest = req
	}
	if len(c.GetHeadersToUpstreamOnAllow()) > 0 || len(c.GetHeadersToDownstreamOnDeny()) > 0 || len(c.GetHeadersToDownstreamOnAllow()) > 0 {
		svc.AuthorizationResponse = &extauthzv3.AuthorizationResponse{
			AllowedUpstreamHeaders:        headerList(c.GetHeadersToUpstreamOnAllow()),
			AllowedClientHeaders:          headerList(c.GetHeadersToDownstreamOnDeny()),
			AllowedClientHeadersOnSuccess: headerList(c.GetHeadersToDownstreamOnAllow()),
		}
	}
	return &extAuthz{http: &extauthzv3.ExtAuthz{
		Services:              &extauthzv3.ExtAuthz_HttpService{HttpService: svc},
		AllowedHeaders:        allowed,
		StatusOnError:         status,
		FailureModeAllow:      c.GetFailOpen(),
		ClearRouteCache:       c.GetClearRouteCache(),
		TransportApiVersion:   corev3.ApiVersion_V3,
		FilterEnabledMetadata: enabledBy(HTTPRBACFilter),
		WithRequestBody:       bodySettings(c.GetIncludeRequestBodyInCheck()),
	}}, nil
}

func (b *builder) extAuthzGRPC(c *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationGrpcProvider) (*extAuthz, error) {
	_, cluster, status, err := b.extAuthzTarget(c.GetService(), c.GetPort(), c.GetStatusOnError())
	if err != nil {
		return nil, err
	}
	// "|" is not allowed in a gRPC :authority, and ext_authz would send the
	// cluster name as one, so Istio writes it with "_." instead.
	grpc := &corev3.GrpcService{
		TargetSpecifier: &corev3.GrpcService_EnvoyGrpc_{EnvoyGrpc: &corev3.GrpcService_EnvoyGrpc{
			ClusterName: cluster,
			Authority:   strings.ReplaceAll(cluster, "|", "_."),
		}},
		Timeout: timeoutOrDefault(c.GetTimeout()),
	}
	return &extAuthz{
		http: &extauthzv3.ExtAuthz{
			Services:              &extauthzv3.ExtAuthz_GrpcService{GrpcService: grpc},
			StatusOnError:         status,
			FailureModeAllow:      c.GetFailOpen(),
			ClearRouteCache:       c.GetClearRouteCache(),
			TransportApiVersion:   corev3.ApiVersion_V3,
			FilterEnabledMetadata: enabledBy(HTTPRBACFilter),
			WithRequestBody:       bodySettings(c.GetIncludeRequestBodyInCheck()),
		},
		tcp: &extauthznetv3.ExtAuthz{
			StatPrefix:            tcpStatPrefix,
			GrpcService:           grpc,
			FailureModeAllow:      c.GetFailOpen(),
			TransportApiVersion:   corev3.ApiVersion_V3,
			FilterEnabledMetadata: enabledBy(NetworkRBACFilter),
		},
	}, nil
}

// extAuthzTarget checks a provider's service ([NAMESPACE/]HOSTNAME), port
// and statusOnError, and names the outbound cluster of the service.
func (b *builder) extAuthzTarget(service string, port uint32, statusOnError string) (host, cluster string, status *typev3.HttpStatus, err error) {
	var errs []error
	if port < 1 || port > 65535 {
		errs = append(errs, fmt.Errorf("port must be in the range [1, 65535], found %d", port))
	}
	ns, host := "", service
	if n, h, ok := strings.Cut(service, "/"); ok {
		ns, host = n, h
	}
	switch {
	case host == "":
		errs = append(errs, errors.New("service must name the authorization service as [<namespace>/]<hostname>, e.g. foo/ext-authz.foo.svc.cluster.local"))
	case b.in.HasService != nil && port >= 1 && port <= 65535 && !b.in.HasService(ns, host, port):
		errs = append(errs, fmt.Errorf("service %s port %d is not in the mesh's service registry", service, port))
	}
	if statusOnError != "" {
		code, perr := strconv.Atoi(statusOnError)
		if _, known := typev3.StatusCode_name[int32(code)]; perr != nil || !known {
			errs = append(errs, fmt.Errorf("statusOnError %q is not an HTTP status code Envoy knows (e.g. 403, 503)", statusOnError))
		} else {
			status = &typev3.HttpStatus{Code: typev3.StatusCode(code)}
		}
	}
	if len(errs) > 0 {
		return "", "", nil, errors.Join(errs...)
	}
	return host, outboundCluster(host, port), status, nil
}

func timeoutOrDefault(t *durationpb.Duration) *durationpb.Duration {
	if t == nil {
		return durationpb.New(600e9)
	}
	return t
}

// headerList matches header names case-insensitively; "*x" and "x*" are
// suffix and prefix.
func headerList(hs []string) *matcherv3.ListStringMatcher {
	if len(hs) == 0 {
		return nil
	}
	l := &matcherv3.ListStringMatcher{}
	for _, h := range hs {
		switch {
		case strings.HasPrefix(h, "*"):
			l.Patterns = append(l.Patterns, suffixMatch(h[1:], true))
		case strings.HasSuffix(h, "*"):
			l.Patterns = append(l.Patterns, prefixMatch(h[:len(h)-1], true))
		default:
			l.Patterns = append(l.Patterns, exactMatch(h, true))
		}
	}
	return l
}

func bodySettings(c *meshv1alpha1.MeshConfig_ExtensionProvider_EnvoyExternalAuthorizationRequestBody) *extauthzv3.BufferSettings {
	if c == nil {
		return nil
	}
	return &extauthzv3.BufferSettings{MaxRequestBytes: c.GetMaxRequestBytes(), AllowPartialMessage: c.GetAllowPartialMessage(), PackAsBytes: c.GetPackAsBytes()}
}
