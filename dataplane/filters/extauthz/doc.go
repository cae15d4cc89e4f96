// Package extauthz is Envoy's external authorization in skiff-proxy: the
// HTTP filter envoy.filters.http.ext_authz (typed_config
// envoy.extensions.filters.http.ext_authz.v3.ExtAuthz, per-route
// ExtAuthzPerRoute) and the network filter envoy.filters.network.ext_authz
// (envoy.extensions.filters.network.ext_authz.v3.ExtAuthz). Istio compiles
// the CUSTOM action of an AuthorizationPolicy into them.
//
// The authorizer is reached through a cluster of the proxy, as Envoy's
// async clients do: an http_service gets the original request's method and
// path (path_prefix in front), its allowed headers and, with
// with_request_body, its body; a 200 allows, a 5xx or a transport failure
// is an error, anything else denies and goes back to the client with the
// authorizer's status, body and allowed headers. A grpc_service gets
// envoy.service.auth.v3.Authorization/Check over HTTP/2 with the
// AttributeContext Envoy fills; its OkHttpResponse mutates the request on
// its way upstream, its DeniedHttpResponse is the client's answer. Errors
// answer status_on_error (403) unless failure_mode_allow.
//
// filter_enabled_metadata gates the check on dynamic metadata: Istio sets
// it to the shadow policy id the RBAC filter before it writes
// ("istio_ext_authz_shadow_effective_policy_id" under
// envoy.filters.http.rbac), so only requests matching a CUSTOM policy are
// sent to the authorizer.
//
// Statistics carry Envoy's names: http.<hcm prefix>.ext_authz.[<stat_prefix>.]
// ok|denied|error|failure_mode_allowed|disabled|invalid, the same under
// cluster.<route cluster>.ext_authz., and for the network filter
// ext_authz.<stat_prefix>.total|ok|denied|error|failure_mode_allowed|
// disabled|cx_closed with the gauge active.
//
// Importing the package registers both filters (hcm.RegisterFilter and
// listener.RegisterNetworkFilter).
package extauthz
